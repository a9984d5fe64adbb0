"""The Rewrite tab's session and pictures: what one visitor has painted, copied, pasted and
rewritten, the rule that request makes, the model's presets, and the shaded thumbnails.

A ``Session`` lives in a ``gr.State`` (30 min TTL). It holds image numbers, uint8 masks at the
model's resolution, the ``EditStack`` and its history rows, never a model. Handlers take a copy
(``Session.of``) and return it, so a failed event leaves the visitor's session as it was.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import rules
from core.edits import EditStack
from core.known import rule_files
from core.settings import model_settings
from demos.context import display

# what Execute needs, and how a user provides it
STEPS = {"context": "paint where the rule applies and press 'Add to context'",
         "copy": "paint a region of one image and press 'Copy'",
         "paste": "paint where it goes on another image and press 'Paste'"}
NO_HISTORY = [["", "", "", "", "no rewrites yet"]]

Region = tuple[int, np.ndarray]          # (image number, uint8 mask [res, res])


@dataclass
class Session:
    model_id: str | None = None
    numbers: list[int] = field(default_factory=list)     # the gallery's image numbers
    current: int | None = None                           # the image in the editor
    context: list[Region] = field(default_factory=list)
    copy: Region | None = None
    paste: Region | None = None
    stack: EditStack = field(default_factory=EditStack)
    history: list[list] = field(default_factory=list)    # one row per rewrite (HISTORY_HEADERS)
    original: bool = False                               # "Toggle original": show the base model
    erase: bool = False                                  # the last rewrite was an erase

    @classmethod
    def of(cls, st, model_id) -> "Session":
        """A copy of ``st`` for ``model_id``; a fresh session when the model changed."""
        if not isinstance(st, cls) or st.model_id != model_id:
            return cls(model_id)
        return dataclasses.replace(st)

    @property
    def shown_stack(self) -> EditStack:
        """The edits the gallery renders: none while the original is shown."""
        return EditStack() if self.original else self.stack

    def history_rows(self) -> list[list]:
        return self.history or NO_HISTORY

    def missing(self, erase: bool) -> list[str]:
        """The steps (``STEPS`` keys) Execute (or Erase) still needs."""
        return [step for step in (("context",) if erase else STEPS) if not getattr(self, step)]

    def rule(self, model, layer: str, rank: int, erase: bool = False) -> rules.Rule:
        """The rule this session's context, copy and paste make (an erase rule: its context)."""
        key = [(n, to_float(m)) for n, m in self.context]
        if erase:
            return rules.Rule(key=key, model=model.bundle.name, layer=layer, rank=int(rank), erase=True)
        return rules.Rule(key=key,
                          object=(self.copy[0], to_float(self.copy[1])) if self.copy else None,
                          paste=(self.paste[0], to_float(self.paste[1])) if self.paste else None,
                          model=model.bundle.name, layer=layer, rank=int(rank))

    def take_rule(self, rule: rules.Rule, res: int) -> None:
        """Put a rule file's context, copy and paste into the session, as masks at ``res``."""
        self.context = [(n, to_u8(rules.mask_at(m, res))) for n, m in rule.contexts]
        self.copy = (rule.object[0], to_u8(rules.mask_at(rule.object[1], res))) if rule.object else None
        self.paste = (rule.paste[0], to_u8(rules.mask_at(rule.paste[1], res))) if rule.paste else None


# ------------------------------------------------------------------ presets
def preset_paths(model) -> dict[str, Path]:
    """The model's rule presets: its bundle's ``rules/*.json`` in the order of its config's
    ``presets`` list, then by name; then the rewriting paper's rules for a known model."""
    bundle = getattr(model, "bundle", None)
    path = getattr(bundle, "path", None)
    found = []
    if path is not None and (Path(path) / "rules").is_dir():
        order = model_settings(model).presets
        found = sorted((Path(path) / "rules").glob("*.json"),
                       key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))
    return {p.stem: p for p in found} | {k: v for k, v in rule_files(model).items()
                                         if k not in {p.stem for p in found}}


def preset_note(model, name: str) -> str:
    """What the preset measured on held-out samples (the bundle's ``rewrite_<name>`` metrics,
    written by ``training.rebuild``); "" without them."""
    cfg = getattr(getattr(model, "bundle", None), "config", None) or {}
    measured = (cfg.get("metrics") or {}).get(f"rewrite_{name}") or {}
    return measured_note(measured.get("ours") or {}, measured.get("source"), measured.get("target"))


def measured_note(m: dict, source: str | None, target: str | None,
                  where: str = "held-out samples") -> str:
    """One sentence on a rewrite's measurements ``m`` (``core.eval.rewrite``'s keys) of the
    ``source`` concept turned into ``target`` (None: removed); "" without them."""
    number = (int, float)
    if not (source and isinstance(m.get("collateral_outside"), number)):
        return ""
    if target and isinstance(m.get("effectiveness"), number):
        what = (f"{100 * m['effectiveness']:.0f}% of {source} pixels became {target}, "
                f"{100 * (m.get('generality') or 0):.0f}% of the images with a {source} gained some")
    elif isinstance(m.get("removal"), number):
        what = f"{100 * m['removal']:.0f}% of {source} pixels were removed"
    else:
        return ""
    clean = (f", in images without a {source} {m['collateral_clean']:.3f}"
             if isinstance(m.get("collateral_clean"), number) else "")
    return f"Measured on {where}: {what}; mean change elsewhere {m['collateral_outside']:.3f} (of 1){clean}."


# ------------------------------------------------------------------ masks and pictures
def to_float(mask_u8) -> np.ndarray:
    return np.asarray(mask_u8, np.float32) / 255.0


def to_u8(mask) -> np.ndarray:
    return np.round(np.clip(np.asarray(mask, np.float32), 0, 1) * 255).astype(np.uint8)


def stroke_mask(mask, res: int) -> np.ndarray:
    """The brush canvas's strokes (HxW bool, or None for none) as uint8 coverage [res, res]
    (area-downscaled)."""
    if mask is None:
        return np.zeros((res, res), np.uint8)
    cover = F.interpolate(torch.from_numpy(np.asarray(mask, np.float32))[None, None], size=(res, res),
                          mode="area")[0, 0].numpy()
    return to_u8(cover)


def _up(mask_u8, size: int) -> np.ndarray:
    """A [res, res] mask nearest-upscaled to ``size`` as float [size, size]."""
    m = torch.from_numpy(to_float(mask_u8))[None, None]
    return F.interpolate(m, size=(size, size), mode="nearest")[0, 0].numpy()


def shade(image_u8, mask_u8, size: int, inside=None, dim: float = 0.5) -> np.ndarray:
    """The image upscaled to ``size``: outside the mask dimmed, inside tinted with ``inside``."""
    im = np.asarray(display(image_u8, size).convert("RGB"), np.float32)
    m = _up(mask_u8, im.shape[0])[..., None]
    if inside is None:
        out = im * (dim + (1 - dim) * m)
    else:
        out = im * (1 - 0.5 * m) + np.asarray(inside, np.float32) * 0.5 * m
    return out.clip(0, 255).astype(np.uint8)


def box(image, region_bool, color=(255, 0, 0)) -> np.ndarray:
    """Draw the bounding box of a [h, w] region (value grid) on an HWC uint8 image."""
    im = np.array(image)
    r = np.asarray(region_bool)
    ys, xs = np.nonzero(r)
    if len(ys) == 0:
        return im
    sy, sx = im.shape[0] / r.shape[0], im.shape[1] / r.shape[1]
    t, b = int(ys.min() * sy), int((ys.max() + 1) * sy) - 1
    l, rr = int(xs.min() * sx), int((xs.max() + 1) * sx) - 1
    for y in (t, t + 1, b - 1, b):
        im[max(0, min(y, im.shape[0] - 1)), l:rr + 1] = color
    for x in (l, l + 1, rr - 1, rr):
        im[t:b + 1, max(0, min(x, im.shape[1] - 1))] = color
    return im
