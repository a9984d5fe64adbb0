"""The edit types: :class:`UnitEdit` (features of some units, inside a mask) and
:class:`WeightEdit` (a low-rank or dense ΔW of a layer's main weight), and the helpers they share."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import weakref
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..generators import Generator
from ..model import generator_of

EDITS_JSON = "edits.json"


EDITS_TENSORS = "edits.safetensors"


EDITS_FORMAT = "painting-with-neurons-edits"


EDITS_VERSION = 1


def _tensor(value, field: str, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{what}: {field} is not a tensor ({e})") from None
    if t.dtype == torch.bool:
        t = t.float()
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.uint8, torch.int16,
                                                 torch.int32, torch.int64)):
        raise ValueError(f"{what}: {field} must be real numbers, got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.float32).clone().contiguous()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what}: {field} holds NaN or inf values")
    return t


def resize_mask(mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``[H, W]`` float mask -> ``[h, w]`` by adaptive max pooling (identity at the same size)."""
    hw = (int(hw[0]), int(hw[1]))
    if tuple(mask.shape) == hw:
        return mask
    return F.adaptive_max_pool2d(mask[None, None].float(), hw)[0, 0]


_SHAPES: "weakref.WeakKeyDictionary[Generator, dict]" = weakref.WeakKeyDictionary()


_SHAPES_LOCK = threading.Lock()


def layer_shape(model, layer: str) -> tuple[int, int, int]:
    """``(channels, h, w)`` of a layer's output features (measured once per generator with one
    forward pass when the family does not report its resolution)."""
    g = generator_of(model)
    g.check_layer(layer)
    with _SHAPES_LOCK:
        table = _SHAPES.get(g)
    if table is None:
        from ..bundle import layer_table
        table = {name: (c, r, r) for name, c, r in layer_table(g)}
        with _SHAPES_LOCK:
            _SHAPES[g] = table
    return table[layer]


def _describe(kind: str, edit) -> str:
    label = f" {edit.label!r}" if getattr(edit, "label", "") else ""
    return f"{kind} edit{label} at {edit.layer!r}"


def _fingerprint(meta, tensors: Sequence[torch.Tensor | None]) -> str:
    h = hashlib.sha1(json.dumps(meta, sort_keys=True).encode())
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


EDIT_KINDS: dict[str, type] = {}


def register_edit_kind(cls: type) -> type:
    """Make an edit type known to stacks and edit files under ``cls.kind``.

    An edit kind is a frozen value object with ``layer``, ``label``, ``validate(model)``,
    ``meta()`` (JSON, ``"type": kind``), ``fingerprint()``, ``to_item(prefix) -> (item,
    tensors)`` and ``from_item(layer, item, tensor)`` for its files, and either
    ``acts_on = "features"`` with ``apply(x)`` and ``is_noop`` (it changes a layer's output) or
    ``acts_on = "weights"`` with ``delta()`` (a ΔW of the layer's main weight)."""
    EDIT_KINDS[cls.kind] = cls
    return cls


@register_edit_kind
@dataclasses.dataclass(frozen=True, eq=False)
class UnitEdit:
    """Set ``units`` of ``layer`` to ``values`` (None = 0, i.e. remove) with opacity
    ``alpha * mask`` (mask None = everywhere). See the module docstring for the formula."""
    layer: str
    units: tuple[int, ...]
    values: tuple[float, ...] | None = None
    mask: torch.Tensor | None = None
    alpha: float = 1.0
    label: str = ""
    kind: ClassVar[str] = "unit"
    acts_on: ClassVar[str] = "features"

    def __post_init__(self):
        what = _describe("unit", self)
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"{what}: layer must be a layer name (a string)")
        units = self.units
        if isinstance(units, torch.Tensor):
            units = units.tolist()
        try:
            units = tuple(units)
        except TypeError:
            raise ValueError(f"{what}: units must be a list of unit numbers, got {units!r}") from None
        bad = [u for u in units if isinstance(u, bool) or not isinstance(u, int) or u < 0]
        if bad:
            raise ValueError(f"{what}: units must be non-negative integers, got {bad[:5]}")
        if len(set(units)) != len(units):
            dup = sorted({u for u in units if units.count(u) > 1})
            raise ValueError(f"{what}: units listed twice: {dup}")
        object.__setattr__(self, "units", tuple(int(u) for u in units))
        values = self.values
        if values is not None:
            if isinstance(values, torch.Tensor):
                values = values.tolist()
            if isinstance(values, (int, float)) and not isinstance(values, bool):
                values = [float(values)] * len(units)
            try:
                values = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise ValueError(f"{what}: values must be numbers, got {self.values!r}") from None
            if len(values) != len(units):
                raise ValueError(f"{what}: {len(values)} values for {len(units)} units")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{what}: values hold NaN or inf")
            object.__setattr__(self, "values", values)
        if self.mask is not None:
            m = _tensor(self.mask, "mask", what)
            if m.dim() != 2 or m.numel() == 0:
                raise ValueError(f"{what}: mask must be [h, w], got shape {list(m.shape)}")
            if bool((m < 0).any()) or bool((m > 1).any()):
                raise ValueError(f"{what}: mask values must lie in [0, 1] "
                                 f"(got {m.min().item():.3g}..{m.max().item():.3g})")
            object.__setattr__(self, "mask", m)
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
                or not 0 <= alpha <= 1:
            raise ValueError(f"{what}: alpha must be a number in [0, 1], got {alpha!r}")
        object.__setattr__(self, "alpha", float(alpha))
        object.__setattr__(self, "label", str(self.label))

    @property
    def is_noop(self) -> bool:
        """True when the edit cannot change anything (no units, alpha 0 or an all-zero mask)."""
        return (not self.units or self.alpha == 0
                or (self.mask is not None and not bool((self.mask > 0).any())))

    def validate(self, model) -> None:
        """Raise LayerError / ValueError unless the edit fits ``model``."""
        g = generator_of(model)
        g.check_layer(self.layer)
        channels = g.layer_channels(self.layer)
        bad = [u for u in self.units if u >= channels]
        if bad:
            raise ValueError(f"{_describe('unit', self)}: units {bad[:5]} out of "
                             f"range; {self.layer} has {channels} units (0..{channels - 1})")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The edited features (a new tensor; ``x`` is not modified)."""
        if self.is_noop:
            return x
        idx = torch.tensor(self.units, device=x.device, dtype=torch.long)
        if self.mask is None:
            a = torch.tensor(self.alpha, dtype=x.dtype, device=x.device)
        else:
            a = (self.alpha * resize_mask(self.mask, x.shape[-2:])).to(x.device, x.dtype)
        if self.values is None:
            r = torch.zeros((), dtype=x.dtype, device=x.device)
        else:
            r = torch.tensor(self.values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        out = x.clone()
        out[:, idx] = x[:, idx] * (1 - a) + r * a
        return out

    def meta(self) -> dict:
        return {"type": "unit", "layer": self.layer, "units": list(self.units),
                "values": None if self.values is None else list(self.values),
                "alpha": self.alpha, "label": self.label}

    def to_item(self, prefix: str) -> tuple[dict, dict]:
        item = {**self.meta(), "mask": None if self.mask is None else f"{prefix}.mask"}
        return item, ({} if self.mask is None else {f"{prefix}.mask": self.mask})

    @classmethod
    def from_item(cls, layer: str, item: dict, tensor) -> "UnitEdit":
        units = item.get("units")
        if not isinstance(units, list):
            raise ValueError("'units' must be a list of unit numbers")
        return cls(layer, units, item.get("values"), tensor("mask"), item.get("alpha", 1.0),
                   item.get("label", ""))

    def fingerprint(self) -> str:
        fp = self.__dict__.get("_fp")
        if fp is None:
            fp = _fingerprint(self.meta(), [self.mask])
            object.__setattr__(self, "_fp", fp)
        return fp


@register_edit_kind
@dataclasses.dataclass(frozen=True, eq=False)
class WeightEdit:
    """``W + ΔW`` on ``layer``'s main conv weight; ΔW low-rank (``lam``, ``dirs``) or dense
    (``delta``, via :meth:`full`). See the module docstring for the shapes."""
    layer: str
    lam: torch.Tensor | None = None
    dirs: torch.Tensor | None = None
    label: str = ""
    dense: torch.Tensor | None = None
    kind: ClassVar[str] = "weight"
    acts_on: ClassVar[str] = "weights"

    def __post_init__(self):
        what = _describe("weight", self)
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"{what}: layer must be a layer name (a string)")
        if self.dense is not None:
            if self.lam is not None or self.dirs is not None:
                raise ValueError(f"{what}: give either lam and dirs or a dense delta, not both")
            d = _tensor(self.dense, "delta", what)
            if d.dim() < 3:
                raise ValueError(f"{what}: delta must be shaped like the conv weight, got "
                                 f"{list(d.shape)}")
            object.__setattr__(self, "dense", d)
        else:
            if self.lam is None or self.dirs is None:
                raise ValueError(f"{what}: needs both lam and dirs (or use WeightEdit.full)")
            lam = _tensor(self.lam, "lam", what)
            dirs = _tensor(self.dirs, "dirs", what)
            if dirs.dim() == 1:
                dirs = dirs[None]
            if dirs.dim() != 2 or dirs.shape[0] == 0:
                raise ValueError(f"{what}: dirs must be [rank, C_in], got {list(dirs.shape)}")
            if lam.dim() < 3 or lam.shape[-3] != dirs.shape[0]:
                raise ValueError(f"{what}: lam must be shaped like the weight with C_in replaced "
                                 f"by rank {dirs.shape[0]} (axis -3), got lam {list(lam.shape)} "
                                 f"and dirs {list(dirs.shape)}")
            object.__setattr__(self, "lam", lam)
            object.__setattr__(self, "dirs", dirs)
        object.__setattr__(self, "label", str(self.label))

    @classmethod
    def full(cls, layer: str, delta, label: str = "") -> "WeightEdit":
        """A dense ΔW (same shape as the layer's main weight)."""
        return cls(layer, label=label, dense=delta)

    @property
    def rank(self) -> int | None:
        return None if self.dirs is None else int(self.dirs.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the dense ΔW."""
        if self.dense is not None:
            return tuple(self.dense.shape)
        s = list(self.lam.shape)
        s[-3] = self.dirs.shape[1]
        return tuple(s)

    def delta(self) -> torch.Tensor:
        """The dense ΔW (float32, CPU)."""
        if self.dense is not None:
            return self.dense
        return torch.einsum("...ryx,ri->...iyx", self.lam, self.dirs).contiguous()

    def validate(self, model) -> None:
        g = generator_of(model)
        weight = g.main_weight(self.layer)      # LayerError for unknown layers / no weight
        if tuple(weight.shape) != self.shape:
            if self.dense is not None:
                raise ValueError(f"{_describe('weight', self)}: delta has shape "
                                 f"{list(self.shape)}, the weight has {list(weight.shape)}")
            want_lam = list(weight.shape)
            want_lam[-3] = self.rank
            raise ValueError(f"{_describe('weight', self)}: lam {list(self.lam.shape)}"
                             f" and dirs {list(self.dirs.shape)} give ΔW {list(self.shape)}, the "
                             f"weight is {list(weight.shape)} (expected lam {want_lam} and dirs "
                             f"[{self.rank}, {weight.shape[-3]}])")

    def meta(self) -> dict:
        return {"type": "weight", "layer": self.layer, "label": self.label,
                "form": "full" if self.dense is not None else "lowrank"}

    def to_item(self, prefix: str) -> tuple[dict, dict]:
        if self.dense is not None:
            return {**self.meta(), "delta": f"{prefix}.delta"}, {f"{prefix}.delta": self.dense}
        item = {**self.meta(), "lam": f"{prefix}.lam", "dirs": f"{prefix}.dirs"}
        return item, {item["lam"]: self.lam, item["dirs"]: self.dirs}

    @classmethod
    def from_item(cls, layer: str, item: dict, tensor) -> "WeightEdit":
        if item.get("delta") is not None:
            return cls.full(layer, tensor("delta"), item.get("label", ""))
        return cls(layer, tensor("lam"), tensor("dirs"), item.get("label", ""))

    def fingerprint(self) -> str:
        fp = self.__dict__.get("_fp")
        if fp is None:
            fp = _fingerprint(self.meta(), [self.lam, self.dirs, self.dense])
            object.__setattr__(self, "_fp", fp)
        return fp


@register_edit_kind
@dataclasses.dataclass(frozen=True, eq=False)
class ResidualEdit:
    """Add ``residual`` ``[C, h, w]`` to ``layer``'s output features: what an inverted photo
    needs beyond its latent (``core.photo.invert``). Edits after it at the same layer (paint
    strokes) land on top of it."""
    layer: str
    residual: torch.Tensor
    label: str = ""
    kind: ClassVar[str] = "residual"
    acts_on: ClassVar[str] = "features"

    def __post_init__(self):
        what = _describe("residual", self)
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"{what}: layer must be a layer name (a string)")
        r = _tensor(self.residual, "residual", what)
        if r.dim() == 4 and r.shape[0] == 1:
            r = r[0]
        if r.dim() != 3:
            raise ValueError(f"{what}: residual must be [C, h, w], got {list(r.shape)}")
        object.__setattr__(self, "residual", r)
        object.__setattr__(self, "label", str(self.label))

    @property
    def is_noop(self) -> bool:
        return not bool(self.residual.any())

    def validate(self, model) -> None:
        shape = layer_shape(model, self.layer)
        if tuple(self.residual.shape) != shape:
            raise ValueError(f"{_describe('residual', self)}: residual is {list(self.residual.shape)} "
                             f"but {self.layer} outputs {list(shape)}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual.to(x.device, x.dtype)

    def meta(self) -> dict:
        return {"type": self.kind, "layer": self.layer, "label": self.label}

    def fingerprint(self) -> str:
        fp = self.__dict__.get("_fp")
        if fp is None:
            fp = _fingerprint(self.meta(), [self.residual])
            object.__setattr__(self, "_fp", fp)
        return fp

    def to_item(self, prefix: str) -> tuple[dict, dict]:
        return {**self.meta(), "residual": f"{prefix}.residual"}, {f"{prefix}.residual": self.residual}

    @classmethod
    def from_item(cls, layer: str, item: dict, tensor) -> "ResidualEdit":
        return cls(layer, tensor("residual"), item.get("label", ""))

