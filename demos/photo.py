"""Photo tab: put your own photo into the GAN, then paint on it with neurons.

1. Upload (or paste, or pick an example). ``core.photo.load_photo`` decodes it safely (EXIF
   rotation, colour modes, size limits, decompression bombs) and centre-crops / resizes it to the
   model's resolution; a :class:`core.photo.PhotoError` becomes a ``gr.Error`` and the session's
   earlier work is kept (the state is only replaced when a new inversion finishes).
2. **Invert** runs ``core.photo.invert`` (z + a feature residual at the paint layer) and then
   ``core.photo.adapt`` (image-specific ΔW on the fine layers) as ONE generator function, so the
   previews stream; the **Stop** button ends it at the next step and keeps the best result so
   far (inverted, adapted as far as it got), ready to paint on.
3. Paint on the adapted model with the concept brush (``demos.brush.ConceptBrush``), Draw /
   Remove, strength = number of units. Each stroke (or **Apply strokes**, with "apply after every
   stroke" off) pushes ``core.paint.paint_edit`` UnitEdits on top of the adaptation
   WeightEdits; ``InversionResult.render`` puts them on the inversion's ResidualEdit and renders
   through the model's shared Renderer; the output is
   ``core.photo.composite``: the original photo with only the changed region replaced.

Per-session state (``gr.State``, 30 min TTL) is a dict::

    {"model_id", "photo": [1,3,R,R] tensor (64 px: 48 KB), "big": 512x512x3 uint8 crop (768 KB),
     "inv": InversionResult (z + residual at the paint layer: 192x8x8 floats = 48 KB),
     "base": number of adaptation edits at the bottom of "stack",
     "stack": EditStack (adaptation ΔW of layer7..layer10 of the 64-px Toytown ProGAN:
              0.31 MB float32; paint masks are a few bytes each)}

so about 1.2 MB per session; no model object is ever stored.
"""
from __future__ import annotations

import os
import warnings

import gradio as gr
import numpy as np
from PIL import Image

import core
from core.edits import EditStack
from core.paint import CatalogError, paint_edit
from core.photo import PhotoError, adapt, composite, crop_resize, invert, load_photo, open_photo
from demos.brush import (DEFAULT_UNITS, MAX_UNITS, NOTHING_PAINTED, ConceptBrush, brush_settings,
                         catalog_for, concept_setup, stroke_cells)
from demos.context import (DISPLAY_SIZE, AppContext, StopFlags, display, error_text,
                           warn_on_error)
from demos.gpu import gpu
from demos.settings import HEAVY, STATE_TTL
from demos.sharing import SharePanel
from demos.stroke_canvas import StrokeCanvas

# steps of the two optimisations (tests lower them through the environment or by assignment)
INVERT_STEPS = int(os.environ.get("PWN_PHOTO_INVERT_STEPS", "150"))
ADAPT_STEPS = int(os.environ.get("PWN_PHOTO_ADAPT_STEPS", "300"))
PREVIEW_EVERY = int(os.environ.get("PWN_PHOTO_PREVIEW_EVERY", "10"))
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLES = ("toytown_777_0.png", "toytown_777_1.png", "toytown_777_2.png", "field_house.jpg",
            "hill_trees.jpg")
# real photographs: the app runs offline, so they come from the installed gradio package's media
# assets (a tower under a blue sky with branches; a lion), offered when present
REAL_PHOTOS_DIR = os.path.join(os.path.dirname(os.path.abspath(gr.__file__)), "media_assets", "images")
REAL_PHOTOS = ("tower.jpg", "lion.jpg")


def example_paths() -> list[str]:
    paths = [os.path.join(EXAMPLES_DIR, f) for f in EXAMPLES]
    paths += [os.path.join(REAL_PHOTOS_DIR, f) for f in REAL_PHOTOS]
    return [p for p in paths if os.path.isfile(p)]



class PhotoUpload(gr.Image):
    """``gr.Image`` that hands the uploaded file's path to the function *undecoded*: Gradio's own
    preprocessing opens the file with PIL first, so a damaged upload would fail there with a
    generic error instead of ``load_photo``'s clear message. Same frontend as ``gr.Image``."""

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            return None
        if getattr(payload, "path", None) and not str(getattr(payload, "url", "") or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


# ------------------------------------------------------------------ glue (no math here)
def _encoder(model):
    """The bundle's photo encoder, or None (then inversion starts from the best of several
    random latents)."""
    from core.encoder import EncoderError, load_encoder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_encoder(model)
    except (EncoderError, OSError):
        return None


def _fmt(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:.1f}"


def _progress_text(rec: dict, inv_psnr=None) -> str:
    stage = "Inverting" if rec["stage"] == "invert" else "Adapting the model to the photo"
    text = (f"**{stage}**: step {rec['step']}/{rec['steps']} · loss {rec['loss']:.4f} · "
            f"PSNR {_fmt(rec['psnr'])} dB")
    if inv_psnr is not None:
        text += f"  \nInversion: PSNR {_fmt(inv_psnr)} dB"
    return text


# ------------------------------------------------------------------ the tab
def build(ctx: AppContext):
    concepts, colors = concept_setup(ctx)
    ids = ctx.model_ids()
    stops = StopFlags()

    def _model(model_id):
        try:
            return ctx.get(model_id or ids[0])
        except (core.BundleError, OSError) as e:
            raise gr.Error(f"Cannot load model {model_id!r}: {error_text(e)}")

    @warn_on_error(8, status=2)
    def run_invert(model_id, upload, state, request: gr.Request, progress=gr.Progress()):
        """Generator: inversion then adaptation, streaming (photo, reconstruction, status); a
        problem shows in the status line, and the session's earlier work stays."""
        if not upload:
            raise gr.Error("Upload a photo first (or click one of the examples).")
        loaded = _model(model_id)
        model = loaded.model
        try:
            img = open_photo(upload)
            x = load_photo(img, model.resolution)
        except PhotoError as e:
            raise gr.Error(f"Cannot use this photo: {error_text(e)}", title="Photo not usable")
        big = np.asarray(crop_resize(img, DISPLAY_SIZE))
        shown = Image.fromarray(big)
        skip = (gr.skip(),) * 5                 # canvas, compare, result, info, state
        yield (shown, None, "Starting…", *skip)
        seg = loaded.segmenter
        encoder = ctx.cached(model_id or ids[0], "encoder", lambda: _encoder(model))
        with stops.running(request) as flag:       # Stop: both end with their best iterate
            for rec in invert(model, x, steps=INVERT_STEPS, encoder=encoder, segmenter=seg,
                              progress=progress, stop=flag.is_set, preview_every=PREVIEW_EVERY):
                if rec["done"]:
                    inv = rec["result"]
                yield (gr.skip(), display(rec["preview"]), _progress_text(rec), *skip)
            for rec in adapt(model, inv, x, steps=ADAPT_STEPS, segmenter=seg, progress=progress,
                             stop=flag.is_set, preview_every=PREVIEW_EVERY):
                if rec["done"]:
                    ada = rec["result"]
                yield (gr.skip(), display(rec["preview"]), _progress_text(rec, inv.psnr), *skip)
        state = {"model_id": model_id or ids[0], "photo": x.cpu(), "big": big, "inv": inv,
                 "base": len(ada.edits), "stack": EditStack(ada.edits),
                 "psnr": (inv.psnr, ada.psnr)}
        fitted = inv.render(model, state["stack"], ctx.renderer(state["model_id"]))[0].cpu()
        recon = display(fitted)
        if inv.stopped or ada.stopped:
            done = (f"**Stopped** during the {'inversion' if inv.stopped else 'adaptation'}: "
                    "kept the best result so far. ")
        else:
            done = "**Done.** "
        status = (f"{done}Inversion: PSNR **{_fmt(inv.psnr)} dB** ({inv.steps} steps, start: "
                  f"{inv.start}, {inv.seconds:.1f} s) · after adaptation of "
                  f"{', '.join(ada.layers)}: PSNR **{_fmt(ada.psnr)} dB** ({ada.steps} steps, "
                  f"{ada.seconds:.1f} s). Now paint on the reconstruction below.")
        yield (shown, recon, status, StrokeCanvas.show(fitted), (shown, shown), shown,
               _info(state), state)

    def _session(state):
        if not state or not isinstance(state, dict) or "inv" not in state:
            raise gr.Error("No inverted photo yet: upload a photo and press Invert first.")
        return _model(state["model_id"]).model, state

    def _info(state, note: str = "") -> str:
        n = len(state["stack"]) - state["base"]
        ip, ap = state["psnr"]
        text = (f"Inversion PSNR {_fmt(ip)} dB · adapted PSNR {_fmt(ap)} dB · "
                f"{n} paint edit(s)")
        if n:
            last = state["stack"][len(state["stack"]) - 1]
            text += f"  \nLast edit: **{last.label}** with units {', '.join(map(str, last.units))}"
        if note:
            text += f"  \n{note}"
        return text

    def _renders(state, before: bool = True):
        """(before, after) renders of the session's fitted photo, before and after its paint
        edits, at the model's size; ``before`` false: (None, after)."""
        model, renderer = _model(state["model_id"]).model, ctx.renderer(state["model_id"])
        inv = state["inv"]
        after = inv.render(model, state["stack"], renderer)[0].cpu()
        if not before:
            return None, after
        painted = len(state["stack"]) > state["base"]
        return (inv.render(model, EditStack(state["stack"][:state["base"]]), renderer)[0].cpu()
                if painted else after), after

    def _composites(state, before, after):
        """The photo / edited-photo pair and the edited photo: the original with only what the
        edit changed replaced (``core.photo.composite``)."""
        photo = Image.fromarray(state["big"])
        out = composite(photo, before, after)
        return (photo, out), out

    def _view(state, note: str = "", image=True, views=True):
        """canvas, before/after, composite, info, state (``image`` false: the canvas keeps its
        image and only learns its strokes were taken; ``views`` false: the composites wait for
        the canvas's ``settled`` event)."""
        before, after = _renders(state, before=views)   # a live stroke needs only "after"
        shown = _composites(state, before, after) if views else (gr.skip(), gr.skip())
        canvas = StrokeCanvas.show(after) if image else StrokeCanvas.ack()
        return canvas, *shown, _info(state, note), state

    def settled(state):
        """The painter paused after live strokes: the composites catch up."""
        if not state or not isinstance(state, dict) or "inv" not in state:
            return gr.skip(), gr.skip()
        return _composites(state, *_renders(state))

    def apply(mask, concept, mode, n_units, state, quiet=False, views=True):
        model, state = _session(state)
        concept = brush.check(concept)
        mode, n = brush_settings(mode, n_units)
        n = min(max(n, 1), MAX_UNITS)
        layer = state["inv"].layer
        fm = stroke_cells(mask, model, layer)
        if fm is None:
            if not quiet:
                gr.Info(NOTHING_PAINTED)
            return _view(state, image=False, views=views)
        try:
            cat = catalog_for(ctx, model, layer)
            edit = paint_edit(cat, layer, concept, fm, mode, n)
        except (CatalogError, ValueError) as e:
            raise gr.Error(f"Cannot {mode} {concept!r}: {error_text(e)}")
        note = f"{concept}: only {len(edit.units)} unit(s) in the catalog" if len(edit.units) < n else ""
        return _view({**state, "stack": state["stack"].push(edit)}, note, views=views)

    @warn_on_error(5, status=3)
    def apply_button(mask, concept, mode, n_units, state):
        return apply(mask, concept, mode, n_units, state)

    def apply_stroke(mask, concept, mode, n_units, state):
        """A stroke released on the canvas: always answered (so the canvas sends the strokes
        drawn meanwhile), a problem as a notice."""
        try:
            return apply(mask, concept, mode, n_units, state, quiet=True, views=False)
        except gr.Error as e:
            gr.Warning(e.message)
            return (StrokeCanvas.ack(),) + (gr.skip(),) * 4

    @warn_on_error(6, status=3)
    def switch_concept(mask, concept, drawn_with, mode, n_units, state):
        """The picker changed: strokes waiting on the canvas are applied with the concept they
        were drawn with (then the brush takes the new concept's colour: ``retint``)."""
        concept = brush.check(concept)
        out = (gr.skip(),) * 5
        if state and drawn_with in brush.colors and mask is not None:
            out = apply(mask, drawn_with, mode, n_units, state, quiet=True)
        return (*out, concept)

    @warn_on_error(5, status=3)
    def undo(state):
        _, state = _session(state)
        if len(state["stack"]) <= state["base"]:
            gr.Info("Nothing to undo.")
            return _view(state)
        return _view({**state, "stack": state["stack"].undo()})

    @warn_on_error(5, status=3)
    def reset(state):
        _, state = _session(state)
        return _view({**state, "stack": EditStack(state["stack"][:state["base"]])})

    # ---------------------------------------------------------------- layout
    gr.Markdown(
        "Edit **your own photo**: it is inverted into the GAN (a latent plus a small feature "
        "correction), the model's fine layers are adapted to it, and then you paint with "
        "neurons. The result keeps your photo everywhere except where the edit changed "
        "something. The model draws 64-px Toytown scenes, so photos of villages, fields and "
        "trees work best.")
    with gr.Row():
        model_id = gr.Textbox(ids[0], label="Model", visible=False)
    with gr.Row():
        with gr.Column():
            upload = PhotoUpload(type="filepath", sources=["upload", "clipboard"],
                                 label="Your photo (centre-cropped to a square)",
                                 elem_id="photo_upload", height=320)
            gr.Examples(example_paths(), inputs=[upload], cache_examples=False, label="Examples")
            gr.Markdown("*Examples: fresh Toytown renders (a seed never used in training), two "
                        "synthesised photo-like scenes and two real photographs (from gradio's "
                        "own media assets; this app runs offline). Real photos lie far outside "
                        "what a 64-px toy-town GAN can draw: expect a loose reconstruction.*")
            with gr.Row():
                invert_btn = gr.Button("Invert", variant="primary", elem_id="photo_invert")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="photo_stop")
        with gr.Column():
            shown = gr.Image(label="Photo (as the model sees it, cropped)", format="png",
                             type="pil", interactive=False, elem_id="photo_shown", height=320)
        with gr.Column():
            recon = gr.Image(label="Reconstruction", format="png", type="pil", interactive=False,
                             elem_id="photo_recon", height=320)
    status = gr.Markdown(elem_id="photo_status")
    with gr.Row():
        with gr.Column(scale=3):
            brush = ConceptBrush(concepts, colors, "photo")
            canvas = brush.canvas
        with gr.Column(scale=2):
            mode = gr.Radio(["Draw", "Remove"], value="Draw", label="Mode", elem_id="photo_mode")
            n_units = gr.Slider(1, MAX_UNITS, value=DEFAULT_UNITS, step=1,
                                label="Strength (number of units)", elem_id="photo_strength")
            live = gr.Checkbox(True, label="Apply after every stroke", elem_id="photo_live")
            apply_btn = gr.Button("Apply strokes", variant="primary", elem_id="photo_apply")
            with gr.Row():
                undo_btn = gr.Button("Undo", elem_id="photo_undo")
                reset_btn = gr.Button("Reset", elem_id="photo_reset")
            info = gr.Markdown(elem_id="photo_info")
    with gr.Row():
        compare = gr.ImageSlider(label="Photo / edited photo", format="png", type="pil",
                                 elem_id="photo_compare")
        result = gr.Image(label="Edited photo (PNG)", format="png", type="pil",
                          interactive=False, buttons=["download"], elem_id="photo_result")
    state = gr.State(None, time_to_live=STATE_TTL)

    def edited(state):
        """What the Share panel shares: the fitted and painted model of this photo."""
        model, state = _session(state)
        return model, state["stack"], (), "photo"
    SharePanel("photo", edited, [state])

    paint_outs = [canvas, compare, result, info, state]
    # inversion + adaptation (a generator) and painting: on a ZeroGPU Space these get a GPU
    invert_btn.click(gpu(duration=120)(run_invert), [model_id, upload, state],
                     [shown, recon, status] + paint_outs, api_name="photo_invert", **HEAVY)
    stop_btn.click(stops.stop, None, None, api_name="photo_stop")
    apply_btn.click(gpu(duration=15)(apply_button), [canvas, brush.concept, mode, n_units, state],
                    paint_outs, api_name="photo_paint")
    canvas.stroke(gpu(duration=15)(apply_stroke), [canvas, brush.concept, mode, n_units, state],
                  paint_outs, api_name="photo_stroke", trigger_mode="multiple",
                  show_progress="hidden")
    canvas.settled(gpu(duration=15)(settled), [state], [compare, result], api_name="photo_settled",
                   show_progress="hidden")
    live.change(lambda on: StrokeCanvas.restyle(live=bool(on)), [live], [canvas],
                api_visibility="private", show_progress="hidden")
    brush.concept.change(switch_concept, [canvas, brush.concept, brush.current, mode, n_units, state],
                         paint_outs + [brush.current], api_name="photo_concept",
                         show_progress="hidden").then(brush.retint, [brush.concept], [canvas],
                                                      api_visibility="private", show_progress="hidden")
    undo_btn.click(undo, [state], paint_outs, api_name="photo_undo")
    reset_btn.click(reset, [state], paint_outs, api_name="photo_reset")
    return {"outputs": [shown, recon, status] + paint_outs, "model_id": model_id}
