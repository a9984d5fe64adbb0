"""Network dissection of a generator layer: which units light up where which concept is.

    import core
    from core.dissect import dissect, save_catalog, summary_table
    from core.segmenter import load_segmenter
    model = core.load_model("default")
    catalog = dissect(model, load_segmenter(model.bundle.path), "layer4", "0-999")
    save_catalog(catalog, model.bundle.catalog_path("layer4"))
    print(summary_table(catalog))

One generation pass over the sample set (image numbers of seed 1, see ARCHITECTURE.md), one forward per
batch: the layer's features are taken on the way to the image, the image is segmented, and running
statistics are updated. Nothing keeps the activations of all samples; every accumulator has a size
fixed by (units, concepts, bins, top_k, quantile sample), not by the number of images.

Statistics per unit
-------------------
* Raw activation quantiles (``quantiles``, ``quantile_99`` = GANPaint's draw value), over the raw
  (not upsampled) feature pixels: exact when all ``N*h*w`` values fit in the per-unit sample
  (``QUANTILE_SAMPLE`` = 65,536 values, fewer for very wide layers); otherwise exact quantiles of a
  seeded uniform random subset of ``m`` pixel positions per image. The catalog's ``quantile_method``
  says which and the standard rank error, about ``sqrt(q(1-q)/n)``.
* Top-k images by spatial maximum of the raw activation (running top-k).
* IoU with every concept of the segmenter. Activations are upsampled to the segmentation size with
  ``F.interpolate(mode="bilinear", align_corners=False)``: sample points at pixel centres, edge
  values repeated. That is what the original code computed (``grid_sample`` on a pixel-centre grid
  with ``align_corners=True`` semantics and ``padding_mode="border"``). ``align_corners=True`` in
  ``F.interpolate`` would instead put the *centres* of the corner cells on the *corners* of the
  output, stretching the map outward (a feature cell's centre at 8->64 would move up to 3.5 output
  pixels); it is wrong for feature maps whose cells tile the image.
  Counting uses one streaming histogram per (unit, concept): each unit's upsampled values are put
  on a uniform grid of ``bins`` (1,024) bins starting at the first batch's 5% raw quantile; the
  grid's width doubles (merging bin pairs) whenever a later batch reaches past its top, so no value
  is ever clipped at the top. For a threshold on a grid edge the counts
  ``|act >= t AND concept|``, ``|act >= t|`` and ``|concept|`` are then exact over all N images,
  and so is the quantile level of the threshold (``1 - |act >= t| / (N*H*W)``).
* Thresholds (``protocol``):
  - ``"maxiou"`` (default): for each unit and concept, the threshold among 24 candidate quantile
    levels ``1 - logspace(-3, log10(0.7), 24)`` (top 0.1% .. top 70% of the unit's upsampled
    activations over the whole sample; each level realised by the grid edge whose exact level is
    nearest) that maximises IoU. The unit's label is the concept with the best IoU; its
    ``threshold`` and ``level`` are that concept's.
  - ``"iqr"`` (the ICLR'19 GAN Dissection code's default for GANs): the same 24 candidate levels,
    but each (unit, concept) threshold maximises the information quality ratio
    ``IQR = I(M;Y) / H(M,Y)`` of the unit mask M and concept mask Y, computed from the same exact
    2x2 counts; label = concept with the best IQR; interpretable when IoU > 0.04 *and* IQR > 0.01.
  - ``"top1"`` (PNAS'20): one threshold per unit, the 0.99 quantile of the upsampled activations
    over the whole sample (to the grid's resolution; the exact level reached is recorded).
  IoU = I / (A + C - I) over all pixels of all images (no per-category image restriction).
  A unit is *interpretable* when its IoU > 0.04 (and, for "iqr", its IQR > 0.01).
  Chance matters with "maxiou": a mask covering a fraction a of the pixels, unrelated to a concept
  covering c, has IoU ``ac / (a + c - ac)`` (recorded per unit as ``iou_chance``); for large
  concepts (sky ~ 0.24 of Toytown's pixels) and low thresholds (top 70%) that is ~0.2, far above
  0.04, so under "maxiou" nearly every unit is "interpretable" as its largest concept. "iqr" is 0
  for unrelated masks and does not have this problem; ``iqr`` is recorded for every protocol.
* ``draw_values``: per concept, each unit's mean upsampled activation over the pixels labelled with
  the concept (exact: upsampling is linear, so the sum is taken on the feature grid with the
  transposed interpolation weights). Painting uses it as a natural "draw" value.

Catalog (``catalog/<layer>.json``; floats rounded to 4 decimals)
-----------------------------------------------------------------
::

    {"format": "painting-with-neurons-catalog", "version": 1, "model", "layer",
     "protocol": "maxiou" | "iqr" | "top1", "protocol_text", "quantile_method", "threshold_method",
     "iou_threshold": 0.04, ["iqr_threshold": 0.01,] "ranked_by": "iou" | "iqr",
     "samples": N, "image_numbers": "0-999", "seed": 1, "truncation", "noise",
     "segmenter": id, "concept_list": [...], "feature_shape": [C, h, w], "seg_size": [H, W],
     "upsampling", "candidate_levels": [...], "quantile_levels": [...],
     "concept_fraction": {concept: share of all segmented pixels},
     "units": [{"unit", "label", "iou", "iqr", "iou_chance", "interpretable", "threshold",
                "level" (exact quantile level of threshold), "quantile_99",
                "quantiles": {"0.01": v, ..., "0.999": v}, "top": [image numbers],
                "top_max": [spatial max], "concept_iou": {concept: IoU > 0.01}}, ...],
     "concepts": {concept: [{"unit", "iou", "iqr", "threshold"}, ...]},   # ranked by ranked_by;
                                                  # IoU > 0.01, and at least the top 20
     "draw_values": {concept: [mean upsampled activation where the concept is, per unit]},
                                                  # concepts never segmented have no entry
     "interpretable": {concept: units labelled with it that pass the rule},
     ["palette": [[r, g, b], ...],] "timing": {"generate_s", "segment_s", "stats_s"}}

For a unit, ``act >= threshold`` (after upsampling) is its mask for its label.
"""
from .catalog import (FORMAT, PROTOCOLS, VERSION, DissectionStopped, compact_numbers, dissect, load_catalog,
                      save_catalog)
from .figures import concept_homes, interpretable_rule, layer_chart, summary_table, top_images, unit_overlay
from .tally import (IOU_THRESHOLD, IQR_THRESHOLD, MAXIOU_LEVELS, QUANTILE_LEVELS, Tally, interpolation_matrix,
                    upsample)

__all__ = ["dissect", "DissectionStopped", "Tally", "save_catalog", "load_catalog",
           "summary_table", "interpretable_rule", "concept_homes", "layer_chart", "unit_overlay", "top_images", "upsample",
           "interpolation_matrix", "compact_numbers", "FORMAT", "VERSION", "PROTOCOLS",
           "MAXIOU_LEVELS", "QUANTILE_LEVELS", "IOU_THRESHOLD", "IQR_THRESHOLD"]
