"""A model's working settings, read from its bundle config with one documented default rule.

Every tab and engine function that needs "the painting layer" or "the rewriting layer" asks
:func:`model_settings`, so a model whose config lacks them gets the same layers everywhere:

- ``paint_layer``: the config's ``paint_layer``; else ``layer4`` when the model has one (the
  layer GANPaint paints at on the gandissect ProGANs); else the layer 40% of the way in.
- ``rewrite_layer``: the config's ``rewrite_layer``; else the paint layer.
- ``rewrite_rank``: the config's ``rewrite_rank`` (what its presets were measured best with),
  an integer in 1..``MAX_RANK``; else 1.
- ``presets``: the config's ordered list of rule preset names; else none.
- ``metrics``: the config's measured metrics (``training.rebuild`` writes them); else {}.

A value of the wrong type or naming a layer the model lacks counts as missing.
"""
from __future__ import annotations

import dataclasses

MAX_RANK = 4


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    paint_layer: str
    rewrite_layer: str
    rewrite_rank: int
    presets: tuple[str, ...]
    metrics: dict
    photo_penalty: float = 1.0     # the Photo adaptation's weight-change penalty (core.photo.adapt)


def default_paint_layer(layers) -> str:
    layers = list(layers)
    if "layer4" in layers:
        return "layer4"
    return layers[max(0, round(0.4 * len(layers)) - 1)]


def model_settings(model) -> ModelSettings:
    """The settings of a :class:`core.Model` (or anything with ``layers`` and an optional
    ``bundle.config``)."""
    cfg = getattr(getattr(model, "bundle", None), "config", None) or {}
    layers = list(model.layers)

    def layer(key, default):
        value = cfg.get(key)
        return value if isinstance(value, str) and value in layers else default
    paint = layer("paint_layer", None) or default_paint_layer(layers)
    rank = cfg.get("rewrite_rank")
    rank = rank if isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= MAX_RANK else 1
    presets = cfg.get("presets") if isinstance(cfg.get("presets"), (list, tuple)) else ()
    presets = tuple(p for p in presets if isinstance(p, str))
    metrics = cfg.get("metrics") if isinstance(cfg.get("metrics"), dict) else {}
    penalty = cfg.get("photo_penalty")
    penalty = float(penalty) if isinstance(penalty, (int, float)) and not isinstance(penalty, bool) \
        and penalty >= 0 else 1.0
    return ModelSettings(paint, layer("rewrite_layer", paint), rank, presets, metrics, penalty)
