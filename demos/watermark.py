"""Watermark tab: find the samples where the model draws a watermark, switch off the units that
draw it, and measure the watermark rate before and after.

Everything is judged by the bundle's segmenter (an image "has a watermark" when at least 0.5% of
its pixels are labelled ``watermark``). The units come from the painting layer's catalog: its
causal ranking when it has one, ordered by effect per collateral (units whose removal most reduces
watermark pixels while changing the rest of the picture least), else IoU; or,
optionally, from a region you mark on a sample (units most active there, relative to their 0.99
quantile). Removing units is one ``remove_units_edit`` on an ``EditStack``, rendered by the
model's shared Renderer (the layers before the painting layer run once per batch and are cached).
"""
from __future__ import annotations


import gradio as gr
import numpy as np
import pandas as pd
import torch

import core
from core.edits import EditStack, layer_shape
from core.images import make_grid, outline
from core.paint import (CatalogError, feature_mask, remove_units_edit, specific_score, units_for,
                        watermark_rate)
from core.settings import model_settings
from demos.brush import BRUSH_WIDTH, MASK_SIZE, catalog_for
from demos.context import (DISPLAY_SIZE, AppContext, display, error_text, fit_to_content, warn,
                           warn_on_error)
from demos.gpu import gpu
from demos.settings import HEAVY, STATE_TTL
from demos.sharing import SharePanel
from demos.stroke_canvas import StrokeCanvas
from demos.table import Table

CONCEPT = "watermark"
SCAN = "0-399"                  # image numbers searched for watermarked samples
RATE_NUMBERS = "100000-100199"  # 200 held-out samples for the rate (dissection never sees them)
MIN_FRACTION = 0.005            # >= 0.5% watermark pixels = "has a watermark"
SHOW = 12                       # watermarked samples in the before/after grids
MAX_UNITS = 40                  # at most this many units listed (the slider offers those listed)
DEFAULT_UNITS = 5                     # more of these entangled units repaint the scene
RANKING = "specific"                 # causal effect per collateral (core.paint.units_for)
BATCH = 50
TILE = 128                      # grid tiles are upscaled (nearest) to this size
SOURCES = ("catalog ranking", "marked region")
UNIT_HEADERS = ["rank", "unit", "score", "unit label"]
OUTLINE = (255, 0, 255)         # border of the pixels the segmenter calls watermark



def _segmenter(loaded):
    seg = loaded.segmenter
    if seg is None:
        raise gr.Error(f"Model {loaded.model.name!r} has no segmenter, so watermarks cannot be "
                       "found or counted.")
    if CONCEPT not in seg.concepts:
        raise gr.Error(f"This model's segmenter has no {CONCEPT!r} concept (it knows "
                       f"{', '.join(seg.concepts)}).")
    return seg, seg.concepts.index(CONCEPT)


def _labels(model, renderer, seg, numbers, stack: EditStack, progress=None,
            desc="") -> torch.Tensor:
    """Segmenter labels [N,H,W] of image numbers under ``stack``, in batches, through the
    model's shared Renderer (the prefix up to the painting layer is computed once per batch)."""
    r = renderer
    z = model.sample_z(numbers)
    out = []
    starts = range(0, len(z), BATCH)
    for i in (progress.tqdm(starts, desc=desc) if progress is not None else starts):
        images = r.render(z[i:i + BATCH], stack)
        out.append(seg.segment(images).cpu())
    return torch.cat(out)


def scan(memo: dict, model, renderer, seg, wm: int, progress=None) -> list[tuple[int, float]]:
    """(image number, watermark share) of the watermarked samples among SCAN; kept in ``memo``
    (the model's, ``AppContext.cached``)."""
    key = ("scan", SCAN, MIN_FRACTION)
    if key not in memo:
        numbers = core.parse_image_numbers(SCAN)
        labels = _labels(model, renderer, seg, numbers, EditStack(), progress, "searching")
        share = (labels == wm).float().mean(dim=(1, 2)).tolist()
        memo[key] = [(n, s) for n, s in zip(numbers, share) if s >= MIN_FRACTION]
    return memo[key]


def rate(memo: dict, model, renderer, seg, wm: int, stack: EditStack, units: tuple,
         progress=None) -> float:
    """Watermark rate over RATE_NUMBERS under ``stack``, kept in ``memo`` by the removed units."""
    key = ("rate", RATE_NUMBERS, MIN_FRACTION, model_settings(model).paint_layer, units)
    if key not in memo:
        labels = _labels(model, renderer, seg, core.parse_image_numbers(RATE_NUMBERS), stack,
                         progress,
                         "measuring" if units else "measuring (unedited)")
        memo[key] = watermark_rate(labels, wm, MIN_FRACTION)
    return memo[key]


def ranking_table(catalog: dict, n: int = MAX_UNITS) -> tuple[pd.DataFrame, str]:
    """The catalog's watermark units in the order they are switched off, with the score that
    orders them: causal effect per collateral (or causal effect, for entries without a
    collateral) when there is a causal ranking, else IoU."""
    labels = {int(u["unit"]): u.get("label", "") for u in catalog.get("units") or []
              if isinstance(u, dict) and "unit" in u}
    causal = (catalog.get("causal") or {}).get(CONCEPT)
    specific = bool(causal) and all(isinstance(e, dict) and "collateral" in e for e in causal)
    if specific:
        which, key = "causal effect per collateral", "effect"
    else:
        which, key = ("causal effect", "effect") if causal else ("IoU", "iou")
    entries = causal or (catalog.get("concepts") or {}).get(CONCEPT) or []
    scores = {int(e["unit"]): specific_score(e) if specific else float(e[key]) for e in entries
              if isinstance(e, dict) and "unit" in e and key in e}
    units = units_for(catalog, CONCEPT, n, RANKING)
    rows = [[i + 1, u, round(scores[u], 4) if u in scores else None, labels.get(u, "")]
            for i, u in enumerate(units)]
    return pd.DataFrame(rows, columns=UNIT_HEADERS), which


def marked_units(model, catalog: dict, layer: str, number: int, mask, n: int = MAX_UNITS):
    """Units most active inside ``mask`` (image-resolution bool) on image ``number``: mean
    activation in the marked feature cells divided by the unit's quantile_99 (1 when the catalog
    lacks it). Returns (units, scores), best first."""
    _, h, w = layer_shape(model, layer)
    fm = feature_mask(mask, (h, w)) > 0
    feats = model.features(model.sample_z([number]), layer)[0].cpu()      # [C,h,w]
    inside = feats[:, fm].mean(1)
    q = torch.ones(feats.shape[0])
    for u in catalog.get("units") or []:
        if isinstance(u, dict) and u.get("quantile_99") and 0 <= int(u["unit"]) < len(q):
            q[int(u["unit"])] = max(float(u["quantile_99"]), 1e-6)
    score = inside / q
    order = torch.argsort(score, descending=True)[:n]
    return [int(u) for u in order], [float(score[u]) for u in order]


def _tiles(images, seg, wm: int, show_outline: bool) -> list:
    """Display tiles of ``images``; with ``show_outline`` the segmenter's watermark pixels are
    outlined, so one sees what is counted (and, after removal, what is left)."""
    tiles = [display(im, TILE) for im in images]
    if not show_outline or not tiles:
        return tiles
    labels = seg.segment(torch.as_tensor(images).float()).cpu().numpy()
    return [outline(t, lab == wm, OUTLINE) for t, lab in zip(tiles, labels)]


def _before_after(before: list, after: list, numbers, per_row: int = 6) -> np.ndarray:
    """Each sample's "after" right below its "before": rows of up to ``per_row`` samples, each
    followed by the same samples after the edit (a slider over two grids would compare
    different images on its two sides)."""
    per_row = min(per_row, len(before))
    blank = np.full_like(np.asarray(before[0]), 255)
    tiles, caps = [], []
    for i in range(0, len(before), per_row):
        pad = per_row - len(before[i:i + per_row])
        nums = list(numbers[i:i + per_row])
        tiles += list(before[i:i + per_row]) + [blank] * pad + list(after[i:i + per_row]) + [blank] * pad
        caps += [f"#{k} before" for k in nums] + [""] * pad + [f"#{k} after" for k in nums] + [""] * pad
    return np.asarray(make_grid(tiles, nrow=per_row, captions=caps))


# ------------------------------------------------------------------ the tab
def build(ctx: AppContext):
    ids = ctx.model_ids()

    def _catalog(model):
        layer = model_settings(model).paint_layer
        try:
            return catalog_for(ctx, model, layer), layer
        except CatalogError as e:
            raise gr.Error(f"No watermark units: {e}")

    def slider(n: int):
        """The units slider offers exactly the ``n`` units listed."""
        return gr.update(maximum=n, value=min(DEFAULT_UNITS, n))

    def units_table(model_id):
        try:
            model = ctx.model(model_id)
            layer = model_settings(model).paint_layer
            cat = catalog_for(ctx, model, layer)
            table, which = ranking_table(cat)
        except Exception as e:  # noqa: BLE001 - shown, not raised (also runs at page load)
            return (pd.DataFrame([], columns=UNIT_HEADERS), f"No watermark units to show: {error_text(e)}",
                    gr.skip())
        return table, (f"Top {len(table)} watermark units at `{layer}` of `{model.name}`, "
                       f"ranked by **{which}** (the score)."), slider(len(table))

    def found_gallery(model_id, show_outline, progress=None):
        """(gallery items, found) of the watermarked samples among SCAN (the first 48 shown)."""
        loaded = ctx.get(model_id)
        seg, wm = _segmenter(loaded)
        found = scan(loaded.memo, loaded.model, ctx.renderer(model_id), seg, wm, progress)
        images = ctx.renderer(model_id).render_numbers([n for n, _ in found[:48]]) if found else []
        return [(tile, f"#{n} · {100 * s:.1f}%") for tile, (n, s) in
                zip(_tiles(images, seg, wm, show_outline), found[:48])], found

    @warn_on_error(3, status=1)
    def find(model_id, show_outline=True, progress=gr.Progress()):
        gallery, found = found_gallery(model_id, show_outline, progress)
        if not found:
            return [], f"No watermarked samples among images {SCAN}.", gr.skip()
        numbers = [n for n, _ in found]
        text = (f"**{len(found)}** of {len(core.parse_image_numbers(SCAN))} samples ({SCAN}) have a "
                f"watermark (≥ {100 * MIN_FRACTION:.1f}% of pixels)"
                + ("; showing the first 48." if len(found) > 48 else "."))
        return gallery, text, numbers[0]

    @warn_on_error(5, status=3)
    def remove(model_id, n_units, source, picked, show_outline=True, progress=gr.Progress()):
        loaded = ctx.get(model_id)
        model = loaded.model
        seg, wm = _segmenter(loaded)
        try:
            n = int(round(float(n_units)))
        except (TypeError, ValueError):
            raise gr.Error(f"Units to switch off must be a number (0-{MAX_UNITS}).")
        if not 0 <= n <= MAX_UNITS:
            gr.Info(f"Units to switch off is 0 to {MAX_UNITS}; used {min(max(n, 0), MAX_UNITS)}.")
            n = min(max(n, 0), MAX_UNITS)
        cat, layer = _catalog(model)
        if source == SOURCES[1]:
            if not picked:
                raise gr.Error("No marked units yet: mark a watermark on a sample and press "
                               "'Find units in the marked region' first, or use the catalog "
                               "ranking.")
            units = [int(u) for u in picked][:n]
        else:
            try:
                units = units_for(cat, CONCEPT, n, RANKING) if n else []
            except CatalogError as e:
                raise gr.Error(f"No watermark units: {e}")
        stack = EditStack()
        if units:
            stack = stack.push(remove_units_edit(layer, units, label=f"remove {CONCEPT}"))
        r = ctx.renderer(model_id)
        found = scan(loaded.memo, model, r, seg, wm, progress)
        numbers = [n for n, _ in found][:SHOW] or core.parse_image_numbers(SCAN)[:SHOW]
        z = model.sample_z(numbers)
        before, after = r.render(z, EditStack()).cpu(), r.render(z, stack).cpu()
        before_rate = rate(loaded.memo, model, r, seg, wm, EditStack(), (), progress)
        after_rate = rate(loaded.memo, model, r, seg, wm, stack, tuple(units), progress) if units else before_rate
        which = "marked region" if source == SOURCES[1] else "catalog ranking"
        text = (f"Switched off **{len(units)}** unit(s) at `{layer}` ({which}): "
                f"{', '.join(map(str, units)) or 'none'}"
                + (f" (asked for {n}; only {len(units)} are listed)" if len(units) < n else "")
                + f".  \nWatermark rate on {len(core.parse_image_numbers(RATE_NUMBERS))} "
                f"held-out samples ({RATE_NUMBERS}): "
                f"**{100 * before_rate:.1f}% → {100 * after_rate:.1f}%**."
                + ("" if found else "  \n(No watermarked samples were found; the grids show the "
                   "first samples instead.)"))
        if after_rate > before_rate:
            text += "  \n" + warn("This edit makes the watermark rate worse: switching these "
                                  "units off draws more watermarks, not fewer.")
        return (_before_after(_tiles(before, seg, wm, show_outline), _tiles(after, seg, wm, show_outline),
                              numbers), f"{100 * before_rate:.1f}%", f"{100 * after_rate:.1f}%", text,
                {"model_id": model_id, "stack": stack, "numbers": numbers[:2]})

    def edited(removed):
        """What the Share panel shares: the units this session switched off."""
        if not removed:
            raise gr.Error("No edits yet: remove watermark units first.")
        return ctx.model(removed["model_id"]), removed["stack"], removed["numbers"], "watermark-removed"

    def load_sample(model_id, number, show_outline=True):
        """The sample to mark, its watermark pixels outlined (with ``show_outline``) so one sees
        what to brush over."""
        try:
            k = int(number)
        except (TypeError, ValueError):
            raise gr.Error("Type an image number to mark.")
        if not 0 <= k < core.images.MAX_IMAGE_NUMBER:
            raise gr.Error(f"Image numbers go from 0 to {core.images.MAX_IMAGE_NUMBER - 1:,}.")
        loaded = ctx.get(model_id)
        seg, wm = _segmenter(loaded)
        image = ctx.renderer(model_id).render_numbers([k])
        img = display(image[0], DISPLAY_SIZE)
        if show_outline:
            marked = (seg.segment(torch.as_tensor(image).float()) == wm)[0].cpu().numpy()
            img = outline(img, marked, OUTLINE)
            if not marked.any():
                gr.Info(f"The segmenter finds no watermark on image #{k}; 'Find watermarked "
                        "samples' lists images that have one.")
        return StrokeCanvas.show(img)

    @warn_on_error(5, status=1)
    def pick_units(model_id, number, mask):
        """``mask``: the canvas's strokes (HxW bool, or None); they stay on the canvas."""
        model = ctx.model(model_id)
        if mask is None:
            gr.Info("Nothing marked yet: load a sample, brush over the watermark, then press the "
                    "button.")
            return (gr.skip(),) * 5
        cat, layer = _catalog(model)
        try:
            k = int(number)
        except (TypeError, ValueError):
            raise gr.Error("Type the number of the sample you marked.")
        units, scores = marked_units(model, cat, layer, k, mask)
        labels = {int(u["unit"]): u.get("label", "") for u in cat.get("units") or []
                  if isinstance(u, dict) and "unit" in u}
        table = pd.DataFrame([[i + 1, u, round(s, 4), labels.get(u, "")] for i, (u, s) in
                              enumerate(zip(units, scores))], columns=UNIT_HEADERS)
        note = (f"Units most active in the region you marked on image #{k} (mean activation "
                f"there / the unit's 0.99 quantile); 'Remove watermarks' now uses them.")
        return table, note, units, SOURCES[1], slider(len(units))

    # The tab opens on the default model's unit table, made here once (as Explore's grid): a
    # first visit of the tab then needs no event.
    table0, note0, slider0 = units_table(ids[0])
    preloaded = len(table0) > 0
    slider0 = slider0 if preloaded else {"maximum": MAX_UNITS, "value": DEFAULT_UNITS}

    # ---------------------------------------------------------------- layout
    gr.Markdown(
        "Some training images carried a watermark, so the model learned to draw one. Find the "
        "samples where it does, then switch off the units that draw it: everywhere, in every "
        "image, with one edit.")
    with gr.Row():
        model_id = gr.Textbox(ids[0], label="Model", visible=False)
        find_btn = gr.Button("Find watermarked samples", variant="secondary", scale=1,
                             elem_id="wm_find")
        found_md = gr.Markdown(f"Press **Find watermarked samples** to search images {SCAN}.",
                               elem_id="wm_found")
    show_outline = gr.Checkbox(True, label="Outline the pixels the segmenter calls watermark",
                               elem_id="wm_outline")
    gallery = gr.Gallery(label=f"Watermarked samples among {SCAN}", columns=8, fit_columns=False,
                         height="auto", allow_preview=False, format="png", interactive=False,
                         elem_id="wm_gallery")
    fit_to_content("wm_gallery")
    with gr.Row():
        with gr.Column(scale=2):
            units_md = gr.Markdown(note0 if preloaded else "", elem_id="wm_units_note")
            units_df = Table(table0, headers=UNIT_HEADERS, max_height=300, label="Watermark units",
                             elem_id="wm_units")
        with gr.Column(scale=3):
            n_units = gr.Slider(0, slider0["maximum"], value=slider0["value"], step=1,
                                label="Units to switch off", elem_id="wm_n")
            source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Units from",
                              elem_id="wm_source")
            remove_btn = gr.Button("Remove watermarks", variant="primary", elem_id="wm_remove")
            with gr.Row():
                rate_before = gr.Textbox("—", label="Watermark rate before", interactive=False,
                                         elem_id="wm_rate_before")
                rate_after = gr.Textbox("—", label="Watermark rate after", interactive=False,
                                        elem_id="wm_rate_after")
            result_md = gr.Markdown(elem_id="wm_result")
    compare = gr.Image(label="Watermarked samples: each row before, the row below after", format="png",
                       type="numpy", interactive=False, buttons=["download"], elem_id="wm_compare")
    with gr.Accordion("Mark a watermark yourself (optional)", open=False):
        gr.Markdown("Brush over a watermark on a sample; the units most active there (relative "
                    "to their 0.99 quantile) become the 'marked region' units.")
        with gr.Row():
            mark_number = gr.Number(value=None, label="Sample (image number)", precision=0,
                                    minimum=0, elem_id="wm_mark_number")
            mark_load = gr.Button("Load sample", elem_id="wm_mark_load")
            mark_pick = gr.Button("Find units in the marked region", variant="primary",
                                  elem_id="wm_mark_pick")
        mark_canvas = StrokeCanvas(size=MASK_SIZE, display=DISPLAY_SIZE, brush=BRUSH_WIDTH,
                                   color="#ff00ff", live=False,
                                   placeholder="Load a sample: its watermark pixels come outlined.",
                                   elem_id="wm_mark_canvas")
    picked = gr.State([], time_to_live=STATE_TTL)
    removed = gr.State(None, time_to_live=STATE_TTL)
    SharePanel("watermark", edited, [removed])

    heavy = gpu(duration=60)      # hundreds of renders: on a ZeroGPU Space these get a GPU
    find_btn.click(heavy(find), [model_id, show_outline], [gallery, found_md, mark_number],
                   api_name="watermark_find", **HEAVY)

    def redraw(model_id, show_outline, shown):
        """The outline checkbox redraws the found samples (nothing before the first search)."""
        return found_gallery(model_id, show_outline)[0] if shown else gr.skip()
    show_outline.change(redraw, [model_id, show_outline, gallery], gallery, api_visibility="private")
    remove_btn.click(heavy(remove), [model_id, n_units, source, picked, show_outline],
                     [compare, rate_before, rate_after, result_md, removed], api_name="watermark_remove",
                     **HEAVY)
    mark_load.click(load_sample, [model_id, mark_number, show_outline], [mark_canvas],
                    api_name="watermark_mark_load")
    mark_pick.click(pick_units, [model_id, mark_number, mark_canvas],
                    [units_df, units_md, picked, source, n_units],
                    api_name="watermark_mark_pick")
    units = (units_table, [model_id], [units_df, units_md, n_units])
    return {"model_id": model_id, "on_model": [units],
            "load": (*units, {"api_name": "watermark_init", "show_progress": "hidden"}),
            "preloaded": preloaded}
