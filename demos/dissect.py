"""Dissect tab: browse a layer's unit catalog, look at a unit, switch it off or on in a sample."""
from __future__ import annotations

import threading

import gradio as gr
import numpy as np

import core
from core.dissect import DissectionStopped, dissect, load_catalog, save_catalog, summary_table, top_images
from core.edits import EditStack, UnitEdit
from demos.context import AppContext, display, stoppable
from demos.settings import STATE_TTL

GALLERY_UNITS = 64      # tiles rendered per gallery view
TOP_SHOWN = 8


def _caption(u: dict) -> str:
    return f"unit {u['unit']} · {u['label']} · IoU {u['iou']:.2f}"


def _bars(u: dict, n: int = 6) -> str:
    """The unit's best concepts as an HTML bar chart."""
    items = sorted(u.get("concept_iou", {}).items(), key=lambda t: -t[1])[:n]
    if not items:
        return "<i>no concept above IoU 0.01</i>"
    top = max(v for _, v in items) or 1
    rows = "".join(
        f"<div style='display:flex;align-items:center;margin:2px 0'>"
        f"<span style='width:80px'>{c}</span>"
        f"<span style='display:inline-block;height:14px;width:{int(220 * v / top)}px;"
        f"background:#4f6bed'></span><span style='margin-left:6px'>{v:.3f}</span></div>"
        for c, v in items)
    return f"<div><b>Top concepts (IoU)</b>{rows}</div>"


class CatalogCache:
    """Catalogs and gallery tiles per (model, layer), shared by all sessions."""

    def __init__(self):
        self._lock = threading.Lock()
        self._catalogs: dict = {}
        self._tiles: dict = {}

    def catalog(self, model, layer):
        key = (model.name, layer)
        with self._lock:
            if key in self._catalogs:
                return self._catalogs[key]
        path = model.bundle.catalog_path(layer)
        cat = load_catalog(path, model=model, layer=layer) if path.exists() else None
        with self._lock:
            self._catalogs[key] = cat
        return cat

    def put(self, model, layer, cat):
        with self._lock:
            self._catalogs[(model.name, layer)] = cat
            self._tiles = {k: v for k, v in self._tiles.items() if k[:2] != (model.name, layer)}

    def tile(self, model, cat, unit: int):
        key = (model.name, cat["layer"], unit)
        with self._lock:
            if key in self._tiles:
                return self._tiles[key]
        _, overlay = top_images(model, cat, unit, count=1)[0]
        with self._lock:
            self._tiles[key] = overlay
        return overlay


def build(ctx: AppContext):
    cache = CatalogCache()

    def layer_choices(model_id):
        model = ctx.model(model_id)
        return [(f"{l}" + ("" if model.bundle.has_catalog(l) else " (no catalog)"), l) for l in model.layers]

    def default_layer(model_id):
        model = ctx.model(model_id)
        return model.bundle.config.get("paint_layer", model.layers[len(model.layers) // 2])

    def units_view(model_id, layer, concept):
        model = ctx.model(model_id)
        cat = cache.catalog(model, layer)
        if cat is None:
            return ([], [], f"**{layer}** has no catalog yet: press *Dissect this layer* below.",
                    gr.update(choices=["all"], value="all"))
        units = sorted(cat["units"], key=lambda u: -u["iou"])
        if concept and concept != "all":
            units = [u for u in units if u["label"] == concept]
        units = units[:GALLERY_UNITS]
        tiles = [(cache.tile(model, cat, u["unit"]), _caption(u)) for u in units]
        counts = cat.get("interpretable", {})
        summary = (f"**{layer}**: {len(cat['units'])} units, {cat['samples']} samples, "
                   f"protocol `{cat['protocol']}` — {cat.get('protocol_text', '')}  \n"
                   "Interpretable units: "
                   + (", ".join(f"{c} {n}" for c, n in counts.items() if n) or "none"))
        concepts = ["all"] + [c for c in cat["concept_list"] if counts.get(c)]
        return tiles, [u["unit"] for u in units], summary, gr.update(
            choices=concepts, value=concept if concept in concepts else "all")

    def show_unit(model_id, layer, shown_units, evt: gr.SelectData):
        if evt.index is None or evt.index >= len(shown_units):
            raise gr.Error("Pick a unit from the gallery.")
        return unit_details(model_id, layer, shown_units[evt.index])

    def unit_details(model_id, layer, unit):
        model = ctx.model(model_id)
        cat = cache.catalog(model, layer)
        if cat is None:
            raise gr.Error(f"{layer} has no catalog yet.")
        unit = int(unit)
        if not 0 <= unit < len(cat["units"]):
            raise gr.Error(f"Unit {unit} does not exist: {layer} has units 0-{len(cat['units']) - 1}.")
        u = cat["units"][unit]
        strip = [(display(ov, 192), f"#{n}") for n, ov in top_images(model, cat, unit, count=TOP_SHOWN)]
        info = (f"### {_caption(u)}\nthreshold {u['threshold']:.3f} (level {u.get('level', 0):.3f}), "
                f"0.99 quantile {u['quantile_99']:.3f}")
        return strip, _bars(u), info, unit

    def preview(model_id, layer, unit, image_number):
        model = ctx.model(model_id)
        cat = cache.catalog(model, layer)
        if cat is None or unit is None:
            raise gr.Error("Pick a unit first.")
        try:
            n = core.parse_image_numbers(str(int(image_number)))
        except (TypeError, ValueError) as e:
            raise gr.Error(f"Image number: {e}")
        u = cat["units"][int(unit)]
        off = EditStack().push(UnitEdit(layer, [int(unit)], label=f"unit {unit} off"))
        on = EditStack().push(UnitEdit(layer, [int(unit)], [u["quantile_99"]], label=f"unit {unit} on"))
        renderer = ctx.renderer(model_id)
        z = model.sample_z(n)
        images = [renderer.render(z, s)[0] for s in (EditStack(), off, on)]
        return [display(im, 256) for im in images]

    def run_dissection(model_id, layer, samples):
        loaded = ctx.get(model_id)
        if loaded.segmenter is None:
            raise gr.Error("This model has no segmenter, so it cannot be dissected here "
                           "(catalogs published with it can still be browsed).")
        samples = int(samples)
        if samples < 1:
            raise gr.Error("Use at least one sample.")

        def job(stop, status):
            return dissect(loaded.model, loaded.segmenter, layer, range(samples), stop=stop.is_set,
                           progress=lambda done, total: status.update(done=done, total=total))

        try:
            cat = yield from stoppable(job, lambda st: f"Dissecting {layer}: {st.get('done', 0)}/{samples} images…")
        except DissectionStopped:
            raise gr.Error("Dissection stopped.")
        path = loaded.model.bundle.catalog_path(layer)
        try:
            save_catalog(cat, path)
            where = f"saved to `{path}`"
        except OSError:
            where = "kept in memory (the bundle folder is not writable)"
        cache.put(loaded.model, layer, cat)      # the .then() below shows it
        yield f"Dissected `{layer}` over {samples} images; catalog {where}."

    with gr.Row():
        model_id = gr.Dropdown(ctx.model_ids(), value=ctx.model_ids()[0], label="Model", scale=2)
        layer = gr.Dropdown(layer_choices(ctx.model_ids()[0]), value=default_layer(ctx.model_ids()[0]),
                            label="Layer", scale=2, elem_id="dissect_layer")
        concept = gr.Dropdown(["all"], value="all", label="Concept filter", scale=2)
    summary = gr.Markdown()
    shown = gr.State([], time_to_live=STATE_TTL)
    gallery = gr.Gallery(label="Units sorted by IoU (click one)", columns=8, height=420,
                         allow_preview=False, format="png", elem_id="dissect_gallery")
    with gr.Row():
        with gr.Column(scale=3):
            unit_info = gr.Markdown("Click a unit to see its top images.")
            strip = gr.Gallery(label="Top images (mask: unit above its threshold)", columns=4,
                               height=260, allow_preview=False, format="png", elem_id="dissect_top")
        with gr.Column(scale=2):
            bars = gr.HTML()
            unit_no = gr.Number(label="Unit", precision=0, elem_id="dissect_unit")
            show_btn = gr.Button("Show unit")
    with gr.Row():
        image_no = gr.Number(7, label="Preview image number", precision=0)
        preview_btn = gr.Button("Preview: switch off / force on", variant="primary")
    with gr.Row():
        orig = gr.Image(label="Original", format="png", interactive=False)
        off_img = gr.Image(label="Unit switched off", format="png", interactive=False)
        on_img = gr.Image(label="Unit forced on (0.99 quantile)", format="png", interactive=False)
    with gr.Accordion("Dissect this layer", open=False):
        samples = gr.Slider(100, 2000, value=1000, step=100, label="Samples (image numbers 0..N-1)")
        dissect_btn = gr.Button("Dissect this layer")
        stop_btn = gr.Button("Stop", variant="stop")
        dissect_out = gr.Markdown()

    view_inputs = [model_id, layer, concept]
    view_outputs = [gallery, shown, summary, concept]
    layer.change(units_view, view_inputs, view_outputs, api_name="dissect_units")
    concept.input(units_view, view_inputs, view_outputs, api_visibility="private")
    model_id.change(lambda m: gr.update(choices=layer_choices(m), value=default_layer(m)), model_id, layer,
                    api_visibility="private")
    gallery.select(show_unit, [model_id, layer, shown], [strip, bars, unit_info, unit_no],
                   api_visibility="private")
    show_btn.click(unit_details, [model_id, layer, unit_no], [strip, bars, unit_info, unit_no],
                   api_name="dissect_unit")
    preview_btn.click(preview, [model_id, layer, unit_no, image_no], [orig, off_img, on_img],
                      api_name="dissect_preview")
    run = dissect_btn.click(run_dissection, [model_id, layer, samples], dissect_out, api_name="dissect_run",
                            concurrency_id="heavy", concurrency_limit=1)
    run.then(units_view, view_inputs, view_outputs, api_visibility="private")
    stop_btn.click(None, None, None, cancels=[run])
    return {"load": (units_view, view_inputs, view_outputs)}
