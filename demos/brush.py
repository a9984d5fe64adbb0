"""The brush of the Paint and Photo tabs: which concepts a model's paint layer offers, in which
colours, and the concept brush widget.

``ConceptBrush`` is a visible concept picker, each choice marked in its concept's colour, above
a ``StrokeCanvas`` whose brush takes the picked concept's colour. The concept of a stroke is the
picker's value when the stroke is applied. With "apply after every stroke" off, strokes wait on
the canvas; when the picker changes, the tab applies them first with the concept they were drawn
with (``current`` keeps it), so a stroke never changes concept after it was drawn.
"""
from __future__ import annotations

import colorsys
import hashlib

import gradio as gr

from core.edits import layer_shape
from core.paint import CatalogError, feature_mask, units_for
from core.settings import model_settings
from demos.context import DISPLAY_SIZE, AppContext
from demos.stroke_canvas import StrokeCanvas

BRUSH_WIDTH = 24 / DISPLAY_SIZE       # the brush's width, a fraction of the image's
MASK_SIZE = 256                       # the strokes' mask: pixels per side (pooled to the layer)
MAX_UNITS = 30                        # the strength slider: units switched on or off per stroke
DEFAULT_UNITS = 10
# concepts offered by the picker, in this order, when the catalog has units for them
PREFERRED = ("tree", "grass", "dome", "spire", "door", "window", "cloud", "roof", "sky", "wall")
NOT_PAINTED = ("watermark",)          # removed in the Watermark tab, not painted
INTERPRETABLE_IOU = 0.04              # a ranking whose best IoU is below this is not offered
RANKING = "causal"                    # causal ranking when the catalog has one, else IoU
FALLBACK_COLORS = {"sky": "#87ceeb", "cloud": "#f0f0f0", "grass": "#4caf50", "tree": "#1b5e20",
                   "wall": "#c9b79c", "window": "#1e88e5", "door": "#6d4c41", "roof": "#c62828",
                   "spire": "#7e57c2", "dome": "#ffb300", "watermark": "#ff00ff"}

# ------------------------------------------------------------------ which concepts, which colours
def catalog_for(ctx: AppContext, model, layer: str) -> dict:
    """The model's catalog of ``layer`` (``AppContext.catalog``: shipped, from its catalog repo,
    or dissected in the app). Raises CatalogError when there is none or it is unreadable."""
    cat = ctx.catalog(model, layer)
    if cat is None:
        raise CatalogError(f"model {model.name!r} has no unit catalog for {layer} yet: dissect "
                           f"{layer} in the Dissect tab (Dissect this layer), then paint")
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
    """The picker's concepts: those with units in the catalog (PREFERRED order first), leaving out
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


def _name_color(name: str) -> str:
    """A fixed colour for a concept without one (the same in every run)."""
    hue = int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) / 0xFFFF
    return _hex([255 * v for v in colorsys.hsv_to_rgb(hue, 0.75, 0.9)])


def concept_colors(concepts, segmenter) -> list[str]:
    """The brush colour of each concept: its segmenter palette colour (fallback: a fixed table,
    then a colour made from its name)."""
    out = []
    seg_names = list(getattr(segmenter, "concepts", None) or [])
    palette = getattr(segmenter, "palette", None)
    for c in concepts:
        if palette is not None and c in seg_names and seg_names.index(c) < len(palette):
            out.append(_hex(palette[seg_names.index(c)]))
        else:
            out.append(FALLBACK_COLORS.get(c) or _name_color(c))
    return out


def concept_setup(ctx: AppContext, model_id: str | None = None):
    """(concepts, colours) of a model's paint layer (default: the default model), or fallbacks
    when it has no catalog there yet."""
    try:
        loaded = ctx.get(model_id)
        model = loaded.model
        try:
            cat = catalog_for(ctx, model, model_settings(model).paint_layer)
        except CatalogError:
            cat = None
        concepts = paintable_concepts(cat)
        return concepts, concept_colors(concepts, loaded.segmenter)
    except Exception:  # noqa: BLE001 - the app must build even before the model exists
        concepts = list(PREFERRED[:8])
        return concepts, concept_colors(concepts, None)


def brush_settings(mode, n_units) -> tuple[str, int]:
    """("draw"|"remove", number of units) from the widgets; clear errors, no clamping."""
    mode = str(mode or "Draw").strip().lower()
    if mode not in ("draw", "remove"):
        raise gr.Error(f"Mode must be Draw or Remove, got {mode!r}.")
    try:
        return mode, int(round(float(n_units)))
    except (TypeError, ValueError):
        raise gr.Error(f"Strength must be a number of units (1-{MAX_UNITS}), got {n_units!r}.")



def stroke_cells(mask, model, layer: str):
    """A canvas's painted pixels (HxW bool, ``StrokeCanvas``'s value), max-pooled to ``layer``'s
    feature grid; None when nothing is painted."""
    if mask is None:
        return None
    _, h, w = layer_shape(model, layer)
    cells = feature_mask(mask, (h, w))
    return cells if bool((cells > 0).any()) else None


NOTHING_PAINTED = "Nothing painted yet: pick a concept above the editor, brush over the image, then apply."


# ------------------------------------------------------------------ widgets


def _picker_css(elem_id: str, colors: list[str]) -> str:
    """Each choice of the picker gets a swatch of its colour."""
    rules = [f"#{elem_id}_concept label:nth-of-type({i}) {{ border-left: 14px solid {c}; }}"
             for i, c in enumerate(colors, 1)]
    return "<style>" + "\n".join(rules) + "</style>"


class ConceptBrush:
    """The picker (``concept``), the canvas (``canvas``, a ``StrokeCanvas`` with ``value``, e.g.
    ``StrokeCanvas.show(image)``) and the concept the canvas's waiting strokes were drawn with
    (``current``, a ``gr.State``). Build it inside a Blocks layout."""

    def __init__(self, concepts: list[str], colors: list[str], elem_id: str, live: bool = True,
                 size: int = MASK_SIZE, value=""):
        if len(colors) != len(concepts) or not concepts:
            raise ValueError("one brush colour per concept, and at least one concept")
        self.colors = dict(zip(concepts, colors))
        self.concept = gr.Radio(concepts, value=concepts[0], label="Concept to paint",
                                info="The brush draws in the concept's colour.",
                                elem_id=f"{elem_id}_concept")
        self.canvas = StrokeCanvas(value, size=size, display=DISPLAY_SIZE, brush=BRUSH_WIDTH,
                                   color=colors[0], live=live, elem_id=f"{elem_id}_canvas")
        # after the canvas: the style element's empty block then sits below it, not above
        self.elem_id = elem_id
        self.css = gr.HTML(_picker_css(elem_id, colors), padding=False, container=False,
                           min_height=0, js_on_load=None)
        self.current = gr.State(concepts[0])

    def offer(self, concepts: list[str], colors: list[str]):
        """Updates of the picker and its swatches for another model's concepts."""
        self.colors.update(zip(concepts, colors))
        return (gr.update(choices=concepts, value=concepts[0]),
                gr.update(value=_picker_css(self.elem_id, colors)))

    def check(self, concept) -> str:
        """``concept`` if the picker offers it, else a plain error."""
        if concept not in self.colors:
            raise gr.Error(f"Unknown concept {concept!r}: pick one of {', '.join(self.colors)}.")
        return concept

    def retint(self, concept: str):
        """The canvas update for a picker change: the brush takes the concept's colour (strokes
        already drawn keep theirs)."""
        return StrokeCanvas.restyle(color=self.colors[self.check(concept)])
