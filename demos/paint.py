"""Paint tab (GANPaint): paint concepts into a generated image with the units that draw them.

A concept picker (tree, grass, dome, ...) sits above the canvas (``demos.brush.ConceptBrush``, a
``demos.stroke_canvas.StrokeCanvas``): a stroke arrives as a small mask, max-pooled to the
painting layer's feature grid, and one ``core.paint.paint_edit`` of the picked concept (draw: set
the concept's top units to their draw values inside the mask; remove: zero them) is pushed onto the
session's ``EditStack``. The result is rendered by the model's shared, caching
``core.edits.Renderer`` (only the layers from the painting layer on re-run) and becomes the
canvas's new image, so strokes always land on what you see.

Session state (``gr.State``, 30 min TTL) is a small dict ``{model_id, image_number, stack}``: no
model, no features; the stack's masks are a few bytes each.
"""
from __future__ import annotations

import random

import gradio as gr
import pandas as pd

import core
from core.edits import EditStack
from core.images import MAX_IMAGE_NUMBER
from core.paint import CatalogError, paint_edit
from core.settings import model_settings
from demos.brush import (DEFAULT_UNITS, MAX_UNITS, NOTHING_PAINTED, RANKING, ConceptBrush,
                         brush_settings, catalog_for, concept_setup, stroke_cells)
from demos.context import DISPLAY_SIZE, AppContext, display, error_text, pixelated
from demos.gpu import gpu
from demos.settings import STATE_TTL
from demos.sharing import SharePanel
from demos.stroke_canvas import StrokeCanvas
from demos.table import Table

SUGGESTIONS = list(range(12))         # image numbers shown as suggestions
HEADERS = ["#", "layer", "concept", "mode", "units", "mask cells"]


# ------------------------------------------------------------------ per-model helpers (glue)
def painting_note(model) -> str:
    """How well each concept paints on ``model``: its bundle's measured insertion rises
    (``python -m core eval interventions``, kept in the config's metrics); "" without them."""
    cfg = getattr(getattr(model, "bundle", None), "config", None) or {}
    measured = (cfg.get("metrics") or {}).get("interventions") or {}
    rises = {c: r for c, r in (measured.get("insertion_rise") or {}).items()
             if isinstance(r, (int, float))}
    if not rises:
        return ""
    shown = ", ".join(f"{c} {r:+.2f}" for c, r in sorted(rises.items(), key=lambda kv: -kv[1]))
    return (f"Measured on this model ({measured.get('n_images', '?')} held-out samples, 10 units "
            f"painted over 1/16 of the image): the share of the stroke the segmenter then labels "
            f"with the concept rises by {shown}.")


# ------------------------------------------------------------------ rendering a session
def _render(ctx: AppContext, model_id, number: int, stack: EditStack):
    """One image under ``stack`` through the model's shared caching Renderer (``ctx.renderer``)."""
    model = ctx.model(model_id)
    return ctx.renderer(model_id).render(model.sample_z([number]), stack)[0].cpu()


def _edit_rows(stack: EditStack) -> pd.DataFrame:
    rows = []
    for i, e in enumerate(stack, 1):
        mode, _, concept = (getattr(e, "label", "") or "").partition(" ")
        cells = int((e.mask > 0).sum()) if getattr(e, "mask", None) is not None else "all"
        units = ", ".join(str(u) for u in getattr(e, "units", ()))
        rows.append([i, e.layer, concept or "?", mode or "?", units, cells])
    return pd.DataFrame(rows, columns=HEADERS)


def _info(model, state: dict, note: str = "") -> str:
    stack = state["stack"]
    n = state["image_number"]
    layer = model_settings(model).paint_layer
    text = f"**Image #{n}** of `{model.name}` · painting layer `{layer}` · {len(stack)} edit(s)"
    if stack:
        last = stack[len(stack) - 1]
        text += (f"  \nLast edit: **{last.label}** with {len(last.units)} unit(s): "
                 f"{', '.join(str(u) for u in last.units)}")
    if note:
        text += f"  \n{note}"
    return text


def _views(ctx: AppContext, state: dict, before: bool = True):
    """(before, after) PIL images of a session at the model's own size (scaled up crisply by
    the browser); ``before`` false: (None, after), one render less (a live stroke's canvas)."""
    mid, n = state["model_id"], state["image_number"]
    after = core.images.to_pil(_render(ctx, mid, n, state["stack"]))
    if not before:
        return None, after
    return (core.images.to_pil(_render(ctx, mid, n, EditStack())) if state["stack"] else after), after


def _view(ctx: AppContext, state: dict, note: str = "", image=True, views=True):
    """The outputs every paint event returns: number, canvas, before/after, result, table,
    info, state. With ``image`` false the canvas keeps its image and only learns its strokes
    were taken; with ``views`` false the before/after and result wait for the canvas's
    ``settled`` event (a live stroke)."""
    model = ctx.model(state["model_id"])
    if image or views:
        b, a = _views(ctx, state, before=views)
    canvas = StrokeCanvas.show(a) if image else StrokeCanvas.ack()
    shown = ((b, a), a) if views else (gr.skip(), gr.skip())
    return (state["image_number"], canvas, *shown, _edit_rows(state["stack"]),
            _info(model, state, note), state)


def _answered():
    """The outputs of a stroke that changed nothing: the canvas learns it was taken."""
    return (gr.skip(), StrokeCanvas.ack()) + (gr.skip(),) * 5


def _check_number(number) -> int:
    try:
        n = int(number)
        if float(number) != n:
            raise ValueError
    except (TypeError, ValueError):
        raise gr.Error(f"The image number must be a whole number, got {number!r}.") from None
    if not 0 <= n < MAX_IMAGE_NUMBER:
        raise gr.Error(f"Image numbers go from 0 to {MAX_IMAGE_NUMBER - 1:,}; got {n:,}.")
    return n


# ------------------------------------------------------------------ the tab
def build(ctx: AppContext):
    concepts, colors = concept_setup(ctx)
    try:
        note = painting_note(ctx.model())
    except Exception:  # noqa: BLE001 - the app must build even before the model exists
        note = ""
    ids = ctx.model_ids()

    def load(model_id, number):
        n = _check_number(number)
        try:
            ctx.model(model_id)
        except (core.BundleError, OSError) as e:
            raise gr.Error(f"Cannot load model {model_id!r}: {error_text(e)}")
        state = {"model_id": model_id, "image_number": n, "stack": EditStack()}
        return _view(ctx, state)

    def load_random(model_id):
        return load(model_id, random.randrange(0, 100_000))

    def pick(model_id, evt: gr.SelectData):
        if evt.index is None or not 0 <= evt.index < len(SUGGESTIONS):
            raise gr.Error("Pick an image from the suggestions.")
        return load(model_id, SUGGESTIONS[evt.index])

    def suggestions(model_id):
        try:
            ctx.model(model_id)
        except Exception as e:  # noqa: BLE001 - shown, not raised, at page load
            return [], f"The model is not available yet: {error_text(e)}"
        images = ctx.renderer(model_id).render_numbers(SUGGESTIONS)
        return [(display(im, 128), f"#{n}") for im, n in zip(images, SUGGESTIONS)], ""

    def init(model_id, number):
        gallery, problem = suggestions(model_id)
        if problem:
            return (gr.skip(),) * 6 + (None, gallery, problem)
        model = ctx.model(model_id)
        try:
            catalog_for(ctx, model, model_settings(model).paint_layer)
        except CatalogError as e:
            problem = f"⚠️ Nothing to paint with yet: {error_text(e)}."
        return (*load(model_id, number), gallery, problem)

    def switch_model(model_id, number):
        """Another model from the picker: its image, and the concepts its catalog offers."""
        concepts, colors = concept_setup(ctx, model_id)
        return (*init(model_id, number), *brush.offer(concepts, colors), concepts[0])

    def _session(state):
        if not state or not isinstance(state, dict) or "stack" not in state:
            raise gr.Error("No image yet: type an image number and press Load, press Random, "
                           "or click a suggestion first.")
        return ctx.model(state["model_id"]), state

    def apply(mask, concept, mode, n_units, state, quiet=False, views=True):
        """Paint the strokes ``mask`` (the canvas's value: HxW bool, or None) with ``concept``.
        ``quiet``: say nothing when there is nothing to do; ``views`` false: leave the
        before/after and result to the canvas's ``settled`` event (a live stroke)."""
        if quiet and not state:
            return _answered()
        model, state = _session(state)
        concept = brush.check(concept)
        mode, n = brush_settings(mode, n_units)
        notes = []
        if not 1 <= n <= MAX_UNITS:
            clamped = min(max(n, 1), MAX_UNITS)
            gr.Info(f"Strength is 1 to {MAX_UNITS} units; used {clamped} instead of {n}.")
            notes.append(f"strength clamped to {clamped}")
            n = clamped
        layer = model_settings(model).paint_layer
        fm = stroke_cells(mask, model, layer)
        if fm is None:
            if not quiet:
                gr.Info(NOTHING_PAINTED)
            return _view(ctx, state, image=False, views=views)
        try:
            cat = catalog_for(ctx, model, layer)
            edit = paint_edit(cat, layer, concept, fm, mode, n, RANKING)
        except (CatalogError, ValueError) as e:
            raise gr.Error(f"Cannot {mode} {concept!r}: {error_text(e)}")
        if len(edit.units) < n:
            if not quiet:
                gr.Info(f"{concept}: the catalog has only {len(edit.units)} unit(s); used them all.")
            notes.append(f"{concept}: only {len(edit.units)} unit(s) in the catalog")
        state = {**state, "stack": state["stack"].push(edit)}
        return _view(ctx, state, "; ".join(notes), views=views)

    def apply_button(mask, concept, mode, n_units, state):
        return apply(mask, concept, mode, n_units, state)

    def apply_stroke(mask, concept, mode, n_units, live, state):
        """A stroke released on the canvas. It is always answered, even when refused, so the
        canvas sends the strokes drawn meanwhile; a problem shows as a notice."""
        if not live:
            return _answered()
        try:
            return apply(mask, concept, mode, n_units, state, quiet=True, views=False)
        except gr.Error as e:
            gr.Warning(e.message)
            return _answered()

    def switch_concept(mask, concept, drawn_with, mode, n_units, state):
        """The picker changed: strokes still waiting on the canvas are applied with the concept
        they were drawn with (then the brush takes the new concept's colour: ``retint``)."""
        concept = brush.check(concept)
        out = apply(mask, drawn_with, mode, n_units, state, quiet=True) \
            if drawn_with in brush.colors and mask is not None else (gr.skip(),) * 7
        return (*out, concept)

    def settled(state):
        """The painter paused after live strokes: the before/after and the result catch up."""
        if not state or not isinstance(state, dict) or "stack" not in state:
            return gr.skip(), gr.skip()
        b, a = _views(ctx, state)
        return (b, a), a

    def undo(state):
        model, state = _session(state)
        if not state["stack"]:
            gr.Info("Nothing to undo.")
            return _view(ctx, state)
        return _view(ctx, {**state, "stack": state["stack"].undo()})

    def reset(state):
        model, state = _session(state)
        return _view(ctx, {**state, "stack": state["stack"].clear()})

    def edited(state):
        """What the Share panel shares: the session's edits on its image's model."""
        model, state = _session(state)
        return model, state["stack"], [state["image_number"]], "painted"

    # The tab opens on the default model's first suggestion, rendered here once (as Explore's
    # grid): a first visit of the tab then needs no event. Not when the model cannot paint yet.
    try:
        first = init(ids[0], SUGGESTIONS[0])
    except Exception:  # noqa: BLE001 - the app still builds; the tab's "load" step says why
        first = None
    preloaded = first is not None and not first[-1]
    blank = (SUGGESTIONS[0], "", None, None, pd.DataFrame([], columns=HEADERS), "", None, None, "")
    n0, canvas0, compare0, result0, rows0, info0, state0, gallery0, _ = first if preloaded else blank

    # ---------------------------------------------------------------- layout
    gr.Markdown(
        "Paint with neurons: pick a concept above the image, brush over the image, and the "
        "units that draw that concept are switched on (**Draw**) or off (**Remove**) under your "
        "strokes. Only what the model can draw *there* appears: a door needs a wall."
        + (f"  \n{note}" if note else ""), elem_id="paint_intro")
    with gr.Row():
        model_id = gr.Textbox(ids[0], label="Model", visible=False)
        number = gr.Number(value=n0, label="Image number", precision=0, minimum=0,
                           scale=2, elem_id="paint_number")
        load_btn = gr.Button("Load", variant="primary", scale=1, elem_id="paint_load")
        random_btn = gr.Button("Random", scale=1, elem_id="paint_random")
    gallery = gr.Gallery(gallery0, label="Suggestions (click one)", columns=12, rows=1, height=140,
                         allow_preview=False, format="png", elem_id="paint_suggestions")
    problem = gr.Markdown(elem_id="paint_problem")
    with gr.Row():
        with gr.Column(scale=3):
            brush = ConceptBrush(concepts, colors, "paint", value=canvas0)
            canvas = brush.canvas
        with gr.Column(scale=2):
            mode = gr.Radio(["Draw", "Remove"], value="Draw", label="Mode", elem_id="paint_mode")
            n_units = gr.Slider(1, MAX_UNITS, value=DEFAULT_UNITS, step=1,
                                label="Strength (number of units)", elem_id="paint_strength")
            live = gr.Checkbox(True, label="Apply after every stroke", elem_id="paint_live")
            apply_btn = gr.Button("Apply strokes", variant="primary", elem_id="paint_apply")
            with gr.Row():
                undo_btn = gr.Button("Undo", elem_id="paint_undo")
                reset_btn = gr.Button("Reset", elem_id="paint_reset")
            info = gr.Markdown(info0, elem_id="paint_info")
    with gr.Row():
        compare = gr.ImageSlider(compare0, label="Before / after", format="png", type="pil",
                                 elem_id="paint_compare")
        result = gr.Image(result0, label="Result (PNG)", format="png", type="pil", interactive=False,
                          buttons=["download"], height=DISPLAY_SIZE * 3 // 4, elem_id="paint_result")
    pixelated("paint_compare", "paint_result")
    table = Table(rows0, headers=HEADERS, label="Edits (most recent last)", elem_id="paint_edits")
    state = gr.State(state0, time_to_live=STATE_TTL)
    SharePanel("paint", edited, [state])

    outs = [number, canvas, compare, result, table, info, state]
    heavy = gpu(duration=15)      # renders: on a ZeroGPU Space these get a GPU, elsewhere no-op
    load_btn.click(heavy(load), [model_id, number], outs, api_name="paint_load")
    number.submit(heavy(load), [model_id, number], outs, api_visibility="private")
    random_btn.click(heavy(load_random), [model_id], outs, api_name="paint_random")
    gallery.select(heavy(pick), [model_id], outs, api_name="paint_pick")
    apply_btn.click(heavy(apply_button), [canvas, brush.concept, mode, n_units, state], outs,
                    api_name="paint_apply")
    brush.concept.change(heavy(switch_concept),
                         [canvas, brush.concept, brush.current, mode, n_units, state],
                         outs + [brush.current], api_name="paint_concept", show_progress="hidden"
                         ).then(brush.retint, [brush.concept], [canvas], api_visibility="private",
                                show_progress="hidden")
    # the canvas sends one stroke (or the strokes drawn meanwhile) at a time and waits for the
    # answer, so no stroke is dropped or applied to an image it was not drawn on
    canvas.stroke(heavy(apply_stroke), [canvas, brush.concept, mode, n_units, live, state], outs,
                  api_name="paint_stroke", trigger_mode="multiple", show_progress="hidden")
    canvas.settled(heavy(settled), [state], [compare, result], api_name="paint_settled",
                   show_progress="hidden")
    live.change(lambda on: StrokeCanvas.restyle(live=bool(on)), [live], [canvas],
                api_visibility="private", show_progress="hidden")
    undo_btn.click(heavy(undo), [state], outs, api_name="paint_undo")
    reset_btn.click(heavy(reset), [state], outs, api_name="paint_reset")
    return {"outputs": outs, "model_id": model_id, "link": {"image": number},
            "load": (init, [model_id, number], outs + [gallery, problem],
                     {"api_name": "paint_init", "show_progress": "hidden"}), "preloaded": preloaded,
            "on_model": [(switch_model, [model_id, number],
                          outs + [gallery, problem, brush.concept, brush.css, brush.current]),
                         (lambda _model, concept: brush.retint(concept), [model_id, brush.concept],
                          [canvas])]}
