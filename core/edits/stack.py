"""An immutable stack of edits: what a session holds, what ``Generator.start`` / ``run`` take from
it, and its files (``edits.json`` + ``edits.safetensors``, validated against the model when read)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..generators import LayerError
from ..model import generator_of
from .kinds import EDIT_KINDS, EDITS_FORMAT, EDITS_JSON, EDITS_TENSORS, EDITS_VERSION

@dataclasses.dataclass(frozen=True, eq=False)
class EditStack:
    """An immutable, ordered tuple of edits of any registered kind (``EDIT_KINDS``). Undo is
    "drop the last one"."""
    edits: tuple = ()

    def __post_init__(self):
        edits = tuple(self.edits)
        for i, e in enumerate(edits):
            if EDIT_KINDS.get(getattr(e, "kind", None)) is not type(e):
                raise TypeError(f"edit {i} is a {type(e).__name__}, not a registered edit kind "
                                f"({', '.join(k.__name__ for k in EDIT_KINDS.values())})")
        object.__setattr__(self, "edits", edits)

    # ------------------------------------------------------------- building
    def push(self, *edits) -> "EditStack":
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
    def feature_edits(self) -> tuple:
        """The edits that change a layer's output features (UnitEdits, ...), in order."""
        return tuple(e for e in self.edits if e.acts_on == "features")

    @property
    def weight_edits(self) -> tuple:
        """The edits that add a ΔW to a layer's main weight (WeightEdits, ...), in order."""
        return tuple(e for e in self.edits if e.acts_on == "weights")

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
        """The ``edit(name, x)`` callable for ``Generator.run`` applying the feature edits of each
        layer in order, or None when the stack has none."""
        by_layer: dict[str, list] = {}
        for e in self.feature_edits:
            if not e.is_noop:
                by_layer.setdefault(e.layer, []).append(e)
        if not by_layer:
            return None

        def edit(name: str, x: torch.Tensor) -> torch.Tensor:
            for e in by_layer.get(name, ()):
                x = e.apply(x)
            return x
        return edit

    def first_feature_layer(self, model) -> int | None:
        """Index of the first layer any (non-no-op) feature edit touches, or None."""
        g = generator_of(model)
        idx = [g.layer_index(e.layer) for e in self.feature_edits if not e.is_noop]
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
            item, ts = e.to_item(f"edit{i}")
            tensors.update(ts)
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
                if kind not in EDIT_KINDS:
                    raise ValueError(f"unknown edit type {kind!r} (expected one of {', '.join(EDIT_KINDS)})")
                e = EDIT_KINDS[kind].from_item(layer, item, tensor)
                e.validate(g)
            except LayerError as err:
                raise LayerError(f"{where}: {err}") from None
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            edits.append(e)
        return cls(tuple(edits))
