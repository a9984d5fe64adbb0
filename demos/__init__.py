"""The Gradio app: one tab per demo. Tabs only turn widget values into ``core`` calls."""
from __future__ import annotations

import gradio as gr

from demos.context import AppContext

TITLE = "Painting with Neurons"
INTRO = ("Look inside an image GAN and edit it by hand: find the units that draw trees, domes or "
         "watermarks, switch them off, paint with them, edit your own photo, or rewrite a rule of the "
         "model. Runs on CPU with the embedded Toytown model; pick another model above the tabs.")


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The app. Each tab module's ``build(ctx)`` lays out its tab and returns a dict: its hidden
    ``"model_id"`` component (the model picker sets it; the tab's ``.change`` handlers follow it)
    and, optionally: ``"on_model"``, ``[(fn, inputs, outputs), ...]`` run in order after the
    picker (or a link) changed the model; ``"load"``, one ``(fn, inputs, outputs[, options])``
    step run when the tab is first shown (for the tab a page opens on, by the event that restores
    a link's view); ``"link"``, {URL parameter: component} (demos/links.py); ``"preloaded"``,
    True when the tab is built showing the default model's view (its ``"load"`` step then runs
    only for a link that asks for another view)."""
    from demos import dissect, explore, links, models, paint, photo, rewrite, watermark
    from demos.cache import use_atomic_image_cache
    from demos.lean_sessions import use_lean_sessions
    use_atomic_image_cache()       # a gallery file being served is never rewritten in place
    use_lean_sessions()            # skipped outputs and session configurations cost no CPU
    ctx = ctx or AppContext()
    ctx.start_preloading()
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        top = gr.Column()
        specs, objects = {}, {}
        with gr.Tabs() as tabs:
            for label, tab_id, module in (("Explore", "explore", explore), ("Dissect", "dissect", dissect),
                                          ("Paint", "paint", paint), ("Watermarks", "watermark", watermark),
                                          ("Photo", "photo", photo), ("Rewrite", "rewrite", rewrite)):
                with gr.Tab(label, id=tab_id) as objects[tab_id]:
                    specs[tab_id] = module.build(ctx)
                    # shown in this page already
                    specs[tab_id]["loaded"] = gr.State(specs[tab_id].get("preloaded", False))
        with top:
            current_model = gr.State(ctx.default_source)     # the model every tab shows
            picker = models.build(ctx, list(specs.values()), current_model)
            notice = gr.Markdown(elem_id="link_notice")
            links.wire(demo, ctx, tabs, objects, specs, picker, notice, current_model)
    return demo
