"""Paint tab (GANPaint): paint concepts into a generated image with the units that draw them.

The editor has one layer per concept (tree, grass, dome, ...): a stroke on the "tree" layer
becomes a mask (alpha > 0), max-pooled to the painting layer's feature grid, and one
``core.paint.paint_edit`` (draw: set the concept's top units to their draw values inside the mask;
remove: zero them) pushed onto the session's ``EditStack``. The result is rendered by the model's
shared, caching ``core.edits.Renderer`` (only the layers from the painting layer on re-run) and
becomes the editor's new background, so strokes always land on what you see.

Session state (``gr.State``, 30 min TTL) is a small dict ``{model_id, image_number, stack}``: no
model, no features; the stack's masks are a few bytes each.
"""
from __future__ import annotations

import random
import threading

import gradio as gr
import pandas as pd

import core
from core.edits import EditStack, layer_shape
from core.images import MAX_IMAGE_NUMBER
from core.paint import CatalogError, feature_mask, load_catalog, paint_edit, units_for
from core.settings import model_settings
from demos.context import AppContext, display, editor_layer_masks
from demos.gpu import gpu
from demos.settings import STATE_TTL

# concepts offered as editor layers, in this order, when the catalog has units for them
PREFERRED = ("tree", "grass", "dome", "spire", "door", "window", "cloud", "roof", "sky", "wall")
NOT_PAINTED = ("watermark",)          # removed in the Watermark tab, not painted
INTERPRETABLE_IOU = 0.04              # a ranking whose best IoU is below this is not offered
MAX_UNITS = 30
DEFAULT_UNITS = 10
SUGGESTIONS = list(range(12))         # image numbers shown as suggestions
RANKING = "causal"                    # causal ranking when the catalog has one, else IoU
FALLBACK_COLORS = {"sky": "#87ceeb", "cloud": "#f0f0f0", "grass": "#4caf50", "tree": "#1b5e20",
                   "wall": "#c9b79c", "window": "#1e88e5", "door": "#6d4c41", "roof": "#c62828",
                   "spire": "#7e57c2", "dome": "#ffb300", "watermark": "#ff00ff"}
HEADERS = ["#", "layer", "concept", "mode", "units", "mask cells"]

_lock = threading.Lock()
_catalogs: dict[str, tuple[float, dict]] = {}


# ------------------------------------------------------------------ per-model helpers (glue)
def catalog_for(model, layer: str) -> dict:
    """The model's catalog of ``layer`` (re-read when the file changes). Raises CatalogError."""
    bundle = model.bundle
    if bundle.path is None:
        raise CatalogError(f"model {model.name!r} lives only in memory and has no unit catalog")
    path = bundle.catalog_path(layer)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        raise CatalogError(f"model {model.name!r} has no unit catalog for {layer} yet "
                           f"(run `python -m core dissect` to make {path.name})") from None
    key = str(path)
    with _lock:
        hit = _catalogs.get(key)
        if hit is not None and hit[0] == mtime:
            return hit[1]
    cat = load_catalog(model, layer)
    with _lock:
        _catalogs[key] = (mtime, cat)
    return cat


def _has_units(catalog: dict, concept: str) -> bool:
    try:
        units_for(catalog, concept, 1, RANKING)
        return True
    except (CatalogError, ValueError, KeyError, TypeError):
        return False


def _interpretable(catalog: dict, concept: str) -> bool:
    """A concept is worth offering when a unit is labelled with it, its causal ranking has a
    positive effect, or its best IoU passes the interpretability threshold."""
    if any(isinstance(u, dict) and u.get("label") == concept for u in catalog.get("units") or []):
        return True
    causal = (catalog.get("causal") or {}).get(concept) or []
    if any(isinstance(e, dict) and float(e.get("effect", 0)) > 0 for e in causal):
        return True
    ranking = (catalog.get("concepts") or {}).get(concept) or []
    ious = [float(e["iou"]) for e in ranking if isinstance(e, dict) and "iou" in e]
    return bool(ious) and max(ious) > INTERPRETABLE_IOU


def paintable_concepts(catalog: dict | None) -> list[str]:
    """Editor layers: concepts with units in the catalog (PREFERRED order first), leaving out
    uninterpretable ones when some are interpretable. Without a catalog: the first 8 PREFERRED."""
    if not catalog:
        return list(PREFERRED[:8])
    names = list(catalog.get("concept_list") or [])
    for key in ("concepts", "causal"):
        names += [c for c in (catalog.get(key) or {}) if c not in names]
    names = [c for c in names if c not in NOT_PAINTED and _has_units(catalog, c)]
    good = [c for c in names if _interpretable(catalog, c)]
    names = good or names
    ordered = [c for c in PREFERRED if c in names] + [c for c in names if c not in PREFERRED]
    return ordered or list(PREFERRED[:8])


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb[:3])


def concept_colors(concepts, segmenter) -> list[str]:
    """Brush colours: the segmenter's palette colour of each concept (fallback: a fixed table)."""
    out = []
    seg_names = list(getattr(segmenter, "concepts", None) or [])
    palette = getattr(segmenter, "palette", None)
    for c in concepts:
        if palette is not None and c in seg_names and seg_names.index(c) < len(palette):
            out.append(_hex(palette[seg_names.index(c)]))
        else:
            out.append(FALLBACK_COLORS.get(c, "#ff0000"))
    return list(dict.fromkeys(out))


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


def _build_time_setup(ctx: AppContext):
    """(concepts, colours, painting note) from the default model, or fallbacks when it is not
    there yet."""
    try:
        loaded = ctx.get()
        model = loaded.model
        try:
            cat = catalog_for(model, model_settings(model).paint_layer)
        except CatalogError:
            cat = None
        concepts = paintable_concepts(cat)
        return concepts, concept_colors(concepts, loaded.segmenter), painting_note(model)
    except Exception:  # noqa: BLE001 - the app must build even before the model exists
        concepts = list(PREFERRED[:8])
        return concepts, concept_colors(concepts, None), ""


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


def _view(ctx: AppContext, state: dict, note: str = "", editor=True):
    """The outputs every paint event returns: number, editor, before/after, result, table,
    info, state."""
    mid, n = state["model_id"], state["image_number"]
    model = ctx.model(mid)
    before = _render(ctx, mid, n, EditStack())
    after = _render(ctx, mid, n, state["stack"]) if state["stack"] else before
    b, a = display(before), display(after)
    ed = {"background": a, "layers": [], "composite": a} if editor else gr.skip()
    return (state["image_number"], ed, (b, a), a, _edit_rows(state["stack"]),
            _info(model, state, note), state)


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


def _same(new, old) -> bool:
    """Whether the UnitEdits ``new`` equal ``old`` (layer, units, values, mask, label)."""
    if len(new) != len(old) or not new:
        return False
    for a, b in zip(new, old):
        if (getattr(a, "layer", None), getattr(a, "units", None), getattr(a, "values", None),
                getattr(a, "label", None)) != (getattr(b, "layer", None), getattr(b, "units", None),
                                               getattr(b, "values", None), getattr(b, "label", None)):
            return False
        ma, mb = getattr(a, "mask", None), getattr(b, "mask", None)
        if (ma is None) != (mb is None) or (ma is not None and (ma.shape != mb.shape
                                                               or not bool((ma == mb).all()))):
            return False
    return True


def brush_settings(mode, n_units) -> tuple[str, int]:
    """("draw"|"remove", number of units) from the widgets; clear errors, no clamping."""
    mode = str(mode or "Draw").strip().lower()
    if mode not in ("draw", "remove"):
        raise gr.Error(f"Mode must be Draw or Remove, got {mode!r}.")
    try:
        return mode, int(round(float(n_units)))
    except (TypeError, ValueError):
        raise gr.Error(f"Strength must be a number of units (1-{MAX_UNITS}), got {n_units!r}.")


# ------------------------------------------------------------------ the tab
def build(ctx: AppContext):
    concepts, colors, note = _build_time_setup(ctx)
    ids = ctx.model_ids()

    def load(model_id, number):
        n = _check_number(number)
        try:
            ctx.model(model_id)
        except (core.BundleError, OSError) as e:
            raise gr.Error(f"Cannot load model {model_id!r}: {e}")
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
            return [], f"The model is not available yet: {e}"
        images = ctx.renderer(model_id).render_numbers(SUGGESTIONS)
        return [(display(im, 128), f"#{n}") for im, n in zip(images, SUGGESTIONS)], ""

    def init(model_id, number):
        gallery, problem = suggestions(model_id)
        if problem:
            return (gr.skip(),) * 6 + (None, gallery, problem)
        return (*load(model_id, number), gallery, "")

    def _session(state):
        if not state or not isinstance(state, dict) or "stack" not in state:
            raise gr.Error("No image yet: type an image number and press Load, press Random, "
                           "or click a suggestion first.")
        return ctx.model(state["model_id"]), state

    def apply(editor_value, mode, n_units, state, quiet=False):
        if quiet and (not state or not editor_value):
            return (gr.skip(),) * 7
        model, state = _session(state)
        if editor_value is None or editor_value.get("background") is None:
            raise gr.Error("No image in the editor yet: load an image first.")
        mode, n = brush_settings(mode, n_units)
        notes = []
        if not 1 <= n <= MAX_UNITS:
            clamped = min(max(n, 1), MAX_UNITS)
            gr.Info(f"Strength is 1 to {MAX_UNITS} units; used {clamped} instead of {n}.")
            notes.append(f"strength clamped to {clamped}")
            n = clamped
        layer = model_settings(model).paint_layer
        _, h, w = layer_shape(model, layer)
        strokes = [(c, feature_mask(m, (h, w))) for c, m in editor_layer_masks(editor_value, concepts)]
        strokes = [(c, fm) for c, fm in strokes if bool((fm > 0).any())]
        if not strokes:
            if quiet:
                return (gr.skip(),) * 7
            gr.Info("Nothing painted yet: pick a concept layer (Layers panel), brush over the "
                    "image, then apply.")
            return _view(ctx, state, editor=False)
        try:
            cat = catalog_for(model, layer)
        except CatalogError as e:
            raise gr.Error(f"Cannot paint: {e}")
        stack = state["stack"]
        edits = []
        for concept, fm in strokes:
            try:
                edit = paint_edit(cat, layer, concept, fm, mode, n, RANKING)
            except CatalogError as e:
                raise gr.Error(f"Cannot {mode} {concept!r}: {e}")
            except ValueError as e:
                raise gr.Error(f"Cannot {mode} {concept!r}: {e}")
            if len(edit.units) < n:
                if not quiet:
                    gr.Info(f"{concept}: the catalog has only {len(edit.units)} unit(s); "
                            "used them all.")
                notes.append(f"{concept}: only {len(edit.units)} unit(s) in the catalog")
            edits.append(edit)
        if _same(edits, stack.edits[-len(edits):]):
            # the editor can report the strokes just applied once more (e.g. when it receives
            # the new background); re-applying them would change nothing but add rows
            if quiet:
                return (gr.skip(),) * 7
            gr.Info("These strokes are already applied.")
            return _view(ctx, state, editor=False)
        state = {**state, "stack": stack.push(*edits)}
        return _view(ctx, state, "; ".join(notes))

    def apply_button(editor_value, mode, n_units, state):
        return apply(editor_value, mode, n_units, state)

    def apply_stroke(editor_value, mode, n_units, live, state):
        if not live:
            return (gr.skip(),) * 7
        return apply(editor_value, mode, n_units, state, quiet=True)

    def undo(state):
        model, state = _session(state)
        if not state["stack"]:
            gr.Info("Nothing to undo.")
            return _view(ctx, state)
        return _view(ctx, {**state, "stack": state["stack"].undo()})

    def reset(state):
        model, state = _session(state)
        return _view(ctx, {**state, "stack": state["stack"].clear()})

    # ---------------------------------------------------------------- layout
    gr.Markdown(
        "Paint with neurons: choose a concept in the editor's **Layers** panel, brush over the "
        "image, and the units that draw that concept are switched on (**Draw**) or off "
        "(**Remove**) under your strokes. The brush colour is only a visual aid; the layer "
        "decides the concept. Only what the model can draw *there* appears: a door needs a wall."
        + (f"  \n{note}" if note else ""), elem_id="paint_intro")
    with gr.Row():
        model_id = gr.Dropdown(ids, value=ids[0], label="Model", scale=2, visible=len(ids) > 1)
        number = gr.Number(value=SUGGESTIONS[0], label="Image number", precision=0, minimum=0,
                           scale=2, elem_id="paint_number")
        load_btn = gr.Button("Load", variant="primary", scale=1, elem_id="paint_load")
        random_btn = gr.Button("Random", scale=1, elem_id="paint_random")
    gallery = gr.Gallery(label="Suggestions (click one)", columns=12, rows=1, height=140,
                         allow_preview=False, format="png", elem_id="paint_suggestions")
    problem = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=3):
            editor = gr.ImageEditor(
                type="numpy", image_mode="RGBA", format="png", sources=(), transforms=(),
                layers=gr.LayerOptions(layers=concepts, allow_additional_layers=False),
                brush=gr.Brush(colors=colors, default_color=colors[0], color_mode="fixed",
                               default_size=24),
                eraser=gr.Eraser(default_size=24), label="Paint here (one layer per concept)",
                canvas_size=(512, 512), elem_id="paint_editor")
        with gr.Column(scale=2):
            mode = gr.Radio(["Draw", "Remove"], value="Draw", label="Mode", elem_id="paint_mode")
            n_units = gr.Slider(1, MAX_UNITS, value=DEFAULT_UNITS, step=1,
                                label="Strength (number of units)", elem_id="paint_strength")
            live = gr.Checkbox(True, label="Apply after every stroke", elem_id="paint_live")
            apply_btn = gr.Button("Apply strokes", variant="primary", elem_id="paint_apply")
            with gr.Row():
                undo_btn = gr.Button("Undo", elem_id="paint_undo")
                reset_btn = gr.Button("Reset", elem_id="paint_reset")
            info = gr.Markdown(elem_id="paint_info")
    with gr.Row():
        compare = gr.ImageSlider(label="Before / after", format="png", type="pil",
                                 elem_id="paint_compare")
        result = gr.Image(label="Result (PNG)", format="png", type="pil", interactive=False,
                          buttons=["download"], elem_id="paint_result")
    table = gr.Dataframe(value=pd.DataFrame([], columns=HEADERS), headers=HEADERS,
                         label="Edits (most recent last)", interactive=False,
                         elem_id="paint_edits")
    state = gr.State(None, time_to_live=STATE_TTL)

    outs = [number, editor, compare, result, table, info, state]
    heavy = gpu(duration=15)      # renders: on a ZeroGPU Space these get a GPU, elsewhere no-op
    load_btn.click(heavy(load), [model_id, number], outs, api_name="paint_load")
    number.submit(heavy(load), [model_id, number], outs, api_visibility="private")
    random_btn.click(heavy(load_random), [model_id], outs, api_name="paint_random")
    gallery.select(heavy(pick), [model_id], outs, api_name="paint_pick")
    apply_btn.click(heavy(apply_button), [editor, mode, n_units, state], outs,
                    api_name="paint_apply")
    editor.input(heavy(apply_stroke), [editor, mode, n_units, live, state], outs,
                 api_name="paint_stroke", trigger_mode="always_last", show_progress="minimal")
    undo_btn.click(heavy(undo), [state], outs, api_name="paint_undo")
    reset_btn.click(heavy(reset), [state], outs, api_name="paint_reset")
    # on page load (gr.on without triggers and without inputs = the app's load event)
    gr.on(None, lambda: init(ids[0], SUGGESTIONS[0]), [], outs + [gallery, problem],
          api_name="paint_init", show_progress="hidden")
    return {"outputs": outs}
