"""Edits: the one way anything changes what a generator draws (ARCHITECTURE.md, "The flow of an edit").

An edit is a small value object applied *on top of* a read-only base generator; nothing here ever
writes into the shared model, so sessions that share one model are isolated by construction.

- :class:`UnitEdit` — replace some units' features after a layer, inside an optional spatial mask::

      out[:, u] = x[:, u] * (1 - a) + r_u * a,    a = alpha * mask     (other units untouched)

  ``r_u`` is the unit's value (0 = remove, e.g. its 0.99 quantile = draw). Successive UnitEdits on
  one layer are applied in order, which is exactly alpha-over compositing of the strokes.
- :class:`WeightEdit` — ``W + ΔW`` for a layer's main conv weight. ΔW is stored low-rank along
  the *input-channel* axis (the key space of rewriting): ``dirs [rank, C_in]`` and ``lam`` shaped
  like the weight with C_in replaced by rank, ``ΔW[..., o, i, y, x] = Σ_r lam[..., o, r, y, x] *
  dirs[r, i]`` (ProGAN weight ``[C_out, C_in, k, k]``; StyleGAN2 ``[1, C_out, C_in, 3, 3]``), or
  dense with :meth:`WeightEdit.full` (image-specific adaptation).
- :class:`EditStack` — an immutable ordered tuple of edits: ``push`` / ``undo`` / ``clear`` return
  new stacks; ``weight_deltas()`` and ``feature_edit()`` give what ``Generator.start`` /
  ``Generator.run`` take; ``to_files`` / ``from_files`` write ``edits.json`` + ``edits.safetensors``
  (never pickle) and validate everything against the model when reading.
- :class:`Renderer` — renders ``(z, stack)`` for one shared model, caching the generator state just
  before the first layer a stack's unit edits touch, so a paint stroke at layer L re-runs only the
  layers from L on. Thread-safe, bounded LRU; edits are arguments, never stored on the model.

Masks: a UnitEdit's mask is ``[h, w]`` in [0, 1] and is meant to be at the layer's feature grid.
A mask of any other size is **resized** when applied (adaptive max pooling, the GANPaint default:
a feature cell is on if any pixel of its region is on; up-sizing repeats cells), so a brush mask at
image resolution can be passed straight in. Tensors given to edits are copied (float32, CPU);
treat edits as immutable.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import threading
import weakref
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .generators import Generator, LayerError, LayerState
from .model import generator_of, sampling_options

EDITS_JSON = "edits.json"
EDITS_TENSORS = "edits.safetensors"
EDITS_FORMAT = "painting-with-neurons-edits"
EDITS_VERSION = 1


# --------------------------------------------------------------------------------- helpers


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
        from .bundle import layer_table
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


# --------------------------------------------------------------------------------- unit edits
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

    def fingerprint(self) -> str:
        fp = self.__dict__.get("_fp")
        if fp is None:
            fp = _fingerprint(self.meta(), [self.mask])
            object.__setattr__(self, "_fp", fp)
        return fp


# --------------------------------------------------------------------------------- weight edits
@dataclasses.dataclass(frozen=True, eq=False)
class WeightEdit:
    """``W + ΔW`` on ``layer``'s main conv weight; ΔW low-rank (``lam``, ``dirs``) or dense
    (``delta``, via :meth:`full`). See the module docstring for the shapes."""
    layer: str
    lam: torch.Tensor | None = None
    dirs: torch.Tensor | None = None
    label: str = ""
    dense: torch.Tensor | None = None

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

    def fingerprint(self) -> str:
        fp = self.__dict__.get("_fp")
        if fp is None:
            fp = _fingerprint(self.meta(), [self.lam, self.dirs, self.dense])
            object.__setattr__(self, "_fp", fp)
        return fp


Edit = UnitEdit | WeightEdit


# --------------------------------------------------------------------------------- the stack
@dataclasses.dataclass(frozen=True, eq=False)
class EditStack:
    """An immutable, ordered tuple of edits. Undo is "drop the last one"."""
    edits: tuple = ()

    def __post_init__(self):
        edits = tuple(self.edits)
        for i, e in enumerate(edits):
            if not isinstance(e, (UnitEdit, WeightEdit)):
                raise TypeError(f"edit {i} is a {type(e).__name__}, not a UnitEdit or WeightEdit")
        object.__setattr__(self, "edits", edits)

    # ------------------------------------------------------------- building
    def push(self, *edits: Edit) -> "EditStack":
        return EditStack(self.edits + tuple(edits))

    def undo(self, n: int = 1) -> "EditStack":
        return EditStack(self.edits[:max(0, len(self.edits) - int(n))])

    def clear(self) -> "EditStack":
        return EditStack(())

    def __len__(self):
        return len(self.edits)

    def __iter__(self):
        return iter(self.edits)

    def __getitem__(self, i):
        return self.edits[i]

    def __bool__(self):
        return bool(self.edits)

    def __repr__(self):
        parts = [f"{type(e).__name__}({e.layer!r}{', ' + repr(e.label) if e.label else ''})"
                 for e in self.edits]
        return f"EditStack([{', '.join(parts)}])"

    @property
    def unit_edits(self) -> tuple[UnitEdit, ...]:
        return tuple(e for e in self.edits if isinstance(e, UnitEdit))

    @property
    def weight_edits(self) -> tuple[WeightEdit, ...]:
        return tuple(e for e in self.edits if isinstance(e, WeightEdit))

    def layers(self) -> list[str]:
        """Layers touched by any edit (first appearance order)."""
        return list(dict.fromkeys(e.layer for e in self.edits))

    # ------------------------------------------------------------- using
    def validate(self, model) -> "EditStack":
        """Raise LayerError / ValueError (naming the edit) unless every edit fits ``model``."""
        for i, e in enumerate(self.edits):
            try:
                e.validate(model)
            except LayerError as err:
                raise LayerError(f"edit {i} ({type(e).__name__}): {err}") from None
            except ValueError as err:
                raise ValueError(f"edit {i}: {err}") from None
        return self

    def weight_deltas(self, model=None) -> dict[str, torch.Tensor]:
        """``{layer: ΔW}`` summing the WeightEdits per layer (what ``Generator.start`` takes). With
        ``model`` the edits are validated and the deltas moved to the weights' device/dtype."""
        key = None
        if model is not None:
            g = generator_of(model)
            self.validate(g)
            key = id(g)
        memo = self.__dict__.setdefault("_deltas", {})
        if key in memo:
            return dict(memo[key])
        out: dict[str, torch.Tensor] = {}
        for e in self.weight_edits:
            d = e.delta()
            out[e.layer] = d if e.layer not in out else out[e.layer] + d
        if model is not None:
            out = {k: v.to(g.main_weight(k).device, g.main_weight(k).dtype) for k, v in out.items()}
        memo[key] = out
        return dict(out)

    def feature_edit(self):
        """The ``edit(name, x)`` callable for ``Generator.run`` applying the UnitEdits of each
        layer in order, or None when the stack has no UnitEdits."""
        by_layer: dict[str, list[UnitEdit]] = {}
        for e in self.unit_edits:
            if not e.is_noop:
                by_layer.setdefault(e.layer, []).append(e)
        if not by_layer:
            return None

        def edit(name: str, x: torch.Tensor) -> torch.Tensor:
            for e in by_layer.get(name, ()):
                x = e.apply(x)
            return x
        return edit

    def first_unit_layer(self, model) -> int | None:
        """Index of the first layer any (non-no-op) UnitEdit touches, or None."""
        g = generator_of(model)
        idx = [g.layer_index(e.layer) for e in self.unit_edits if not e.is_noop]
        return min(idx) if idx else None

    # ------------------------------------------------------------- files
    def to_files(self, folder, model=None) -> Path:
        """Write ``edits.json`` + ``edits.safetensors`` into ``folder`` (created); returns it.
        ``model`` (optional) records the base model's name and architecture for reference."""
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors, items = {}, []
        for i, e in enumerate(self.edits):
            item = e.meta()
            if isinstance(e, UnitEdit):
                item["mask"] = None
                if e.mask is not None:
                    item["mask"] = tensors_name = f"edit{i}.mask"
                    tensors[tensors_name] = e.mask
            elif e.dense is not None:
                item["delta"] = f"edit{i}.delta"
                tensors[item["delta"]] = e.dense
            else:
                item["lam"], item["dirs"] = f"edit{i}.lam", f"edit{i}.dirs"
                tensors[item["lam"]], tensors[item["dirs"]] = e.lam, e.dirs
            items.append(item)
        doc = {"format": EDITS_FORMAT, "version": EDITS_VERSION, "edits": items}
        if model is not None:
            g = generator_of(model)
            doc["model"] = {"architecture": g.family, "name": getattr(model, "name", None)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / EDITS_TENSORS),
                  metadata={"format": EDITS_FORMAT})
        (folder / EDITS_JSON).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def from_files(cls, folder, model) -> "EditStack":
        """Read a stack written by :meth:`to_files` and validate every edit against ``model``.

        Raises LayerError (unknown layer; the message lists the valid ones) or ValueError naming
        the file, the edit and the field (bad JSON, missing tensors, units out of range, wrong
        shapes, NaN/inf)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        folder = Path(folder)
        jpath, tpath = folder / EDITS_JSON, folder / EDITS_TENSORS
        if not jpath.is_file():
            raise FileNotFoundError(f"{jpath}: no such file (an edit folder holds {EDITS_JSON} "
                                    f"and {EDITS_TENSORS})")
        try:
            doc = json.loads(jpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{jpath}: malformed JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != EDITS_FORMAT:
            raise ValueError(f"{jpath}: not an edits file (format must be {EDITS_FORMAT!r})")
        if not isinstance(doc.get("version"), int) or doc["version"] > EDITS_VERSION:
            raise ValueError(f"{jpath}: unsupported edits version {doc.get('version')!r}")
        items = doc.get("edits")
        if not isinstance(items, list):
            raise ValueError(f"{jpath}: 'edits' must be a list")
        g = generator_of(model)
        arch = (doc.get("model") or {}).get("architecture")
        if arch is not None and arch != g.family:
            raise ValueError(f"{jpath}: these edits were made for a {arch} model, this model is "
                             f"{g.family}")
        tensors = {}
        if tpath.is_file():
            try:
                tensors = load_file(str(tpath))
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise ValueError(f"{tpath}: not a readable safetensors file ({e})") from None
        elif any(isinstance(it, dict) and any(it.get(k) for k in ("mask", "lam", "dirs", "delta"))
                 for it in items):
            raise ValueError(f"{tpath}: missing; {jpath} refers to tensors")

        edits = []
        for i, item in enumerate(items):
            where = f"{jpath}: edit {i}"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: must be an object")
            kind, layer = item.get("type"), item.get("layer")
            where += f" ({kind} at {layer!r})"

            def tensor(field):
                name = item.get(field)
                if name is None:
                    return None
                if not isinstance(name, str) or name not in tensors:
                    raise ValueError(f"{where}: {field} tensor {name!r} is not in {tpath.name}")
                t = tensors[name]
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{where}: {field} holds NaN or inf values")
                return t

            if not isinstance(layer, str):
                raise ValueError(f"{where}: 'layer' must be a layer name")
            try:
                g.check_layer(layer)
            except LayerError as e:
                raise LayerError(f"{where}: {e}") from None
            try:
                if kind == "unit":
                    units = item.get("units")
                    if not isinstance(units, list):
                        raise ValueError("'units' must be a list of unit numbers")
                    e = UnitEdit(layer, units, item.get("values"), tensor("mask"),
                                 item.get("alpha", 1.0), item.get("label", ""))
                elif kind == "weight":
                    if item.get("delta") is not None:
                        e = WeightEdit.full(layer, tensor("delta"), item.get("label", ""))
                    else:
                        e = WeightEdit(layer, tensor("lam"), tensor("dirs"), item.get("label", ""))
                else:
                    raise ValueError(f"unknown edit type {kind!r} (expected 'unit' or 'weight')")
                e.validate(g)
            except LayerError as err:
                raise LayerError(f"{where}: {err}") from None
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            edits.append(e)
        return cls(tuple(edits))


# --------------------------------------------------------------------------------- rendering
def _digest(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    return hashlib.sha1(str((tuple(t.shape), str(t.dtype))).encode()
                        + t.numpy().tobytes()).hexdigest()


def _noise_key(noise):
    if isinstance(noise, (str, int)) or noise is None:
        return repr(noise)
    if isinstance(noise, torch.Tensor):
        return _digest(noise)
    if isinstance(noise, (list, tuple)):
        return tuple(_noise_key(n) for n in noise)
    return repr(noise)


class Renderer:
    """Renders images of one shared model under edit stacks, caching intermediate states.

    ``render(z, stack)`` runs ``start -> layers -> finish`` with the stack's weight deltas and unit
    edits, and gives bit-identical images to a full ``Generator.generate`` call. The state just
    before layer ``p`` is cached, where ``p`` is the first layer a (non-empty) UnitEdit touches, or
    ``cache_layer`` when that comes earlier (set it to the painting layer so that the first stroke
    on a freshly shown image already hits the cache), or the end when there is neither. The key is
    (z, truncation, noise, p, the WeightEdits on layers before p), so a paint stroke at layer L
    re-runs only L and later layers. The LRU holds ``max_entries`` states; a lock guards it, so one
    Renderer can serve many sessions (each passes its own stack; nothing is stored on the model).
    """

    def __init__(self, model, max_entries: int = 64, cache_layer: str | None = None,
                 local: bool = False):
        self.generator = generator_of(model)
        # local=True: strokes with masks on one layer re-render only the window they can affect
        # (generators with ``rerun_region``: ProGAN); equal to a full run up to float rounding.
        self.local = bool(local) and hasattr(self.generator, "rerun_region")
        self._traces: "collections.OrderedDict[tuple, dict]" = collections.OrderedDict()
        self.max_traces = 8
        self.defaults = dict(getattr(model, "defaults", None) or {"truncation": 1.0,
                                                                  "noise": "buffers"})
        self.max_entries = int(max_entries)
        self.cache_layer = None if cache_layer is None else self.generator.check_layer(cache_layer)
        self._cache: "collections.OrderedDict[tuple, LayerState]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._traces.clear()

    def cache_info(self) -> dict:
        with self._lock:
            return {"entries": len(self._cache), "max_entries": self.max_entries,
                    "hits": self.hits, "misses": self.misses}

    def _cache_point(self, stack: EditStack) -> int:
        g = self.generator
        p = len(g.layers)
        first = stack.first_unit_layer(g)
        if first is not None:
            p = min(p, first)
        if self.cache_layer is not None:
            p = min(p, g.layer_index(self.cache_layer))
        return p

    def prefix_state(self, z, stack: EditStack | None = None, truncation=None, noise=None,
                     point: int | None = None) -> tuple[LayerState, int]:
        """(a private copy of the state after ``layers[:point]``, point); cached."""
        g = self.generator
        stack = stack or EditStack()
        t, n = sampling_options(self, truncation, noise)
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() == 1:
            z = z[None]
        z = z.reshape(z.shape[0], -1).to(self.device)
        deltas = stack.weight_deltas(g)           # validates the stack against the model
        p = self._cache_point(stack) if point is None else int(point)
        early = tuple(e.fingerprint() for e in stack.weight_edits
                      if g.layer_index(e.layer) < p)
        key = (_digest(z), t, _noise_key(n), p, early)
        with self._lock:
            state = self._cache.get(key)
            if state is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
        if state is None:
            with torch.no_grad():
                state = g.start(z, truncation=t, noise=n, weight_deltas=deltas or None)
                if p > 0:
                    state = g.run(state, stop=g.layers[p - 1])
            stored = state.clone()
            stored.weight_deltas = None          # don't keep another session's deltas alive
            with self._lock:
                self._cache[key] = stored
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        state = state.clone()
        state.weight_deltas = deltas or None
        return state, p

    @torch.no_grad()
    def render(self, z, stack: EditStack | None = None, truncation: float | None = None,
               noise=None) -> torch.Tensor:
        """Images ``[N,3,H,W]`` (on the model's device) of latents ``z`` under ``stack``.
        ``truncation``/``noise`` default to the bundle's defaults."""
        stack = stack or EditStack()
        if self.local:
            box = self._local_box(stack)
            if box is not None:
                return self._render_local(z, stack, truncation, noise, *box)
        state, _ = self.prefix_state(z, stack, truncation, noise)
        state = self.generator.run(state, edit=stack.feature_edit())
        return self.generator.finish(state)

    def _local_box(self, stack: EditStack):
        """(layer, box) when every unit edit is a masked edit on one layer, else None."""
        edits = [e for e in stack.unit_edits if not e.is_noop]
        if not edits or len({e.layer for e in edits}) != 1 or any(e.mask is None for e in edits):
            return None
        layer = edits[0].layer
        h, w = layer_shape(self.generator, layer)[1:]
        union = torch.zeros(h, w, dtype=torch.bool)
        for e in edits:
            union |= resize_mask(e.mask, (h, w)) > 0
        rows, cols = union.any(1).nonzero(), union.any(0).nonzero()
        if len(rows) == 0:
            return None
        return layer, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)

    def _render_local(self, z, stack, truncation, noise, layer, box):
        g = self.generator
        point = g.layer_index(layer)
        state, _ = self.prefix_state(z, stack, truncation, noise, point=point)
        deltas = state.weight_deltas
        key = (_digest(torch.as_tensor(z, dtype=torch.float32)), truncation, _noise_key(noise), layer,
               tuple(e.fingerprint() for e in stack.weight_edits))
        with self._lock:
            trace = self._traces.get(key)
            if trace is not None:
                self._traces.move_to_end(key)
        if trace is None:
            trace = g.trace_after(state.clone())
            with self._lock:
                self._traces[key] = trace
                while len(self._traces) > self.max_traces:
                    self._traces.popitem(last=False)
        x = trace[layer]
        for e in stack.unit_edits:
            x = e.apply(x)
        return g.rerun_region(trace, layer, x, box, weight_deltas=deltas)

    def render_numbers(self, image_numbers, stack: EditStack | None = None,
                       truncation: float | None = None, noise=None, seed: int = 1,
                       batch_size: int = 16) -> torch.Tensor:
        """Images of image numbers (a list or ``"0-7"``), in batches (each cached on its own);
        returned on the CPU."""
        from .images import parse_image_numbers
        z = self.generator.sample_z(parse_image_numbers(image_numbers), seed)
        bs = max(1, int(batch_size))
        return torch.cat([self.render(z[i:i + bs], stack, truncation, noise).cpu()
                          for i in range(0, len(z), bs)])


__all__ = ["UnitEdit", "WeightEdit", "EditStack", "Renderer", "layer_shape", "resize_mask",
           "EDITS_JSON", "EDITS_TENSORS"]
