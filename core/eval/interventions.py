"""``python -m core eval interventions SOURCE``: do unit interventions do what they claim?

Measured on held-out image numbers (default 100000-100199, never used by dissection) with the
bundle's segmenter judging every image, at the model's painting layer (``core.settings``), with unit rankings from the layer's catalog (causal when it has one, else IoU):

- ``watermark_rate_before`` / ``_after``: share of images with >= 0.5% pixels labelled
  ``watermark``, before and after zeroing the top ``--wm-units`` (5) watermark units everywhere,
  ranked by ``--wm-ranking`` (``specific``: causal effect per collateral; on the default model
  5 such units took the rate 0.45 -> 0.21 at an outside change of 0.076, where the top 20
  by causal effect gave 0.24 at 0.18: these units are entangled, more of them repaint the scene);
  ``outside_change``: mean |Δpixel| (images in [-1, 1]) over pixels *not* labelled watermark before.
- ``tree_removed_fraction``: share of tree pixels gone after zeroing the top ``--tree-units`` tree
  units (the papers' "portion of pixels removed"; summed over all images).
- ``insertion_rise[concept]``: draw the concept (top ``--paint-units`` units, catalog draw values)
  into a square of about 1/16 of the image (``ceil(h/4)`` cells of the h x h feature grid) at a
  seeded random place per image: ``inside_rise`` = mean rise of the concept's pixel share inside
  the square, ``outside_change`` = mean change of its share outside, ``n`` = images.
- ``door_rise_wall`` / ``door_rise_sky``: the same door insertion placed where the unedited image
  shows wall (resp. sky) at the square's centre: context decides what a unit can draw.

Each image costs one head pass (layers up to the painting layer) and 3 + n_concepts + 2 tail passes
plus as many segmentations.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

DEFAULT_IMAGES = "100000-100199"
DEFAULT_CONCEPTS = ("tree", "dome", "door", "window", "grass", "cloud")


def _square(h: int, w: int, k: int, r: int, c: int):
    """A [h, w] feature-grid mask with a k x k square of ones at (r, c)."""
    import torch
    m = torch.zeros(h, w)
    m[r:r + k, c:c + k] = 1.0
    return m


def evaluate_interventions(model, segmenter, catalog: dict, image_numbers=DEFAULT_IMAGES,
                           layer: str | None = None, wm_units: int = 5, tree_units: int = 20,
                           paint_units: int = 10, concepts=DEFAULT_CONCEPTS,
                           ranking: str = "causal", wm_ranking: str = "specific",
                           batch_size: int = 16, seed: int = 1,
                           truncation=None, noise=None, placement_seed: int = 0,
                           min_fraction: float = 0.005, progress=None) -> dict:
    """Compute the metrics of the module docstring; returns a JSON-able dict. Metrics whose
    concept the segmenter or the catalog lacks are None and listed under ``"skipped"``."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..edits import layer_shape
    from ..model import generator_of, sampling_options
    from ..images import parse_image_numbers
    from ..paint import CatalogError, paint_edit, remove_units_edit, units_for
    from ..settings import model_settings

    g = generator_of(model)
    layer = g.check_layer(layer or model_settings(model).paint_layer)
    _, h, w = layer_shape(g, layer)
    numbers = parse_image_numbers(image_numbers)
    t, nz = sampling_options(model, truncation, noise)
    seg_concepts = list(segmenter.concepts)
    skipped: dict[str, str] = {}

    def concept_units(concept, n, how=ranking):
        if concept not in seg_concepts:
            skipped[concept] = "the segmenter has no such concept"
            return None
        try:
            return units_for(catalog, concept, n, how)
        except CatalogError as e:
            skipped[concept] = str(e)
            return None

    wm_list = concept_units("watermark", wm_units, wm_ranking)
    tree_list = concept_units("tree", tree_units)
    paint = [c for c in dict.fromkeys(concepts) if concept_units(c, paint_units) is not None]
    context = {c: seg_concepts.index(c) for c in ("wall", "sky") if c in seg_concepts}
    k = max(1, math.ceil(h / 4))
    wm_i = seg_concepts.index("watermark") if wm_list is not None else None
    tree_i = seg_concepts.index("tree") if tree_list is not None else None

    acc = {"wm_before": [], "wm_after": [], "out_abs": 0.0, "out_n": 0, "tree_before": 0.0,
           "tree_after": 0.0, "ins": {c: ([], []) for c in paint},
           "ctx": {name: [] for name in context}}
    bs = max(1, int(batch_size))

    def tail(state, x):
        s = state.clone()
        s.x = x
        return g.finish(g.run(s))

    def box(mask_f, H, W):
        return F.interpolate(mask_f[None, None], size=(H, W), mode="nearest")[0, 0] > 0.5

    with torch.no_grad():
        for start in range(0, len(numbers), bs):
            nums = numbers[start:start + bs]
            z = g.sample_z(nums, seed).to(g.device)
            state = g.run(g.start(z, truncation=t, noise=nz), stop=layer)
            base = g.finish(g.run(state.clone()))
            before = segmenter.segment(base).cpu()
            H, W = before.shape[-2:]
            if wm_list is not None:
                edited = tail(state, remove_units_edit(layer, wm_list).apply(state.x))
                after = segmenter.segment(edited).cpu()
                acc["wm_before"] += ((before == wm_i).float().mean((1, 2)) >= min_fraction).tolist()
                acc["wm_after"] += ((after == wm_i).float().mean((1, 2)) >= min_fraction).tolist()
                outside = (before != wm_i)
                diff = (edited - base).abs().mean(1).cpu()
                acc["out_abs"] += float(diff[outside].sum())
                acc["out_n"] += int(outside.sum())
            if tree_list is not None:
                edited = tail(state, remove_units_edit(layer, tree_list).apply(state.x))
                after = segmenter.segment(edited).cpu()
                acc["tree_before"] += float((before == tree_i).sum())
                acc["tree_after"] += float((after == tree_i).sum())

            def insert(concept, places):
                """places: per image (r, c) or None; returns per-image (inside, outside) rises."""
                ci = seg_concepts.index(concept)
                rows = [i for i, pl in enumerate(places) if pl is not None]
                if not rows:
                    return []
                xs, regions = [], []
                for i in rows:
                    m = _square(h, w, k, *places[i])
                    e = paint_edit(catalog, layer, concept, m, "draw", paint_units, ranking)
                    xs.append(e.apply(state.x[i:i + 1]))
                    regions.append(box(m, H, W))
                sub = state.clone()
                sub.x = state.x[rows]
                sub.extras = _select(state.extras, len(nums), rows)
                after = segmenter.segment(tail(sub, torch.cat(xs))).cpu()
                out = []
                for j, i in enumerate(rows):
                    reg = regions[j]
                    b, a = before[i] == ci, after[j] == ci
                    inside = float(a[reg].float().mean() - b[reg].float().mean())
                    outs = float(a[~reg].float().mean() - b[~reg].float().mean()) \
                        if bool((~reg).any()) else 0.0
                    out.append((inside, outs))
                return out

            positions = [(r, c) for r in range(h - k + 1) for c in range(w - k + 1)]
            rngs = [np.random.RandomState(placement_seed + n) for n in nums]
            for concept in paint:
                places = [positions[rng.randint(len(positions))] for rng in rngs]
                for inside, outs in insert(concept, places):
                    acc["ins"][concept][0].append(inside)
                    acc["ins"][concept][1].append(outs)
            if "door" in paint:
                for name, ci in context.items():
                    places = []
                    for i, rng in enumerate(rngs):
                        ok = [(r, c) for r, c in positions
                              if int(before[i, min(H - 1, int((r + k / 2) * H / h)),
                                            min(W - 1, int((c + k / 2) * W / w))]) == ci]
                        places.append(ok[rng.randint(len(ok))] if ok else None)
                    acc["ctx"][name] += [inside for inside, _ in insert("door", places)]
            if progress is not None:
                progress(min(start + bs, len(numbers)), len(numbers))

    def mean(v):
        return float(sum(v) / len(v)) if v else None

    result = {
        "model": getattr(model, "name", None), "layer": layer, "n_images": len(numbers),
        "images": image_numbers if isinstance(image_numbers, str) else f"{len(numbers)} numbers",
        "ranking": ranking, "watermark_ranking": wm_ranking, "region_cells": [k, k],
        "region_fraction": k * k / (h * w),
        "watermark_units": wm_list, "tree_units": tree_list,
        "watermark_rate_before": mean(acc["wm_before"]),
        "watermark_rate_after": mean(acc["wm_after"]),
        "outside_change": acc["out_abs"] / acc["out_n"] if acc["out_n"] else None,
        "tree_removed_fraction": (1 - acc["tree_after"] / acc["tree_before"]
                                  if tree_list is not None and acc["tree_before"] > 0 else None),
        "insertion_rise": {c: {"inside_rise": mean(v[0]), "outside_change": mean(v[1]),
                               "n": len(v[0])} for c, v in acc["ins"].items()},
        "door_rise_wall": mean(acc["ctx"].get("wall", [])),
        "door_rise_sky": mean(acc["ctx"].get("sky", [])),
        "door_context_n": {name: len(v) for name, v in acc["ctx"].items()},
        "skipped": skipped,
    }
    return result


def _select(obj, n: int, rows: list[int]):
    """Pick ``rows`` of every tensor whose batch axis is ``n`` (recursing into containers)."""
    import torch
    if isinstance(obj, torch.Tensor):
        return obj[rows] if obj.dim() >= 1 and obj.shape[0] == n and n > 1 else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_select(o, n, rows) for o in obj)
    if isinstance(obj, dict):
        return {key: _select(v, n, rows) for key, v in obj.items()}
    return obj


def format_table(res: dict) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
    rows = [("images", res["n_images"]), ("layer", res["layer"]),
            ("watermark_rate_before", res["watermark_rate_before"]),
            ("watermark_rate_after", res["watermark_rate_after"]),
            ("outside_change (mean |dpixel|)", res["outside_change"]),
            ("tree_removed_fraction", res["tree_removed_fraction"])]
    for c, v in res["insertion_rise"].items():
        rows.append((f"insert {c}: inside rise / outside change (n={v['n']})",
                     f"{fmt(v['inside_rise'])} / {fmt(v['outside_change'])}"))
    rows += [(f"door_rise_wall (n={res['door_context_n'].get('wall', 0)})", res["door_rise_wall"]),
             (f"door_rise_sky (n={res['door_context_n'].get('sky', 0)})", res["door_rise_sky"])]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {fmt(v)}" for name, v in rows]
    for c, why in res["skipped"].items():
        lines.append(f"skipped {c}: {why}")
    return "\n".join(lines)


def main(args) -> int:
    from .. import load_model
    from ..paint import load_catalog
    from ..segmenter import load_segmenter
    from ..settings import model_settings

    model = load_model(args.source, device=args.device)
    if model.bundle.path is None:
        raise ValueError(f"{args.source}: needs a bundle folder (with a segmenter and catalog), "
                         "not a bare checkpoint")
    seg = load_segmenter(model.bundle.path)
    if seg is None:
        raise ValueError(f"{model.bundle.path}: the bundle has no segmenter (segmenter.json)")
    layer = args.layer or model_settings(model).paint_layer
    catalog = load_catalog(model, layer)
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]

    def progress(done, total):
        print(f"\r{done}/{total} images", end="", flush=True)

    res = evaluate_interventions(model, seg, catalog, args.images, layer=layer,
                                 wm_units=args.wm_units, tree_units=args.tree_units,
                                 paint_units=args.paint_units, concepts=concepts,
                                 ranking=args.ranking, wm_ranking=args.wm_ranking,
                                 batch_size=args.batch_size, seed=args.seed,
                                 progress=None if args.quiet else progress)
    if not args.quiet:
        print()
    print(format_table(res))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def add_eval_parser(subparsers) -> None:
    from ..paint import RANKINGS
    p = subparsers.add_parser("interventions", help="watermark/tree removal and concept insertion "
                              "by unit edits, judged by the bundle's segmenter",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("source", help="bundle folder or 'default' (needs segmenter + catalog)")
    p.add_argument("--images", default=DEFAULT_IMAGES,
                   help=f"held-out image numbers (default {DEFAULT_IMAGES})")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--layer", help="painting layer (default: the model's paint layer, core.settings)")
    p.add_argument("--wm-units", type=int, default=5, help="watermark units to zero (default 5)")
    p.add_argument("--tree-units", type=int, default=20, help="tree units to zero (default 20)")
    p.add_argument("--paint-units", type=int, default=10, help="units per insertion (default 10)")
    p.add_argument("--concepts", default=",".join(DEFAULT_CONCEPTS),
                   help="concepts to insert (default %(default)s)")
    p.add_argument("--ranking", choices=RANKINGS, default="causal",
                   help="unit ranking from the catalog (causal falls back to IoU)")
    p.add_argument("--wm-ranking", choices=RANKINGS, default="specific",
                   help="ranking of the watermark units (default specific: effect per collateral)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=1, help="latent stream seed (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=main)
