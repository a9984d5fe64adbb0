"""The Gradio app: one tab per demo. Tabs only turn widget values into ``core`` calls."""
from __future__ import annotations

import gradio as gr

from demos.context import AppContext

TITLE = "Painting with Neurons"
INTRO = ("Look inside an image GAN and edit it by hand: find the units that draw trees, domes or "
         "watermarks, switch them off, paint with them, edit your own photo, or rewrite a rule of the "
         "model. Runs on CPU with the embedded Toytown model.")


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    from demos import dissect, explore, paint, photo, rewrite, watermark
    from demos.cache import use_atomic_image_cache
    use_atomic_image_cache()       # a gallery file being served is never rewritten in place
    ctx = ctx or AppContext()
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                home = explore.build(ctx)
            with gr.Tab("Dissect", id="dissect"):
                dissect_tab = dissect.build(ctx)
            with gr.Tab("Paint", id="paint"):
                paint.build(ctx)
            with gr.Tab("Watermarks", id="watermark"):
                watermark.build(ctx)
            with gr.Tab("Photo", id="photo"):
                photo.build(ctx)
            with gr.Tab("Rewrite", id="rewrite"):
                rewrite_tab = rewrite.build(ctx)
        for tab in (home, dissect_tab, rewrite_tab):
            fn, inputs, outputs = tab["load"]
            demo.load(fn, inputs, outputs, api_visibility="private")
    return demo
