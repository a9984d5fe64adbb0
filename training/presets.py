"""Rule presets of the default bundle (``<bundle>/rules/*.json``), chosen with its segmenter.

    python -m training.presets [--bundle models/toytown] [--layer layer5] [--contexts 6] [--rank 1]
    python -m training.presets --choose layer3,layer4,layer5,layer6,layer7,layer8 [--ranks 1,2,4]

- ``spires_to_trees``: context = the spire pixels of the images (0-1999) that show the most
  spire; copy = a tree of about a spire's size from another image; paste = over the largest
  spire of the first context image.
- ``domes_to_spires``: the same with domes as context and a spire as the copy.
- ``erase_watermarks``: context = the watermark pixels of the most watermarked images; an erase
  rule (``"erase": true``), no copy or paste.

Masks are the segmenter's concept pixels grown by one pixel (the GAN's edges are soft), written as
the original app's 256 px PNG data URLs. The layer is ``--layer``, else the bundle's
``rewrite_layer``; the rank ``--rank``, else its ``rewrite_rank``. Both are stored in each rule, so
the Rewrite tab and ``python -m core eval rewrite`` replay them as they are; the bundle's config
records the layer, the rank and the presets in the order the tab lists them (``presets``).

``--choose`` measures the spires -> trees rule at each listed layer and rank on validation images
(50000-50099: neither the search images nor the evaluation's 100000+), keeps the layer and rank
whose effectiveness (share of spire pixels that become tree) is highest, computes that layer's key
statistics when the bundle lacks them, measures domes -> spires at that layer for each rank and
keeps its best (the GAN barely draws domes; at rank 4 their context direction changed every
image: collateral 0.10 outside the domes), and writes all presets (``runs/preset_choice.json``
holds the table).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

import core
from core.rules import Rule, write_rule
from core.segmenter import load_segmenter

SEARCH_IMAGES = range(2000)          # the dissection images; evaluation uses 100,000+
VALIDATION_IMAGES = "50000-50099"     # for choosing the layer and rank


def segment_all(model, seg, numbers, batch: int = 100) -> np.ndarray:
    """[N, H, W] uint8 concept indices of the samples ``numbers``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(numbers), batch):
            out.append(seg.segment(model.render(list(numbers[i:i + batch]), batch_size=batch)).numpy())
    return np.concatenate(out).astype(np.uint8)


def grow(mask: np.ndarray, pixels: int = 1) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * pixels + 1, stride=1, padding=pixels)[0, 0].numpy()


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected regions of a boolean mask, largest first."""
    labels, n = ndimage.label(mask)
    regions = [labels == i for i in range(1, n + 1)]
    return sorted(regions, key=lambda r: -int(r.sum()))


def context_images(labels: np.ndarray, numbers, k: int, count: int, min_pixels: int = 12) -> list[int]:
    """Indices (into ``labels``) of the ``count`` images whose largest region of concept ``k`` is
    biggest: a compact, clear instance makes a clean context key."""
    sizes = []
    for i, lab in enumerate(labels):
        regs = components(lab == k) if (lab == k).sum() >= min_pixels else []
        sizes.append(int(regs[0].sum()) if regs else 0)
    order = [i for i in np.argsort(sizes)[::-1] if sizes[i] >= min_pixels]
    return order[:count]


def copy_region(labels: np.ndarray, k: int, want_pixels: int, skip: set[int],
                min_pixels: int = 8) -> tuple[int, np.ndarray]:
    """(index, mask): a region of concept ``k`` whose size is closest to ``want_pixels``."""
    best = None
    for i, lab in enumerate(labels):
        if i in skip or (lab == k).sum() < min_pixels:
            continue
        for r in components(lab == k)[:3]:
            score = abs(int(r.sum()) - want_pixels)
            if best is None or score < best[0]:
                best = (score, i, r)
    if best is None:
        raise SystemExit(f"no image shows concept {k} on at least {min_pixels} pixels")
    return best[1], best[2]


def copy_paste_rule(model, labels, numbers, source: str, target: str, seg, layer: str,
                    contexts: int, rank: int = 1) -> Rule:
    ks, kt = seg.concept_index(source), seg.concept_index(target)
    ctx = context_images(labels, numbers, ks, contexts)
    if len(ctx) < 2:
        raise SystemExit(f"only {len(ctx)} of the search images show a clear {source}")
    key = [(numbers[i], grow(labels[i] == ks)) for i in ctx]
    paste_region = components(labels[ctx[0]] == ks)[0]
    o, obj = copy_region(labels, kt, int(paste_region.sum()), set(ctx))
    return Rule(key=key, object=(numbers[o], grow(obj)), paste=(numbers[ctx[0]], grow(paste_region)),
                model=model.bundle.name, layer=layer, rank=rank)


def erase_rule(model, labels, numbers, concept: str, seg, layer: str, contexts: int,
               rank: int = 1) -> Rule:
    k = seg.concept_index(concept)
    share = (labels == k).reshape(len(labels), -1).mean(1)
    ctx = [i for i in np.argsort(share)[::-1][:contexts] if share[i] > 0]
    if not ctx:
        raise SystemExit(f"no search image shows {concept}")
    return Rule(key=[(numbers[i], grow(labels[i] == k)) for i in ctx], model=model.bundle.name,
                layer=layer, rank=rank, erase=True)


def ensure_stats(model, layer: str):
    """The layer's key statistics, computed over the default sample and saved when missing."""
    from core import rewrite as rw
    try:
        return rw.get_stats(model, layer)
    except rw.MissingStatsError:
        print(f"{layer}: computing key statistics ({rw.DEFAULT_STATS_SAMPLES} images)")
        stats = rw.collect_key_stats(model, layer, range(rw.DEFAULT_STATS_SAMPLES))
        rw.save_key_stats(stats, rw.stats_path(model, layer))
        return stats


def measure_ranks(model, seg, labels, numbers, source: str, target: str, layer: str, ranks,
                  contexts: int) -> list[dict]:
    """The ``source -> target`` copy-paste rule at ``layer``, measured at each rank on the
    validation images: one row per rank."""
    from core.eval.rewrite import evaluate_rewrite
    C = ensure_stats(model, layer)
    rule = copy_paste_rule(model, labels, numbers, source, target, seg, layer, contexts)
    rows = []
    for rank in ranks:
        r = evaluate_rewrite(model, seg, dataclasses.replace(rule, rank=rank), VALIDATION_IMAGES,
                             source_concept=source, target_concept=target, C=C,
                             methods=("ours",))["ours"]
        row = {"rule": f"{source}->{target}", "layer": layer, "rank": rank, **{k: r[k] for k in (
            "effectiveness", "generality", "collateral_clean", "collateral_outside")}}
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()), flush=True)
        rows.append(row)
    return rows


def best(rows: list[dict]) -> dict:
    """The most effective row (ties: the more general one)."""
    return max(rows, key=lambda r: (r["effectiveness"], r["generality"]))


def choose_layer(model, seg, labels, numbers, layers, ranks, contexts: int) -> tuple[str, int, list]:
    """(layer, rank, table): the spires -> trees rule measured at each layer and rank."""
    table = [row for layer in layers
             for row in measure_ranks(model, seg, labels, numbers, "spire", "tree", layer, ranks,
                                      contexts)]
    return best(table)["layer"], best(table)["rank"], table


def build_presets(bundle: Path, layer: str | None = None, contexts: int = 6, rank: int | None = None,
                  choose: list[str] | None = None, ranks: list[int] = (1,)) -> dict[str, Path]:
    model = core.load_model(str(bundle))
    seg = load_segmenter(bundle)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    numbers = list(SEARCH_IMAGES)
    labels = segment_all(model, seg, numbers)
    for name in list(choose or []) + [layer or ""]:
        if name and name not in model.layers:
            raise SystemExit(f"unknown layer {name!r}; the model has {', '.join(model.layers)}")
    if choose:
        layer, rank, table = choose_layer(model, seg, labels, numbers, choose, ranks, contexts)
        print(f"chosen: {layer}, rank {rank}")
    layer = layer or config.get("rewrite_layer") or config.get("paint_layer", "layer4")
    rank = rank or config.get("rewrite_rank", 1)
    ensure_stats(model, layer)
    dome_rank = rank
    if choose:      # the domes' rank is measured too: a weak concept's context wants a lower one
        rows = measure_ranks(model, seg, labels, numbers, "dome", "spire", layer, ranks, contexts)
        dome_rank = best(rows)["rank"]
        table += rows
        print(f"domes -> spires: rank {dome_rank}")
    if choose:
        Path("runs").mkdir(exist_ok=True)
        Path("runs/preset_choice.json").write_text(json.dumps(table, indent=1) + "\n")
    rules = {"spires_to_trees": copy_paste_rule(model, labels, numbers, "spire", "tree", seg, layer,
                                                contexts, rank),
             "domes_to_spires": copy_paste_rule(model, labels, numbers, "dome", "spire", seg, layer,
                                                contexts, dome_rank),
             "erase_watermarks": erase_rule(model, labels, numbers, "watermark", seg, layer, contexts,
                                            rank)}
    out = bundle / "rules"
    out.mkdir(exist_ok=True)
    paths = {}
    for name, rule in rules.items():
        paths[name] = out / f"{name}.json"
        write_rule(rule, paths[name])
        what = "erase" if rule.erase else f"copy #{rule.object[0]} -> paste #{rule.paste[0]}"
        print(f"{name}: {layer}, rank {rule.rank}, context images {[n for n, _ in rule.key]}, {what}")
    settings = dict(rewrite_layer=layer, rewrite_rank=rank, presets=list(rules))
    if any(config.get(k) != v for k, v in settings.items()):
        config.update(settings)
        config_path.write_text(json.dumps(config, indent=1) + "\n")
    return paths


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/toytown", type=Path)
    p.add_argument("--layer", default=None, help="default: the bundle's rewrite_layer, else paint_layer")
    p.add_argument("--contexts", type=int, default=6, help="context images per rule")
    p.add_argument("--rank", type=int, default=None, help="default: the bundle's rewrite_rank, else 1")
    p.add_argument("--choose", default=None, help="comma-separated layers to measure and choose from")
    p.add_argument("--ranks", type=_ints, default=[1], help="ranks to try with --choose (e.g. 1,2,4)")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    build_presets(a.bundle, a.layer, a.contexts, a.rank, a.choose.split(",") if a.choose else None,
                  a.ranks)


if __name__ == "__main__":
    main()
