"""Rewrite tab: change a rule of the model (Bau et al. 2020) by copy, paste and context.

Workflow (the original rewriting app's, see ``core.rewrite``): show samples by image number, pick
one, paint a region in the editor; **Add to context** (the tray; click a thumbnail to remove it),
**Search** / **Show context matches** rank and highlight images by the context's key direction;
**Copy** the painted region of one image, **Paste** it into another (painted mask, or click on the
paste preview to move it); **Execute change** fits the layer's weight (a rank-``rank`` update along
the context direction) and pushes the ``WeightEdit`` onto the session's ``EditStack``; the gallery
re-renders with the edited model, and the status line says what else the rewrite changed on
``HELD_OUT`` samples (``core.eval.rewrite.measure_edits``, as the presets were measured).
**Erase context** needs only the context: it rewrites the layer so that what the context shows
(e.g. watermarks) is no longer drawn. **Toggle original**, **Undo**, rule JSON download/upload;
presets (``<bundle>/rules/*.json``) sit at the top of the tab. A problem shows as a warning and a
status line; the other outputs keep what they showed.

All math is in ``core.rewrite`` / ``core.rules``; this module turns widget values into calls.
Session state (``gr.State``, 30 min TTL) is a small dict: image numbers, uint8 masks at the model's
resolution, the EditStack and its history rows — never a model.
"""
from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F

import core
from core import rewrite as rw
from core import rules
from core.edits import EditStack
from core.known import rule_files
from core.eval.rewrite import measure_edits, region_concept
from core.generators.base import LayerError
from core.settings import MAX_RANK, model_settings
from demos.brush import CheckedImageEditor, hidden_editor, shown_editor
from demos.context import (DISPLAY_SIZE, AppContext, display, error_text, painted_mask, stoppable, warn,
                           warn_on_error)
from demos.gpu import gpu
from demos.settings import HEAVY, STATE_TTL
from demos.sharing import SharePanel

MAX_GALLERY = 32
TOP_RESULTS = 12
MAX_SEARCH = 2000
HELD_OUT = range(100_000, 100_016)   # a manual rewrite is measured on these (the presets: 100000-100199)
STATS_SAMPLES = 1000
NO_PRESETS = "(no presets for this model)"
STEPS = {"context": "paint where the rule applies and press 'Add to context'",    # what Execute needs
         "copy": "paint a region of one image and press 'Copy'",
         "paste": "paint where it goes on another image and press 'Paste'"}
HISTORY_HEADERS = ["#", "layer", "rank", "seconds", "label"]
HIGHLIGHT = np.array([255, 210, 0], np.float32)      # context-match highlight colour
GALLERY_SIZE = 256
TRAY_SIZE = 96


def _fresh(model_id=None) -> dict:
    return {"model_id": model_id, "numbers": [], "current": None, "context": [], "copy": None,
            "paste": None, "stack": EditStack(), "history": [], "original": False, "erase": False}


def _session(st, model_id) -> dict:
    """A shallow copy of the session dict for ``model_id`` (fresh when the model changed)."""
    if not isinstance(st, dict) or st.get("model_id") != model_id:
        return _fresh(model_id)
    return dict(st)


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


# ------------------------------------------------------------------ masks and pictures (glue)
def _to_float(mask_u8) -> np.ndarray:
    return np.asarray(mask_u8, np.float32) / 255.0


def _to_u8(mask) -> np.ndarray:
    return np.round(np.clip(np.asarray(mask, np.float32), 0, 1) * 255).astype(np.uint8)


def editor_mask(ev, res: int) -> np.ndarray:
    """The painted region of an ImageEditor value (``painted_mask``) as uint8 coverage
    [res, res] (area-downscaled)."""
    if not isinstance(ev, dict) or ev.get("background") is None:
        raise gr.Error("Pick an image from the gallery first, then paint on it.")
    alpha = painted_mask(ev)
    if alpha is None:
        alpha = np.zeros(np.asarray(ev["background"]).shape[:2], bool)
    cover = F.interpolate(torch.from_numpy(alpha.astype(np.float32))[None, None], size=(res, res),
                          mode="area")[0, 0].numpy()
    return _to_u8(cover)


def _up(mask_u8, size: int) -> np.ndarray:
    """A [res, res] mask nearest-upscaled to ``size`` as float [size, size]."""
    m = torch.from_numpy(_to_float(mask_u8))[None, None]
    return F.interpolate(m, size=(size, size), mode="nearest")[0, 0].numpy()


def _shade(image_u8, mask_u8, size: int, inside=None, dim: float = 0.5) -> np.ndarray:
    """The image upscaled to ``size``: outside the mask dimmed, inside tinted with ``inside``."""
    im = np.asarray(display(image_u8, size).convert("RGB"), np.float32)
    m = _up(mask_u8, im.shape[0])[..., None]
    if inside is None:
        out = im * (dim + (1 - dim) * m)
    else:
        out = im * (1 - 0.5 * m) + np.asarray(inside, np.float32) * 0.5 * m
    return out.clip(0, 255).astype(np.uint8)


def _box(image, region_bool, color=(255, 0, 0)) -> np.ndarray:
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


# ------------------------------------------------------------------ the tab
def build(ctx: AppContext):
    mem_stats: dict = {}              # (model name, layer) -> KeyStats computed in this process
    lock = threading.Lock()

    def loaded_model(model_id):
        try:
            return ctx.model(model_id)
        except Exception as e:  # noqa: BLE001 - shown to the user
            raise gr.Error(f"Could not load model {model_id!r}: {error_text(e)}")

    def check_layer(model, layer):
        if layer not in model.layers:
            raise gr.Error(f"Layer {layer!r} is not in this model; use one of {', '.join(model.layers)}.")
        return layer

    def check_rank(rank):
        try:
            r = int(rank)
        except (TypeError, ValueError):
            raise gr.Error(f"Rank must be a whole number from 1 to {MAX_RANK}, got {rank!r}.")
        if r != rank or not 1 <= r <= MAX_RANK:
            raise gr.Error(f"Rank must be a whole number from 1 to {MAX_RANK}, got {rank!r}.")
        return r

    def known_stats(model, layer):
        """(key statistics of ``layer``, where they come from): the bundle's, else those computed
        here (the scratch folder; memory when that is not writable). Raises MissingStatsError."""
        if model.bundle.has_stats(layer):
            return rw.get_stats(model, layer), "shipped with the model"
        with lock:
            hit = mem_stats.get((model.name, layer))
        if hit is not None:
            return hit, "computed here, kept in memory"
        return rw.get_stats(model, layer, model.bundle.scratch(f"stats/{layer}.safetensors")), "computed here"

    def stats_for(model, layer):
        try:
            return known_stats(model, layer)[0]
        except rw.MissingStatsError:
            raise gr.Error(f"Layer {layer} has no key statistics yet. Open 'Statistics' below and "
                           f"press 'Compute statistics' ({STATS_SAMPLES} images), then try again.")
        except (rw.RewriteError, OSError) as e:
            raise gr.Error(f"Key statistics of {layer}: {error_text(e)}")

    def stack_of(st):
        return EditStack() if st["original"] else st["stack"]

    def render(model_id, st, numbers):
        if not numbers:
            return []
        images = ctx.renderer(model_id).render_numbers(list(numbers), stack_of(st))
        return [core.images.to_uint8(im) for im in images]

    def gallery_of(model_id, st, captions=None):
        numbers = st["numbers"]
        images = render(model_id, st, numbers)
        tag = " (original)" if st["original"] and st["stack"] else ""
        return [(display(im, GALLERY_SIZE), (captions or {}).get(n, f"#{n}") + tag)
                for im, n in zip(images, numbers)]

    def tray_of(model_id, st):
        items = []
        for n, m in st["context"]:
            im = render(model_id, st, [n])[0]
            items.append((_shade(im, m, TRAY_SIZE, inside=(255, 255, 255)), f"#{n}"))
        return items

    def history_of(st):
        return st["history"] if st["history"] else [["", "", "", "", "no rewrites yet"]]

    def weight_deltas(st, model):
        return stack_of(st).weight_deltas(model) if stack_of(st) else None

    # ---------------------------------------------------------------- gallery and editor
    # Each handler shows a problem as a warning in its status line (or caption) and keeps its
    # other outputs: a raised gr.Error would cover each of them, whole galleries too, with an
    # "Error" badge (warn_on_error).
    @warn_on_error(3, status=2)
    def show(model_id, spec, st):
        st = _session(st, model_id)
        try:
            numbers = core.parse_image_numbers(spec, max_count=MAX_GALLERY)
        except ValueError as e:
            raise gr.Error(f"Image numbers: {e}")
        st["numbers"] = list(numbers)
        return gallery_of(model_id, st), st, f"Showing {len(numbers)} image(s)."

    @warn_on_error(3, status=1)
    def select(model_id, st, evt: gr.SelectData):
        """A gallery click, step 1: remember the image and hide the editor (``hidden_editor``
        says why)."""
        st = _session(st, model_id)
        if evt.index is None or not 0 <= evt.index < len(st["numbers"]):
            raise gr.Error("Pick an image from the gallery.")
        st["current"] = st["numbers"][evt.index]
        return hidden_editor(), f"Opening image **#{st['current']}**…", st

    def show_selected(model_id, st):
        """A gallery click, step 2: the chosen image into the (hidden) editor."""
        return open_image(model_id, st, (st or {}).get("current"))

    @warn_on_error(3, status=1)
    def open_image(model_id, st, n):
        st = _session(st, model_id)
        try:
            n = core.parse_image_numbers(str(int(n)))[0]
        except (TypeError, ValueError) as e:
            raise gr.Error(f"Image number: {e}")
        st["current"] = n
        im = np.asarray(display(render(model_id, st, [n])[0], DISPLAY_SIZE).convert("RGBA"))
        return {"background": im, "layers": [], "composite": im}, f"Image **#{n}**: paint a region.", st

    def painted(model_id, ev, st, what):
        st = _session(st, model_id)
        if st["current"] is None:
            raise gr.Error("Pick an image from the gallery first, then paint on it.")
        model = loaded_model(model_id)
        mask = editor_mask(ev, model.resolution)
        if not mask.any():
            raise gr.Error(f"Empty {what} mask: paint a region on the image first.")
        return st, model, mask

    # ---------------------------------------------------------------- context and search
    @warn_on_error(3, status=2)
    def add_context(model_id, ev, st):
        st, _, mask = painted(model_id, ev, st, "context")
        st["context"] = st["context"] + [(st["current"], mask)]
        return tray_of(model_id, st), st, f"Context: {len(st['context'])} region(s)."

    @warn_on_error(3, status=2)
    def remove_context(model_id, st, evt: gr.SelectData):
        st = _session(st, model_id)
        if evt.index is None or not 0 <= evt.index < len(st["context"]):
            raise gr.Error("Pick a context thumbnail to remove it.")
        st["context"] = [c for i, c in enumerate(st["context"]) if i != evt.index]
        return tray_of(model_id, st), st, f"Context: {len(st['context'])} region(s)."

    @warn_on_error(3, status=2)
    def clear_context(model_id, st):
        st = _session(st, model_id)
        st["context"] = []
        return [], st, "Context cleared."

    def direction(model, layer, st):
        if not st["context"]:
            raise gr.Error("Empty context: paint a region on an image and press 'Add to context' first.")
        C = stats_for(model, layer)
        try:
            return rw.context_direction(model, layer, [(n, _to_float(m)) for n, m in st["context"]],
                                        C, 1, weight_deltas(st, model))
        except (rw.RewriteError, ValueError, LayerError) as e:
            raise gr.Error(error_text(e))

    def matches(model_id, layer, st, numbers, rank_them):
        model = loaded_model(model_id)
        check_layer(model, layer)
        d = direction(model, layer, st)
        try:
            res = rw.search(model, layer, d, numbers, weight_deltas=weight_deltas(st, model))
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        shown = res.ranking[:TOP_RESULTS] if rank_them else list(numbers)
        images = render(model_id, st, shown)
        gallery = []
        for n, im in zip(shown, images):
            hl = _to_u8(res.highlight(n, size=model.resolution).numpy())
            gallery.append((_shade(im, hl, GALLERY_SIZE, inside=HIGHLIGHT), f"#{n} · {res.scores[n]:.2f}"))
        return shown, gallery

    @warn_on_error(3, status=2)
    def search(model_id, layer, spec, st):
        st = _session(st, model_id)
        try:
            numbers = core.parse_image_numbers(spec, max_count=MAX_SEARCH)
        except ValueError as e:
            raise gr.Error(f"Search image numbers: {e}")
        shown, gallery = matches(model_id, layer, st, numbers, True)
        st["numbers"] = shown
        return gallery, st, f"Top {len(shown)} of {len(numbers)} images by match with the context."

    @warn_on_error(3, status=2)
    def show_matches(model_id, layer, st):
        st = _session(st, model_id)
        if not st["numbers"]:
            raise gr.Error("Show some images first.")
        _, gallery = matches(model_id, layer, st, st["numbers"], False)
        return gallery, st, "Highlighted: pixels above the 0.999 quantile of the context match."

    # ---------------------------------------------------------------- copy and paste
    @warn_on_error(4, status=3)
    def copy(model_id, layer, ev, st):
        st, model, mask = painted(model_id, ev, st, "copy")
        check_layer(model, layer)
        try:
            rw.copy_value(model, layer, st["current"], _to_float(mask), weight_deltas(st, model))
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        st["copy"] = (st["current"], mask)
        st["paste"] = None
        st["erase"] = False            # a copy starts a copy-paste request
        im = render(model_id, st, [st["current"]])[0]
        return _shade(im, mask, GALLERY_SIZE), None, st, f"Copied a region of image #{st['current']}."

    def paste_preview(model_id, layer, st, n, mask):
        model = loaded_model(model_id)
        check_layer(model, layer)
        if st["copy"] is None:
            raise gr.Error("Nothing copied yet: paint a region and press 'Copy' first.")
        deltas = weight_deltas(st, model)
        try:
            clip = rw.copy_value(model, layer, st["copy"][0], _to_float(st["copy"][1]), deltas)
            center = rw.paste_center(model, layer, _to_float(mask))
            target, region = rw.paste_target(model, layer, n, clip, center, deltas)
            image = rw.render_with_value(model, layer, n, target, deltas)
        except (rw.RewriteError, ValueError, LayerError) as e:
            raise gr.Error(error_text(e))
        pic = np.asarray(display(core.images.to_uint8(image), DISPLAY_SIZE).convert("RGB"))
        return _box(pic, region.cpu().numpy())

    @warn_on_error(3, status=2)
    def paste(model_id, layer, ev, st):
        st, _, mask = painted(model_id, ev, st, "paste")
        pic = paste_preview(model_id, layer, st, st["current"], mask)
        st["paste"] = (st["current"], mask)
        return pic, st, f"Pasted into image #{st['current']}: press 'Execute change'."

    @warn_on_error(3, status=2)
    def paste_at(model_id, layer, st, x, y, target=None):
        """Paste centred at (x, y) in model pixels on the paste image (or the current one)."""
        st = _session(st, model_id)
        model = loaded_model(model_id)
        check_layer(model, layer)
        n = target if target is not None else (st["paste"][0] if st["paste"] else st["current"])
        if n is None:
            raise gr.Error("Pick the image to paste into first.")
        if st["copy"] is None:
            raise gr.Error("Nothing copied yet: paint a region and press 'Copy' first.")
        res = model.resolution
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise gr.Error(f"Paste location must be two numbers, got ({x!r}, {y!r}).")
        if not (0 <= x < res and 0 <= y < res):
            raise gr.Error(f"Paste location ({x:g}, {y:g}) is outside the {res}x{res} image.")
        try:
            gh, gw = rw.copy_value(model, layer, st["copy"][0], _to_float(st["copy"][1])).grid
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        # a mask covering the value-grid cell under (x, y): paste_center maps it back to that cell
        cy, cx = int(y * gh / res), int(x * gw / res)
        mask = np.zeros((res, res), np.uint8)
        mask[cy * res // gh:(cy + 1) * res // gh, cx * res // gw:(cx + 1) * res // gw] = 255
        pic = paste_preview(model_id, layer, st, n, mask)
        st["paste"] = (n, mask)
        return pic, st, f"Pasted into image #{n} at ({x:.0f}, {y:.0f}): press 'Execute change'."

    @warn_on_error(3, status=2)
    def paste_click(model_id, layer, st, evt: gr.SelectData):
        st = _session(st, model_id)
        model = loaded_model(model_id)
        if evt.index is None or len(evt.index) != 2:
            raise gr.Error("Click on the paste image.")
        scale = model.resolution / DISPLAY_SIZE
        return paste_at(model_id, layer, st, evt.index[0] * scale, evt.index[1] * scale)

    # ---------------------------------------------------------------- executing
    def request(model, layer, rank, st, erase=False) -> rules.Rule:
        if erase:       # an erase rule is its context alone
            return rules.Rule(key=[(n, _to_float(m)) for n, m in st["context"]],
                              model=model.bundle.name, layer=layer, rank=int(rank), erase=True)
        return rules.Rule(key=[(n, _to_float(m)) for n, m in st["context"]],
                          object=(st["copy"][0], _to_float(st["copy"][1])) if st["copy"] else None,
                          paste=(st["paste"][0], _to_float(st["paste"][1])) if st["paste"] else None,
                          model=model.bundle.name, layer=layer, rank=int(rank))

    def run_rule(model_id, layer, rank, st, rule, note=""):
        """Generator: apply ``rule`` on top of the session's edits; yields status tuples, returns
        the new session dict."""
        model = loaded_model(model_id)
        check_layer(model, layer)
        rank = check_rank(rank)
        if not rule.contexts:
            raise gr.Error("Empty context: paint a region on an image and press 'Add to context' first.")
        if not rule.erase and (rule.object is None or rule.paste is None):
            missing = " and ".join(f for f, v in (("copy", rule.object), ("paste", rule.paste)) if v is None)
            raise gr.Error(f"Nothing to rewrite yet: {missing} missing (use 'Copy' on one image and "
                           "'Paste' on another).")
        C = stats_for(model, layer)
        base = st["stack"]
        deltas = base.weight_deltas(model) if base else None
        info: dict = {}

        def job(stop, status):
            t0 = time.perf_counter()

            def progress(done, total, loss):
                status.update(done=done, total=total, loss=loss, t=time.perf_counter() - t0)
            return rules.apply_rule(model, rule, layer=layer, rank=rank, C=C, weight_deltas=deltas,
                                    progress=progress, stop=stop.is_set, info=info)

        def describe(s):
            loss = f", loss {s['loss']:.4g}" if s.get("loss") is not None else ""
            return (gr.skip(), gr.skip(), gr.skip(),
                    f"Rewriting {layer} (rank {rank}){note}… {s.get('done', 0)}/{s.get('total', '?')}{loss}")

        try:
            edit = yield from stoppable(job, describe)
        except (rules.RuleError, rw.RewriteError, ValueError, LayerError) as e:
            raise gr.Error(error_text(e))
        st = dict(st)
        st["stack"] = base.push(edit)
        st["original"] = False
        st["erase"] = rule.erase          # "Download rule JSON" saves an erase rule after an erase
        st["history"] = st["history"] + [[len(st["history"]) + 1, layer, rank,
                                          round(float(info.get("seconds", 0.0)), 2), edit.label]]
        return st, info

    def finish(model_id, st, info, what):
        loss = f"; loss {info['loss_before']:.4g} -> {info['loss']:.4g}" \
            if info.get("loss") is not None and info.get("loss_before") is not None else ""
        return (gallery_of(model_id, st), st, history_of(st),
                f"{what} in {info.get('seconds', 0):.2f} s{loss}. {len(st['stack'])} edit(s) applied.")

    @warn_on_error(4, status=3)
    def execute(model_id, layer, rank, st, erase=False):
        st = _session(st, model_id)
        model = loaded_model(model_id)
        check_layer(model, layer)
        missing = [step for step in (("context",) if erase else STEPS) if not st[step]]
        if missing:
            raise gr.Error(f"Nothing to {'erase' if erase else 'rewrite'} yet: "
                           + "; ".join(STEPS[step] for step in missing)
                           + ". Or apply a preset (top of the tab) to see a rewrite at once.")
        rule = request(model, layer, check_rank(rank), st, erase)
        before = st["stack"]
        st, info = yield from run_rule(model_id, layer, rank, st, rule)
        gallery, st, hist, msg = finish(model_id, st, info, "Erased the context" if erase else "Rewrote the model")
        yield gallery, st, hist, f"{msg}  \nMeasuring what else it changed on {len(HELD_OUT)} held-out samples…"
        note = side_effects(model_id, before, st, erase)
        yield gallery, st, hist, msg + (f"  \n{note}" if note else "")

    def side_effects(model_id, before, st, erase) -> str:
        """The newest rewrite against the model ``before`` it, on HELD_OUT samples, as the presets
        were measured: the concept the context shows turned into the copy's (or removed), and the
        mean change elsewhere; "" when the model has no segmenter."""
        loaded = ctx.get(model_id)
        model, seg = loaded.model, loaded.segmenter
        if seg is None:
            return ""
        base = before.weight_deltas(model) if before else None
        source = region_concept(model, seg, [(n, _to_float(m)) for n, m in st["context"]], base)
        target = None if erase else region_concept(model, seg, [(st["copy"][0], _to_float(st["copy"][1]))], base)
        m = measure_edits(model, seg, HELD_OUT, {"new": st["stack"].weight_deltas(model)}, source, target,
                          base_deltas=base)["new"]
        return measured_note(m, seg.concepts[source], None if target is None else seg.concepts[target],
                             f"{len(HELD_OUT)} held-out samples")

    def erase(model_id, layer, rank, st):
        yield from execute(model_id, layer, rank, st, erase=True)

    def load_rule(model, layer, rank, rule, st):
        """Check a rule against the model and put its request into the session."""
        name = model.bundle.name
        if rule.model is not None and rule.model != name:
            raise gr.Error(f"This rule was made for model {rule.model!r}, not {name!r}.")
        layer = rule.layer or layer
        if layer not in model.layers:
            raise gr.Error(f"This rule is for layer {layer!r}, which this model does not have "
                           f"(layers: {', '.join(model.layers)}).")
        rank = rule.rank if rule.rank is not None else rank
        rank = check_rank(rank)
        res = model.resolution
        try:
            st["context"] = [(n, _to_u8(rules.mask_at(m, res))) for n, m in rule.contexts]
            st["copy"] = (rule.object[0], _to_u8(rules.mask_at(rule.object[1], res))) if rule.object else None
            st["paste"] = (rule.paste[0], _to_u8(rules.mask_at(rule.paste[1], res))) if rule.paste else None
        except rules.RuleError as e:
            raise gr.Error(error_text(e))
        return layer, rank

    def replay(model_id, layer, rank, st, rule, what, note=""):
        if rule.contexts and (rule.object is None or rule.paste is None):
            # a file with a context and nothing to copy and paste: the original app's erase rules
            # (the rewriting paper's watermark and multikey ones)
            rule = dataclasses.replace(rule, erase=True)
        st = _session(st, model_id)
        model = loaded_model(model_id)
        layer, rank = load_rule(model, layer, rank, rule, st)
        st, info = yield from run_rule(model_id, layer, rank, st, rule, f" ({what})")
        gallery, st, hist, msg = finish(model_id, st, info, f"Applied {what}")
        yield gallery, st, hist, msg + (f"  \n{note}" if note else ""), tray_of(model_id, st), layer, rank

    @warn_on_error(7, status=3)
    def upload(model_id, layer, rank, file, st):
        if file is None:
            raise gr.Error("Choose a rule JSON file to upload.")
        path = file if isinstance(file, str) else getattr(file, "name", None) or file.get("path")
        try:
            rule = rules.read_rule(Path(path))
        except (rules.RuleError, OSError, ValueError) as e:
            raise gr.Error(f"Could not read the rule file: {error_text(e)}")
        yield from (_pad(o) for o in _gen_outputs(replay(model_id, layer, rank, st, rule, "the uploaded rule")))

    @warn_on_error(7, status=3)
    def preset(model_id, layer, rank, name, st):
        model = loaded_model(model_id)
        paths = preset_paths(model)
        if name not in paths:
            raise gr.Error("This model has no presets." if not paths else f"Unknown preset {name!r}.")
        try:
            rule = rules.read_rule(paths[name])
        except (rules.RuleError, OSError, ValueError) as e:
            raise gr.Error(f"Preset {name!r} is broken: {error_text(e)}")
        yield from (_pad(o) for o in _gen_outputs(replay(model_id, layer, rank, st, rule, f"preset '{name}'",
                                                          preset_note(model, name))))

    @warn_on_error(2, status=1)
    def download(model_id, layer, rank, st):
        st = _session(st, model_id)
        model = loaded_model(model_id)
        check_layer(model, layer)
        if not (st["context"] or st["copy"] or st["paste"]):
            raise gr.Error("Nothing to save yet: add context, copy and paste first.")
        text = rules.write_rule(request(model, layer, check_rank(rank), st, st.get("erase", False)))
        folder = Path(tempfile.mkdtemp(prefix="rewrite-rule-"))
        path = folder / f"{model.bundle.name}-{layer}-rule.json"
        path.write_text(text, encoding="utf-8")
        return str(path), f"Saved the rule as {path.name}."

    def edited(model_id, st):
        """What the Share panel shares: the session's rewrites."""
        st = _session(st, model_id)
        return loaded_model(model_id), st["stack"], st["numbers"][:2], "rewritten"

    @warn_on_error(3, status=2)
    def toggle(model_id, st):
        st = _session(st, model_id)
        st["original"] = not st["original"]
        what = "original model" if st["original"] else f"edited model ({len(st['stack'])} edit(s))"
        return gallery_of(model_id, st), st, f"Showing the {what}."

    @warn_on_error(4, status=3)
    def undo(model_id, st):
        st = _session(st, model_id)
        if not st["stack"]:
            raise gr.Error("Nothing to undo.")
        st["stack"] = st["stack"].undo()
        st["history"] = st["history"][:-1]
        st["original"] = False
        return gallery_of(model_id, st), st, history_of(st), f"Undone; {len(st['stack'])} edit(s) left."

    # ---------------------------------------------------------------- statistics
    @warn_on_error(1, status=0)
    def stats_info(model_id, layer):
        model = loaded_model(model_id)
        if layer not in model.layers:
            return ""
        try:
            st, origin = known_stats(model, layer)
            return f"Key statistics of {layer}: {st.meta.get('samples', '?')} images ({origin})."
        except rw.MissingStatsError:
            return (f"**{layer} has no key statistics yet.** Rewriting needs them: press "
                    f"'Compute statistics' ({STATS_SAMPLES} images).")
        except (rw.RewriteError, OSError) as e:
            return f"Key statistics of {layer}: {error_text(e)}"

    @warn_on_error(1, status=0)
    def compute_stats(model_id, layer, samples):
        model = loaded_model(model_id)
        check_layer(model, layer)
        samples = int(samples)
        if samples < 1:
            raise gr.Error("Use at least one image.")
        if model.bundle.has_stats(layer):
            yield warn(f"{layer} ships key statistics with the model; they are used as they are, "
                       "not recomputed here.")
            return

        def job(stop, status):
            return rw.collect_key_stats(model, layer, range(samples), stop=stop.is_set,
                                        progress=lambda d, t, _: status.update(done=d, total=t))

        try:
            stats = yield from stoppable(
                job, lambda s: f"Collecting key statistics of {layer}: {s.get('done', 0)}/{samples} images…")
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        try:      # never into the bundle: shipped files are read-only at run time
            rw.save_key_stats(stats, model.bundle.scratch(f"stats/{layer}.safetensors"))
            where = "saved in this server's cache"
        except OSError:
            with lock:
                mem_stats[(model.name, layer)] = stats
            where = "kept in memory (the cache folder is not writable)"
        yield f"Key statistics of {layer} over {stats.meta.get('samples')} images {where}."

    # ---------------------------------------------------------------- layout
    ids = ctx.model_ids()
    try:
        first = ctx.model(ids[0])
        layers, layer0, presets0 = list(first.layers), model_settings(first).rewrite_layer, list(preset_paths(first))
        rank0 = model_settings(first).rewrite_rank
    except Exception:  # noqa: BLE001 - the app still builds; errors show on use
        layers, layer0, presets0, rank0 = [], None, [], 1
    preset_choices = presets0 or [NO_PRESETS]

    gr.Markdown("Rewrite a rule of the model: paint **context** (where the rule applies), **copy** a "
                "region of one image, **paste** it into another, then **Execute change**.")
    st = gr.State(_fresh(ids[0]), time_to_live=STATE_TTL)
    with gr.Accordion("Presets", open=True):
        gr.Markdown("A preset is a ready-made rule shipped with the model (its context, copy and "
                    "paste): applying it rewrites the model and shows the result on the samples "
                    "below, the quickest way to see a rewrite; Undo takes it back.")
        with gr.Row():
            presets = gr.Dropdown(preset_choices, value=preset_choices[0], label="Preset", scale=3)
            preset_btn = gr.Button("Apply preset", variant="primary", interactive=bool(presets0),
                                   scale=1, elem_id="rewrite_apply_preset")
    with gr.Row():
        model_id = gr.Textbox(ids[0], label="Model", visible=False)
        layer = gr.Dropdown(layers, value=layer0, label="Layer", scale=1, elem_id="rewrite_layer")
        rank = gr.Slider(1, MAX_RANK, value=rank0, step=1, label="Rank", scale=1, elem_id="rewrite_rank")
        spec = gr.Textbox("0-11", label="Image numbers", scale=2, elem_id="rewrite_numbers")
        show_btn = gr.Button("Show", scale=1, elem_id="rewrite_show")
    with gr.Row():
        execute_btn = gr.Button("Execute change", variant="primary", elem_id="rewrite_execute")
        erase_btn = gr.Button("Erase context", elem_id="rewrite_erase")
        stop_btn = gr.Button("Stop", variant="stop")
        toggle_btn = gr.Button("Toggle original", elem_id="rewrite_toggle")
        undo_btn = gr.Button("Undo", elem_id="rewrite_undo")
    status = gr.Markdown(elem_id="rewrite_status")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Samples (click one to paint on it)", columns=4, height="auto",
                                 allow_preview=False, format="png", elem_id="rewrite_gallery")
            with gr.Row():
                search_spec = gr.Textbox("0-199", label="Search among", scale=2)
                search_btn = gr.Button("Search", scale=1)
                matches_btn = gr.Button("Show context matches", scale=1)
        with gr.Column(scale=2):
            caption = gr.Markdown("Click an image in the gallery.", elem_id="rewrite_caption")
            editor = CheckedImageEditor(type="numpy", image_mode="RGBA", format="png", sources=(),
                                    transforms=(), layers=False, label="Paint a region",
                                    brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed", default_size=24),
                                    eraser=gr.Eraser(default_size=24), canvas_size=(DISPLAY_SIZE, DISPLAY_SIZE),
                                    elem_id="rewrite_editor")
            with gr.Row():
                context_btn = gr.Button("Add to context", elem_id="rewrite_add_context")
                clear_btn = gr.Button("Clear context", elem_id="rewrite_clear")
                copy_btn = gr.Button("Copy", elem_id="rewrite_copy")
                paste_btn = gr.Button("Paste", elem_id="rewrite_paste")
    tray = gr.Gallery(label="Context (click a thumbnail to remove it)", columns=8, height=140,
                      allow_preview=False, format="png", elem_id="rewrite_tray")
    with gr.Row():
        copied = gr.Image(label="Copied (outside dimmed)", format="png", interactive=False, height=256)
        pasted = gr.Image(label="Paste preview (click to move the paste)", format="png", interactive=False,
                          height=DISPLAY_SIZE, elem_id="rewrite_paste_image")
    with gr.Accordion("Paste at a point", open=False):
        with gr.Row():
            px = gr.Number(label="x (model pixels)")
            py = gr.Number(label="y (model pixels)")
            paste_at_btn = gr.Button("Paste here")
    history = gr.Dataframe(headers=HISTORY_HEADERS, value=[["", "", "", "", "no rewrites yet"]],
                           label="Rewrites", interactive=False, elem_id="rewrite_history")
    with gr.Accordion("Rule files", open=False):
        with gr.Row():
            download_btn = gr.Button("Download rule JSON")
            rule_out = gr.File(label="Rule JSON", interactive=False)
            rule_in = gr.File(label="Upload a rule JSON (replays it)", file_types=[".json"], type="filepath")
    SharePanel("rewrite", edited, [model_id, st])
    with gr.Accordion("Statistics", open=False):
        stats_md = gr.Markdown(stats_info(ids[0], layer0) if layer0 else "")
        samples = gr.Slider(10, 5000, value=STATS_SAMPLES, step=10, label="Images")
        stats_btn = gr.Button("Compute statistics")
        stats_out = gr.Markdown()

    # ---------------------------------------------------------------- events
    show_btn.click(show, [model_id, spec, st], [gallery, st, status], api_name="rewrite_show")
    spec.submit(show, [model_id, spec, st], [gallery, st, status], api_visibility="private")
    gallery.select(select, [model_id, st], [editor, caption, st], api_visibility="private").then(
        show_selected, [model_id, st], [editor, caption, st], api_visibility="private").then(
        shown_editor, None, [editor], api_visibility="private", show_progress="hidden")
    image_no = gr.Number(visible=False)
    image_no.change(open_image, [model_id, st, image_no], [editor, caption, st], api_name="rewrite_open")
    context_btn.click(add_context, [model_id, editor, st], [tray, st, status], api_name="rewrite_add_context")
    tray.select(remove_context, [model_id, st], [tray, st, status], api_visibility="private")
    clear_btn.click(clear_context, [model_id, st], [tray, st, status], api_name="rewrite_clear_context")
    search_btn.click(search, [model_id, layer, search_spec, st], [gallery, st, status], api_name="rewrite_search")
    matches_btn.click(show_matches, [model_id, layer, st], [gallery, st, status], api_name="rewrite_matches")
    copy_btn.click(copy, [model_id, layer, editor, st], [copied, pasted, st, status], api_name="rewrite_copy")
    paste_btn.click(paste, [model_id, layer, editor, st], [pasted, st, status], api_name="rewrite_paste")
    paste_at_btn.click(paste_at, [model_id, layer, st, px, py], [pasted, st, status], api_name="rewrite_paste_at")
    pasted.select(paste_click, [model_id, layer, st], [pasted, st, status], api_visibility="private")
    runs = [
        execute_btn.click(gpu(duration=120)(execute), [model_id, layer, rank, st], [gallery, st, history, status],
                          api_name="rewrite_execute", **HEAVY),
        erase_btn.click(gpu(duration=120)(erase), [model_id, layer, rank, st], [gallery, st, history, status],
                        api_name="rewrite_erase", **HEAVY),
        rule_in.upload(gpu(duration=120)(upload), [model_id, layer, rank, rule_in, st],
                       [gallery, st, history, status, tray, layer, rank], api_name="rewrite_rule_upload", **HEAVY),
        preset_btn.click(gpu(duration=120)(preset), [model_id, layer, rank, presets, st],
                         [gallery, st, history, status, tray, layer, rank], api_name="rewrite_preset", **HEAVY),
        stats_btn.click(gpu(duration=300)(compute_stats), [model_id, layer, samples], stats_out, api_name="rewrite_stats", **HEAVY),
    ]
    runs[-1].then(stats_info, [model_id, layer], stats_md, api_visibility="private")
    stop_btn.click(None, None, None, cancels=runs)
    toggle_btn.click(toggle, [model_id, st], [gallery, st, status], api_name="rewrite_toggle")
    undo_btn.click(undo, [model_id, st], [gallery, st, history, status], api_name="rewrite_undo")
    download_btn.click(download, [model_id, layer, rank, st], [rule_out, status],
                       api_name="rewrite_rule_download")
    layer.change(stats_info, [model_id, layer], stats_md, api_name="rewrite_stats_info")

    @warn_on_error(5, status=4)
    def model_changed(m):
        model = loaded_model(m)
        names = list(preset_paths(model)) or [NO_PRESETS]
        settings = model_settings(model)
        return (gr.update(choices=list(model.layers), value=settings.rewrite_layer), settings.rewrite_rank,
                gr.update(choices=names, value=names[0]), gr.update(interactive=names != [NO_PRESETS]),
                gr.skip())
    return {"model_id": model_id, "load": [(show, [model_id, spec, st], [gallery, st, status])],
            "on_model": [(model_changed, [model_id], [layer, rank, presets, preset_btn, status]),
                         (show, [model_id, spec, st], [gallery, st, status])],
            "link": {"preset": presets}}


def _gen_outputs(gen):
    """Pass a generator's yields through (kept separate so ``yield from`` works in callers)."""
    yield from gen


def _pad(out):
    """Status yields of ``run_rule`` have 4 entries; replay's outputs have 7."""
    return tuple(out) + (gr.skip(),) * (7 - len(out)) if len(out) < 7 else out
