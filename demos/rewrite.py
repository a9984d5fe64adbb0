"""Rewrite tab: change a rule of the model (Bau et al. 2020) by copy, paste and context.

Workflow (the original rewriting app's, see ``core.rewrite``): show samples by image number, pick
one, paint a region on its canvas; **Add to context** (the tray; click a thumbnail to remove it),
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

import gradio as gr

from core.settings import MAX_RANK, model_settings
from demos.brush import BRUSH_WIDTH, MASK_SIZE
from demos.context import DISPLAY_SIZE, AppContext, fit_to_content
from demos.gpu import gpu
from demos.rewrite_handlers import NO_PRESETS, STATS_SAMPLES, RewriteHandlers
from demos.rewrite_session import NO_HISTORY, Session, preset_paths
from demos.settings import HEAVY, STATE_TTL
from demos.sharing import SharePanel
from demos.stroke_canvas import StrokeCanvas
from demos.table import Table

HISTORY_HEADERS = ["#", "layer", "rank", "seconds", "label"]
START = "0-11"          # the samples the tab opens on


def build(ctx: AppContext):
    h = RewriteHandlers(ctx)
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
    # The tab opens on the default model's samples, rendered here once (as Explore's grid): a
    # first visit of the tab then needs no event.
    gallery0, session0, status0 = h.show(ids[0], START, Session(ids[0]))
    preloaded = isinstance(session0, Session)
    st = gr.State(session0 if preloaded else Session(ids[0]), time_to_live=STATE_TTL)
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
        spec = gr.Textbox(START, label="Image numbers", scale=2, elem_id="rewrite_numbers")
        show_btn = gr.Button("Show", scale=1, elem_id="rewrite_show")
    with gr.Row():
        execute_btn = gr.Button("Execute change", variant="primary", elem_id="rewrite_execute")
        erase_btn = gr.Button("Erase context", elem_id="rewrite_erase")
        stop_btn = gr.Button("Stop", variant="stop")
        toggle_btn = gr.Button("Toggle original", elem_id="rewrite_toggle")
        undo_btn = gr.Button("Undo", elem_id="rewrite_undo")
    status = gr.Markdown(status0 if preloaded else "", elem_id="rewrite_status")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(gallery0 if preloaded else None, label="Samples (click one to paint on it)",
                                 columns=4, height="auto",
                                 allow_preview=False, format="png", elem_id="rewrite_gallery")
            fit_to_content("rewrite_gallery")
            with gr.Row():
                search_spec = gr.Textbox("0-199", label="Search among", scale=2)
                search_btn = gr.Button("Search", scale=1)
                matches_btn = gr.Button("Show context matches", scale=1)
        with gr.Column(scale=2):
            caption = gr.Markdown("Click an image in the gallery.", elem_id="rewrite_caption")
            canvas = StrokeCanvas(size=MASK_SIZE, display=DISPLAY_SIZE, brush=BRUSH_WIDTH, color="#ffffff",
                                  live=False, placeholder="Click a sample in the gallery to paint on it.",
                                  elem_id="rewrite_canvas")
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
    history = Table(NO_HISTORY, headers=HISTORY_HEADERS, label="Rewrites", elem_id="rewrite_history")
    with gr.Accordion("Rule files", open=False):
        with gr.Row():
            download_btn = gr.Button("Download rule JSON")
            rule_out = gr.File(label="Rule JSON", interactive=False)
            rule_in = gr.File(label="Upload a rule JSON (replays it)", file_types=[".json"], type="filepath")
    SharePanel("rewrite", h.edited, [model_id, st])
    with gr.Accordion("Statistics", open=False):
        stats_md = gr.Markdown(h.stats_info(ids[0], layer0) if layer0 else "")
        samples = gr.Slider(10, 5000, value=STATS_SAMPLES, step=10, label="Images")
        stats_btn = gr.Button("Compute statistics")
        stats_out = gr.Markdown()

    # ---------------------------------------------------------------- events
    show_btn.click(h.show, [model_id, spec, st], [gallery, st, status], api_name="rewrite_show")
    spec.submit(h.show, [model_id, spec, st], [gallery, st, status], api_visibility="private")
    gallery.select(h.select, [model_id, st], [canvas, caption, st], api_visibility="private")
    image_no = gr.Number(visible=False)
    image_no.change(h.open_image, [model_id, st, image_no], [canvas, caption, st], api_name="rewrite_open")
    context_btn.click(h.add_context, [model_id, canvas, st], [tray, st, status, canvas],
                      api_name="rewrite_add_context")
    tray.select(h.remove_context, [model_id, st], [tray, st, status], api_visibility="private")
    clear_btn.click(h.clear_context, [model_id, st], [tray, st, status], api_name="rewrite_clear_context")
    search_btn.click(h.search, [model_id, layer, search_spec, st], [gallery, st, status], api_name="rewrite_search")
    matches_btn.click(h.show_matches, [model_id, layer, st], [gallery, st, status], api_name="rewrite_matches")
    copy_btn.click(h.copy, [model_id, layer, canvas, st], [copied, pasted, st, status, canvas],
                   api_name="rewrite_copy")
    paste_btn.click(h.paste, [model_id, layer, canvas, st], [pasted, st, status, canvas], api_name="rewrite_paste")
    paste_at_btn.click(h.paste_at, [model_id, layer, st, px, py], [pasted, st, status], api_name="rewrite_paste_at")
    pasted.select(h.paste_click, [model_id, layer, st], [pasted, st, status], api_visibility="private")
    runs = [
        execute_btn.click(gpu(duration=120)(h.execute), [model_id, layer, rank, st], [gallery, st, history, status],
                          api_name="rewrite_execute", **HEAVY),
        erase_btn.click(gpu(duration=120)(h.erase), [model_id, layer, rank, st], [gallery, st, history, status],
                        api_name="rewrite_erase", **HEAVY),
        rule_in.upload(gpu(duration=120)(h.upload), [model_id, layer, rank, rule_in, st],
                       [gallery, st, history, status, tray, layer, rank], api_name="rewrite_rule_upload", **HEAVY),
        preset_btn.click(gpu(duration=120)(h.preset), [model_id, layer, rank, presets, st],
                         [gallery, st, history, status, tray, layer, rank], api_name="rewrite_preset", **HEAVY),
        stats_btn.click(gpu(duration=300)(h.compute_stats), [model_id, layer, samples], stats_out, api_name="rewrite_stats", **HEAVY),
    ]
    runs[-1].then(h.stats_info, [model_id, layer], stats_md, api_visibility="private")
    stop_btn.click(None, None, None, cancels=runs)
    toggle_btn.click(h.toggle, [model_id, st], [gallery, st, status], api_name="rewrite_toggle")
    undo_btn.click(h.undo, [model_id, st], [gallery, st, history, status], api_name="rewrite_undo")
    download_btn.click(h.download, [model_id, layer, rank, st], [rule_out, status],
                       api_name="rewrite_rule_download")
    layer.change(h.stats_info, [model_id, layer], stats_md, api_name="rewrite_stats_info")
    return {"model_id": model_id, "load": (h.show, [model_id, spec, st], [gallery, st, status]),
            "preloaded": preloaded,
            "on_model": [(h.model_changed, [model_id], [layer, rank, presets, preset_btn, status]),
                         (h.show, [model_id, spec, st], [gallery, st, status])],
            "link": {"preset": presets}}
