"""Rewriting a generator's rule (Bau et al., "Rewriting a Deep Generative Model", ECCV 2020).

A conv layer is treated as an associative memory ``W: key -> value``. The user shows *context*
(masks on a few images: "where the rule applies"), copies a piece of the layer's *value* from one
image and pastes it into another; the layer's weight is then changed only along the context's key
direction(s) ``D`` so that the pasted value appears::

    W' = W + ΔW,   ΔW[o, i, y, x] = sum_r Λ[o, r, y, x] * D[r, i]     (rank ``rank`` along C_in)

Pipeline (every step is a plain function; see ``core.rules.apply_rule`` for the whole thing)::

    stats = get_stats(model, layer)                   # C = E[k kᵀ] (python -m core stats ...)
    D = context_direction(model, layer, [(img, mask), ...], stats, rank=1)
    clip = copy_value(model, layer, obj_img, obj_mask)
    target, region = paste_target(model, layer, paste_img, clip, paste_center(model, layer, paste_mask))
    edit = rewrite(model, layer, D, paste_img, target, region, stats)    # -> WeightEdit(layer, Λ, D)

Keys and values (what the original code uses, davidbau/rewriting):

- ProGAN: key = the conv input (after PixelNorm and the 2x up-sampling), value = the raw conv
  output before scale, bias and activation (``generator.layer_value``): linear in W, so the update
  has a least-squares closed form.
- StyleGAN2: key = ``x * s`` (after style modulation, before the conv; half the output resolution
  on up-sampling layers), value = the layer output after demodulation, noise, bias and activation.
  Demodulation is recomputed from the edited weight, so the value is not linear in W and the
  update is iterative (Levenberg–Marquardt on Λ).

Conventions: ``model`` is a :class:`core.Model` (its bundle's truncation/noise defaults are used)
or a bare generator (truncation 1, noise ``"buffers"``). Image numbers index the seed-1 latent
stream. Masks are float ``[H, W]`` in [0, 1] (or bool), normally at image resolution; any size is
accepted and resized to the feature grid with antialiased bilinear interpolation (what PIL's
bilinear resize of the original's mask PNGs does), values below 1/512 dropped (they would round
to 0 in the original's 8-bit masks). ``C`` arguments take a :class:`KeyStats` or a ``[C_in, C_in]``
tensor. Long calls take ``progress(done, total, loss)`` (loss is None where there is none) and
``stop()`` (return True to stop: a rewrite then returns what it has so far; statistics return the
images done so far). ``weight_deltas`` ({layer: ΔW}, e.g. ``EditStack.weight_deltas()``) runs
everything on top of earlier weight edits; the returned edit is relative to that edited model.
"""
from .direction import (HIGHLIGHT_QUANTILE, Clip, SearchResult, context_direction, context_keys, copy_value,
                        direction_from_keys, paste_center, paste_target, query_direction,
                        render_with_value, search)
from .keys import (MissingStatsError, RewriteError, bounding_box, edit_delta, layer_keys, layer_values,
                   low_rank_delta, project_weight, resize_mask)
from .solvers import (CLOSED_FORM_RIDGE, ERASE_UNITS, GN_ITERS, LOWRANK_LR, LOWRANK_NITER, METHODS,
                      ORIGINAL_LR, ORIGINAL_NITER, ORIGINAL_PITER, erase, erase_target, erase_units,
                      region_loss, rewrite)
from .stats import (DEFAULT_STATS_BATCH, DEFAULT_STATS_SAMPLES, KeyStats, collect_key_stats, get_stats,
                    load_key_stats, save_key_stats, stats_path, whitening)

__all__ = ["KeyStats", "collect_key_stats", "save_key_stats", "load_key_stats", "get_stats",
           "stats_path", "whitening", "context_keys", "direction_from_keys", "context_direction",
           "query_direction", "search", "SearchResult", "Clip", "copy_value", "paste_center",
           "paste_target", "render_with_value", "rewrite", "region_loss", "erase", "erase_units",
           "erase_target", "low_rank_delta", "project_weight", "edit_delta", "layer_keys",
           "layer_values", "resize_mask", "bounding_box", "RewriteError", "MissingStatsError",
           "METHODS", "DEFAULT_STATS_BATCH", "DEFAULT_STATS_SAMPLES", "HIGHLIGHT_QUANTILE",
           "CLOSED_FORM_RIDGE", "GN_ITERS", "LOWRANK_NITER", "LOWRANK_LR", "ORIGINAL_NITER",
           "ORIGINAL_LR", "ORIGINAL_PITER", "ERASE_UNITS"]
