"""Rule files: the original rewriting app's saved edits, plus our optional settings.

Format (davidbau/rewriting ``rewriteapp.py`` Save/Load; 60+ shipped mask files use it)::

    {"key":    [[image_number, "data:image/png;base64,..."], ...],   # context (optional)
     "object": [image_number, "data:image/png;base64,..."],          # what to copy
     "paste":  [image_number, "data:image/png;base64,..."],          # where to paste it
     "query":  [image_number, "data:image/png;base64,..."],          # optional, UI only
     "model": "church", "layer": "layer8", "rank": 1,                 # ours, optional
     "erase": true}                    # ours, optional: erase the context instead of copy/paste

Masks are 256x256 PNGs; the weight of a pixel is its red channel / 255 after ``convert("RGB")``
(the original ignores alpha). Decoding is defensive: only ``data:image/png;base64`` URLs, at most
``MAX_DATA_URL_CHARS`` characters, the PNG header's size checked (``MAX_MASK_SIDE``) before any
pixel is decoded. Unknown fields are ignored on reading and kept in ``Rule.extra`` (written back).
A :class:`Rule` holds masks as float32 numpy arrays in [0, 1] at the file's resolution;
:func:`apply_rule` resizes them to the model's resolution (PIL bilinear, like the original's
resize of the PNG) and runs the rewrite.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .model import generator_of

MASK_SIZE = 256                       # the original app's canvas size
MAX_DATA_URL_CHARS = 4_000_000        # a 256x256 RGBA PNG is at most ~350 kB (base64 ~470 kB)
MAX_MASK_SIDE = 4096
MAX_RULE_BYTES = 64_000_000
MAX_CONTEXTS = 1000
_PREFIX = "data:image/png;base64,"
_KNOWN = ("key", "object", "paste", "query", "model", "layer", "rank", "erase")


class RuleError(ValueError):
    """A rule file or rule request that cannot be used; the message names the field and problem."""


Entry = tuple[int, np.ndarray]


@dataclasses.dataclass
class Rule:
    """A rewriting request. ``key``: context (image number, mask) pairs; ``object``/``paste``: the
    copy and paste (image number, mask); ``query``: the UI's "Match Sel" selection; ``model`` /
    ``layer`` / ``rank``: settings a preset carries (None = not stated); ``erase``: the rule
    removes what its context shows (:func:`core.rewrite.erase`) instead of copy-paste;
    ``extra``: unknown fields, kept verbatim."""
    key: list[Entry] = dataclasses.field(default_factory=list)
    object: Entry | None = None
    paste: Entry | None = None
    query: Entry | None = None
    model: str | None = None
    layer: str | None = None
    rank: int | None = None
    erase: bool = False
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def contexts(self) -> list[Entry]:
        """The context used for the key direction: ``key``, or the paste selection when there is
        no key (as the original)."""
        if self.key:
            return list(self.key)
        return [self.paste] if self.paste is not None else []


# ------------------------------------------------------------------------------- masks <-> PNG
def decode_mask(data_url: str, where: str = "mask") -> np.ndarray:
    """A ``data:image/png;base64,...`` URL -> float32 [H, W] in [0, 1] (red channel / 255)."""
    if not isinstance(data_url, str):
        raise RuleError(f"{where}: expected a PNG data URL string, got {type(data_url).__name__}")
    if len(data_url) > MAX_DATA_URL_CHARS:
        raise RuleError(f"{where}: data URL is too long ({len(data_url)} characters, at most "
                        f"{MAX_DATA_URL_CHARS})")
    if not data_url.startswith(_PREFIX):
        head = data_url[:30] + ("..." if len(data_url) > 30 else "")
        raise RuleError(f"{where}: not a PNG data URL (expected {_PREFIX!r}..., got {head!r})")
    try:
        raw = base64.b64decode(data_url[len(_PREFIX):].strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RuleError(f"{where}: data URL is not valid base64 ({e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw), formats=["PNG"])
            w, h = im.size
            if not (0 < w <= MAX_MASK_SIDE and 0 < h <= MAX_MASK_SIDE):
                raise RuleError(f"{where}: mask image is {w}x{h}, at most "
                                f"{MAX_MASK_SIDE}x{MAX_MASK_SIDE} is accepted")
            arr = np.asarray(im.convert("RGB"))
    except RuleError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise RuleError(f"{where}: not a readable PNG image ({str(e)[:120] or type(e).__name__})") from None
    return arr[..., 0].astype(np.float32) / 255.0


def _as_array(mask, where: str) -> np.ndarray:
    try:
        m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    except Exception:  # noqa: BLE001
        raise RuleError(f"{where}: not an array") from None
    if m.dtype == bool:
        m = m.astype(np.float32)
    if m.ndim != 2 or m.size == 0 or not np.issubdtype(m.dtype, np.number):
        raise RuleError(f"{where}: a mask must be a 2-D numeric array, got shape {m.shape}")
    m = m.astype(np.float32)
    if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise RuleError(f"{where}: mask values must be finite and in [0, 1]")
    return m


def encode_mask(mask, size: int = MASK_SIZE) -> str:
    """float [H, W] in [0, 1] (or bool) -> a ``size`` x ``size`` RGBA PNG data URL with
    R = G = B = A = round(255 * mask) (the original's decoder reads R). Masks of another size are
    resized: nearest when enlarging (keeps painted edges), bilinear when shrinking."""
    m = _as_array(mask, "mask")
    v = Image.fromarray(np.round(m * 255).astype(np.uint8), "L")
    if v.size != (size, size):
        up = size >= max(v.size)
        v = v.resize((size, size), Image.NEAREST if up else Image.BILINEAR)
    im = Image.merge("RGBA", (v, v, v, v))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return _PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def mask_at(mask, size: int) -> np.ndarray:
    """A mask resized to ``size`` x ``size`` the way the original resizes its PNGs (8-bit, PIL
    bilinear), as float32 in [0, 1]."""
    m = _as_array(mask, "mask")
    if m.shape == (size, size):
        return m
    v = Image.fromarray(np.round(m * 255).astype(np.uint8), "L").resize((size, size), Image.BILINEAR)
    return np.asarray(v).astype(np.float32) / 255.0


# ------------------------------------------------------------------------------- JSON <-> Rule
def _image_number(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or int(v) != v or v < 0:
        raise RuleError(f"{where}: image number must be a non-negative integer, got {v!r}")
    return int(v)


def _entry(v, where: str) -> Entry:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise RuleError(f"{where}: expected [image_number, mask data URL]")
    return _image_number(v[0], where), decode_mask(v[1], where)


def rule_from_dict(d: Any) -> Rule:
    """Validate a parsed rule object and decode its masks."""
    if not isinstance(d, dict):
        raise RuleError(f"a rule must be a JSON object, got {type(d).__name__}")
    if not any(k in d for k in _KNOWN):
        raise RuleError("not a rule file: it has none of the fields 'key', 'object', 'paste' "
                        f"(its fields: {', '.join(map(repr, list(d)[:5])) or 'none'})")
    keys = d.get("key", [])
    if keys is None:
        keys = []
    if not isinstance(keys, list):
        raise RuleError("'key' must be a list of [image_number, mask data URL] pairs")
    if len(keys) > MAX_CONTEXTS:
        raise RuleError(f"'key' has {len(keys)} entries, at most {MAX_CONTEXTS} are accepted")
    rule = Rule(key=[_entry(v, f"'key'[{i}]") for i, v in enumerate(keys)])
    for field in ("object", "paste", "query"):
        if d.get(field) is not None:
            setattr(rule, field, _entry(d[field], f"'{field}'"))
    for field in ("model", "layer"):
        v = d.get(field)
        if v is not None and (not isinstance(v, str) or not v):
            raise RuleError(f"'{field}' must be a non-empty string, got {v!r}")
        setattr(rule, field, v)
    r = d.get("rank")
    if r is not None:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise RuleError(f"'rank' must be a positive integer, got {r!r}")
        rule.rank = r
    e = d.get("erase", False)
    if not isinstance(e, bool):
        raise RuleError(f"'erase' must be true or false, got {e!r}")
    rule.erase = e
    rule.extra = {k: v for k, v in d.items() if k not in _KNOWN}
    return rule


def rule_to_dict(rule: Rule, size: int = MASK_SIZE) -> dict:
    """The JSON object for a rule (masks as ``size``-pixel PNG data URLs)."""
    d: dict = dict(rule.extra)

    def enc(entry, where):
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise RuleError(f"{where}: expected (image_number, mask)")
        return [_image_number(entry[0], where), encode_mask(entry[1], size)]

    if rule.key:
        d["key"] = [enc(e, f"key[{i}]") for i, e in enumerate(rule.key)]
    for field in ("object", "paste", "query"):
        if getattr(rule, field) is not None:
            d[field] = enc(getattr(rule, field), field)
    for field in ("model", "layer", "rank"):
        if getattr(rule, field) is not None:
            d[field] = getattr(rule, field)
    if rule.erase:
        d["erase"] = True
    return d


def read_rule(source) -> Rule:
    """Read a rule from a file path, JSON text (starting with ``{`` or ``[``), bytes or a dict."""
    if isinstance(source, dict):
        return rule_from_dict(source)
    where = "rule"
    if isinstance(source, (bytes, bytearray)):
        text = bytes(source)
    elif isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        text = source
    else:
        path = Path(source)
        where = path.name   # (never the folder: an upload's lies on the server)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such rule file")
        if path.stat().st_size > MAX_RULE_BYTES:
            raise RuleError(f"{where}: rule file is too large ({path.stat().st_size} bytes)")
        text = path.read_bytes()
    if len(text) > MAX_RULE_BYTES:
        raise RuleError(f"{where}: rule is too large ({len(text)} bytes)")
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RuleError(f"{where}: malformed JSON ({e})") from None
    try:
        return rule_from_dict(d)
    except RuleError as e:
        if where == "rule":
            raise
        raise RuleError(f"{where}: {e}") from None


def write_rule(rule: Rule, path=None, size: int = MASK_SIZE) -> str:
    """The rule as JSON text; also written to ``path`` when given."""
    text = json.dumps(rule_to_dict(rule, size))
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


# ------------------------------------------------------------------------------- applying
def _check_settings(model, rule: Rule, layer: str | None, rank: int | None):
    g = generator_of(model)
    name = getattr(getattr(model, "bundle", None), "name", None)
    if rule.model is not None and name is not None and rule.model != name:
        raise RuleError(f"this rule was made for model {rule.model!r}, not {name!r}")
    if layer is not None and rule.layer is not None and layer != rule.layer:
        raise RuleError(f"this rule was made for layer {rule.layer!r}, not {layer!r} (leave the "
                        "layer unset to use the rule's)")
    layer = layer or rule.layer
    if layer is None:
        raise RuleError("no layer: the rule does not state one; pass layer=...")
    g.main_weight(layer)                     # LayerError names the valid layers
    rank = rank if rank is not None else (rule.rank or 1)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise RuleError(f"rank must be a positive integer, got {rank!r}")
    return g, layer, rank


def _model_masks(entries, res: int):
    return [(num, mask_at(m, res)) for num, m in entries]


def apply_rule(model, rule, layer: str | None = None, rank: int | None = None,
               method: str = "closed_form", C=None, erase: bool | None = None, drank: int | None = None,
               weight_deltas=None, progress=None, stop=None, info: dict | None = None, **kwargs):
    """Run a rule on ``model`` and return the :class:`core.edits.WeightEdit`.

    ``rule``: a :class:`Rule`, a path, JSON text or dict. ``layer``/``rank`` default to the rule's
    (rank 1 if it has none); a rule that states another model or layer is refused. ``C``: key
    statistics (default :func:`core.rewrite.get_stats`). Copy = ``object``, paste location = the
    centre of the ``paste`` mask's bounding box on the value grid; context = ``key`` (or the paste
    selection when there is no key). ``erase=True`` (default: the rule's ``erase``) runs
    :func:`core.rewrite.erase` instead (target image: ``paste``'s, else the first context's; no
    object needed). Other ``kwargs`` go to
    :func:`core.rewrite.rewrite` (niter, lr, ridge, ...)."""
    from . import rewrite as rw
    if not isinstance(rule, Rule):
        rule = read_rule(rule)
    g, layer, rank = _check_settings(model, rule, layer, rank)
    res = g.resolution
    contexts = _model_masks(rule.contexts, res)
    if not contexts:
        raise RuleError("empty context: the rule has no 'key' entries and no 'paste' selection")
    if C is None:
        C = rw.get_stats(model, layer)
    if rule.erase if erase is None else erase:
        image = rule.paste[0] if rule.paste is not None else None
        return rw.erase(model, layer, contexts, C, image_number=image, drank=drank, rank=rank,
                        method=method, weight_deltas=weight_deltas, progress=progress, stop=stop,
                        info=info, **kwargs)
    if rule.object is None or rule.paste is None:
        missing = " and ".join(f for f in ("object", "paste") if getattr(rule, f) is None)
        raise RuleError(f"the rule has no {missing}: nothing to copy and paste (use erase=True "
                        "to erase with its context instead)")
    dirs = rw.context_direction(model, layer, contexts, C, rank, weight_deltas)
    o_num, o_mask = rule.object
    p_num, p_mask = rule.paste
    clip = rw.copy_value(model, layer, o_num, mask_at(o_mask, res), weight_deltas)
    center = rw.paste_center(model, layer, mask_at(p_mask, res))
    target, region = rw.paste_target(model, layer, p_num, clip, center, weight_deltas)
    kwargs.setdefault("label", f"rule {layer} (object {o_num} -> paste {p_num}, rank {rank})")
    return rw.rewrite(model, layer, dirs, p_num, target, region, C, method=method,
                      weight_deltas=weight_deltas, progress=progress, stop=stop, info=info, **kwargs)


__all__ = ["Rule", "RuleError", "read_rule", "write_rule", "rule_from_dict", "rule_to_dict",
           "decode_mask", "encode_mask", "mask_at", "apply_rule", "MASK_SIZE"]
