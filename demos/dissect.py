"""Dissect tab: browse a layer's unit catalog, look at a unit, switch it off or on in a sample.

A layer without a shipped catalog can be dissected here: the catalog, marked "computed here, N
samples", goes to the model's scratch folder (``Bundle.scratch``), never into the bundle, and is
used in place of the missing one. A shipped catalog (with its causal rankings) is never replaced.
A model without a segmenter of its own (a real GAN from the picker) is dissected with the
real-scene segmenter (``AppContext.scene_segmenter``), fewer samples by default on a CPU.
"""
from __future__ import annotations

import threading

import gradio as gr

import core
from core.dissect import DissectionStopped, concept_homes, dissect, save_catalog, top_images
from core.edits import EditStack, UnitEdit
from core.settings import model_settings
from demos.context import (AppContext, StopFlags, catalog_path, computed_catalog_path, display, error_text,
                           scene_segmenter_id, stoppable, warn)
from demos.settings import HEAVY, STATE_TTL

GALLERY_UNITS = 32      # tiles per gallery view: each is an image to fetch (a page with 64 opened
                        # 0.35 s slower); the concept filter and the Unit box reach the others
REAL_SCENE_SAMPLES = 200   # default for a real model: a 256 px GAN and a SegFormer on a CPU
TOP_SHOWN = 8
# how units get their label, in plain words (the catalog's protocol_text has the exact rule)
PLAIN_RULE = {
    "iqr": "labelled with the concept its firing tells the most about",
    "maxiou": "labelled with the concept it overlaps best (highest IoU)",
    "top1": "labelled with the concept its top 1% of activations overlaps best (highest IoU)",
}
BARS_RULE = {
    "iqr": ("The label is the concept the unit's firing tells the most about, not the longest "
            "bar: a big concept such as sky or grass can overlap more (higher IoU) and still "
            "say less about the unit."),
}


def _caption(u: dict) -> str:
    return f"unit {u['unit']} · {u['label']} · IoU {u['iou']:.2f}"


def _bars(u: dict, protocol: str, n: int = 6) -> str:
    """The unit's best concepts as an HTML bar chart, with the labelling rule in one sentence."""
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
    rule = BARS_RULE.get(protocol, "The label is the concept with the longest bar (highest IoU).")
    return f"<div><b>Top concepts (IoU)</b>{rows}<p><small>{rule}</small></p></div>"


class CatalogCache:
    """The Dissect tab's catalogs and gallery tiles per (model, layer), shared by all sessions."""

    def __init__(self, ctx: AppContext):
        self._ctx = ctx
        self._lock = threading.Lock()
        self._catalogs: dict = {}            # dissected here (in memory too: the cache folder
                                             # may not be writable)
        self._tiles: dict = {}

    def catalog(self, model, layer):
        """The catalog of ``layer`` (``AppContext.catalog``), else one dissected here and kept
        in memory, else None."""
        with self._lock:
            if (model.name, layer) in self._catalogs:
                return self._catalogs[(model.name, layer)]
        return self._ctx.catalog(model, layer, checked=True)

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
    cache = CatalogCache(ctx)
    stops = StopFlags()

    def layer_choices(model_id):
        model = ctx.model(model_id)

        def note(layer):
            if model.bundle.has_catalog(layer):
                return ""
            path, computed = catalog_path(model, layer), computed_catalog_path(model, layer)
            if path != computed:
                return " (catalog from the Hub)"
            return " (computed here)" if computed.is_file() else " (no catalog)"
        return [(layer + note(layer), layer) for layer in model.layers]

    def default_layer(model_id):
        return model_settings(ctx.model(model_id)).paint_layer

    def units_view(model_id, layer, concept):
        model = ctx.model(model_id)
        cat = cache.catalog(model, layer)
        if cat is None:
            return ([], [], f"**{layer}** has no catalog yet: press *Dissect this layer* below.",
                    gr.update(choices=["all"], value="all"), "")
        units = sorted(cat["units"], key=lambda u: -u["iou"])
        if concept and concept != "all":
            units = [u for u in units if u["label"] == concept]
        # where each concept lives, over every layer with a catalog, so a filter that finds
        # nothing here can say which layer to look at
        homes = concept_homes({name: c for name in model.layers if (c := cache.catalog(model, name))})
        units = units[:GALLERY_UNITS]
        tiles = [(cache.tile(model, cat, u["unit"]), _caption(u)) for u in units]
        counts = cat.get("interpretable", {})
        origin = cat.get("origin") or f"shipped with the model, {cat['samples']} samples"
        rule = PLAIN_RULE.get(cat["protocol"], "labelled with the concept it matches best")
        summary = (f"**{layer}**: {len(cat['units'])} units; catalog {origin}. Each unit is "
                   f"compared with where the segmenter sees each concept in {cat['samples']} "
                   f"sample images and {rule}.  \nInterpretable units: "
                   + (", ".join(f"{c} {n}" for c, n in counts.items() if n) or "none"))
        if concept in homes and homes[concept][0] != layer and not counts.get(concept):
            home, iou, n = homes[concept]
            summary += (f"  \nNo unit of {layer} is labelled **{concept}**; it lives best at **{home}** "
                        f"(best unit IoU {iou:.2f}, {n} units labelled with it): pick that layer above.")
        exact = f"Protocol `{cat['protocol']}`: {cat.get('protocol_text', '')}"
        concepts = [("all", "all")] + [
            (c if homes[c][0] == layer else f"{c} (best at {homes[c][0]})", c)
            for c in cat["concept_list"] if c in homes]
        values = [v for _, v in concepts]
        return tiles, [u["unit"] for u in units], summary, gr.update(
            choices=concepts, value=concept if concept in values else "all"), exact

    def checked_unit(model, layer, unit):
        """(catalog, unit number) for the unit box, or a ValueError saying what is wrong."""
        cat = cache.catalog(model, layer)
        if cat is None:
            raise ValueError(f"{layer} has no catalog yet: dissect it first (below).")
        last = len(cat["units"]) - 1
        if unit is None:
            raise ValueError(f"Type a unit number (0-{last}) or click a unit in the gallery.")
        if unit != int(unit) or not 0 <= unit <= last:
            raise ValueError(f"Unit {unit} does not exist: {layer} has units 0-{last}.")
        return cat, int(unit)

    def show_unit(model_id, layer, shown_units, evt: gr.SelectData):
        if evt.index is None or evt.index >= len(shown_units):
            return (gr.skip(),) * 4 + (warn("Pick a unit from the gallery."),)
        return unit_details(model_id, layer, shown_units[evt.index])

    def unit_details(model_id, layer, unit):
        """strip, bars, info, unit box, note; on a bad unit only the note changes."""
        model = ctx.model(model_id)
        try:
            cat, unit = checked_unit(model, layer, unit)
        except ValueError as e:
            return (gr.skip(),) * 4 + (warn(str(e)),)
        u = cat["units"][unit]
        strip = [(display(ov, 192), f"#{n}") for n, ov in top_images(model, cat, unit, count=TOP_SHOWN)]
        info = (f"### {_caption(u)}\nthreshold {u['threshold']:.3f} (level {u.get('level', 0):.3f}), "
                f"0.99 quantile {u['quantile_99']:.3f}")
        return strip, _bars(u, cat["protocol"]), info, unit, ""

    def preview(model_id, layer, unit, image_number):
        """original, switched off, forced on, note; on a bad input only the note changes."""
        model = ctx.model(model_id)
        try:
            cat, unit = checked_unit(model, layer, unit)
            if image_number is None:
                raise ValueError(f"Type an image number (0-{core.images.MAX_IMAGE_NUMBER - 1:,}) "
                                 "to preview.")
            n = core.parse_image_numbers(str(int(image_number)))
        except ValueError as e:
            return (gr.skip(),) * 3 + (warn(str(e)),)
        u = cat["units"][unit]
        off = EditStack().push(UnitEdit(layer, [int(unit)], label=f"unit {unit} off"))
        on = EditStack().push(UnitEdit(layer, [int(unit)], [u["quantile_99"]], label=f"unit {unit} on"))
        renderer = ctx.renderer(model_id)
        z = model.sample_z(n)
        images = [renderer.render(z, s)[0] for s in (EditStack(), off, on)]
        return [display(im, 256) for im in images] + [""]

    def run_dissection(model_id, layer, samples, request: gr.Request):
        loaded = ctx.get(model_id)
        model = loaded.model
        segmenter = loaded.segmenter
        if segmenter is None:
            yield f"Opening the real-scene segmenter {scene_segmenter_id()}…"
            try:
                segmenter = ctx.scene_segmenter()
            except Exception as e:  # noqa: BLE001 - offline, not cached, no transformers, ...
                yield warn(f"This model has no segmenter of its own and the real-scene segmenter "
                           f"could not be opened: {error_text(e)}")
                return
        if model.bundle.has_catalog(layer):
            yield warn(f"{layer} has a catalog shipped with the model; it is never replaced here. "
                       "Dissect a layer marked (no catalog).")
            return
        samples = int(samples)
        if samples < 1:
            yield warn("Use at least one sample.")
            return

        def job(stop, status):
            return dissect(model, segmenter, layer, range(samples), stop=stop.is_set,
                           progress=lambda done, total: status.update(done=done, total=total))

        try:
            with stops.running(request) as flag:
                cat = yield from stoppable(
                    job, lambda st: f"Dissecting {layer}: {st.get('done', 0)}/{samples} images…",
                    stop=flag)
        except DissectionStopped as e:
            yield f"**Stopped**: {e}. A stopped dissection keeps nothing: {layer}'s catalog is unchanged."
            return
        cat["origin"] = f"computed here, {samples} samples" + (
            "" if segmenter is loaded.segmenter else f", segmenter {segmenter.id}")
        try:      # never into the bundle: shipped files are read-only at run time
            save_catalog(cat, computed_catalog_path(model, layer))
            where = "saved in this server's cache"
        except OSError:
            where = "kept in memory (the cache folder is not writable)"
        cache.put(model, layer, cat)      # the .then() below shows it
        yield (f"Dissected `{layer}` over {samples} images; the catalog (marked computed here) is "
               f"{where} and used in place of the missing one.")

    # The tab opens on the default layer's units, rendered here once (as Explore's grid): a first
    # visit of the tab then needs no event.
    first = ctx.model_ids()[0]
    try:
        tiles0, shown0, summary0, concept0, exact0 = units_view(first, default_layer(first), "all")
    except Exception:  # noqa: BLE001 - the app still builds; the tab's "load" step says why
        tiles0, shown0, summary0, concept0, exact0 = None, [], "", {"choices": ["all"], "value": "all"}, ""
    with gr.Row():
        model_id = gr.Textbox(first, label="Model", visible=False)
        layer = gr.Dropdown(layer_choices(first), value=default_layer(first),
                            label="Layer", scale=2, elem_id="dissect_layer")
        concept = gr.Dropdown(concept0["choices"], value=concept0["value"], label="Concept filter", scale=2)
    summary = gr.Markdown(summary0)
    with gr.Accordion("The exact labelling rule", open=False):
        exact = gr.Markdown(exact0)
    shown = gr.State(shown0, time_to_live=STATE_TTL)
    gallery = gr.Gallery(tiles0, label=f"Units by IoU, best first: at most {GALLERY_UNITS} (click one)",
                         columns=8, fit_columns=False, height=420, allow_preview=False, format="png",
                         elem_id="dissect_gallery")
    with gr.Row():
        with gr.Column(scale=3):
            unit_info = gr.Markdown("Click a unit to see its top images.")
            strip = gr.Gallery(label="Top images (mask: unit above its threshold)", columns=4,
                               fit_columns=False, height=260, allow_preview=False, format="png",
                               elem_id="dissect_top")
        with gr.Column(scale=2):
            bars = gr.HTML()
            unit_no = gr.Number(label="Unit", precision=0, elem_id="dissect_unit")
            show_btn = gr.Button("Show unit")
    with gr.Row():
        image_no = gr.Number(7, label="Preview image number", precision=0)
        preview_btn = gr.Button("Preview: switch off / force on", variant="primary")
    note = gr.Markdown(elem_id="dissect_note")
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
    view_outputs = [gallery, shown, summary, concept, exact]
    layer.change(units_view, view_inputs, view_outputs, api_name="dissect_units")
    concept.input(units_view, view_inputs, view_outputs, api_visibility="private")
    def model_changed(model_id, current_layer):
        """The layers of the new model (the current one stays when it has it: a link's layer)."""
        names = ctx.model(model_id).layers
        keep = current_layer if current_layer in names else default_layer(model_id)
        return (gr.update(choices=layer_choices(model_id), value=keep),
                1000 if ctx.get(model_id).segmenter is not None else REAL_SCENE_SAMPLES)
    unit_outputs = [strip, bars, unit_info, unit_no, note]
    gallery.select(show_unit, [model_id, layer, shown], unit_outputs, api_visibility="private")
    show_btn.click(unit_details, [model_id, layer, unit_no], unit_outputs, api_name="dissect_unit")
    preview_btn.click(preview, [model_id, layer, unit_no, image_no], [orig, off_img, on_img, note],
                      api_name="dissect_preview")
    run = dissect_btn.click(run_dissection, [model_id, layer, samples], dissect_out, api_name="dissect_run",
                            **HEAVY)
    run.then(units_view, view_inputs, view_outputs, api_visibility="private")
    stop_btn.click(stops.stop, None, None, api_name="dissect_stop")
    def opened(model_id, layer, concept, unit):
        """A link's unit (when it names one), then the layer's view unless the page was built
        with it, in one event: the unit's top images are fetched before the layer's ~40 unit
        tiles, not among them."""
        built = shown0 and (model_id, layer, concept) == (first, default_layer(first), "all")
        if unit is not None:
            yield (gr.skip(),) * len(view_outputs) + tuple(unit_details(model_id, layer, unit))
        if not built:
            yield (*units_view(model_id, layer, concept), *(gr.skip(),) * len(unit_outputs))
        elif unit is None:              # nothing to send, but the event answers once
            yield (gr.skip(),) * (len(view_outputs) + len(unit_outputs))
    return {"model_id": model_id, "link": {"layer": layer, "unit": unit_no}, "preloaded": bool(shown0),
            "load": (opened, [*view_inputs, unit_no], view_outputs + unit_outputs),
            "on_model": [(model_changed, [model_id, layer], [layer, samples]),
                         (units_view, view_inputs, view_outputs)]}
