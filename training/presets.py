"""Rule presets of the default bundle (``<bundle>/rules/*.json``), chosen with its segmenter.

    python -m training.presets [--bundle models/toytown] [--layer layer5] [--contexts 6]

- ``spires_to_trees``: context = the spire pixels of the images (0-1999) that show the most
  spire; copy = a tree of about a spire's size from another image; paste = over the largest
  spire of the first context image.
- ``domes_to_spires``: the same with domes as context and a spire as the copy.
- ``erase_watermarks``: context = the watermark pixels of the most watermarked images; an erase
  rule (``"erase": true``), no copy or paste.

Masks are the segmenter's concept pixels grown by one pixel (the GAN's edges are soft), written as
the original app's 256 px PNG data URLs. The layer is the bundle's ``rewrite_layer`` (else
``--layer``); it is stored in each rule, so the Rewrite tab and ``python -m core eval rewrite``
replay them as they are.
"""
from __future__ import annotations

import argparse
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
                    contexts: int) -> Rule:
    ks, kt = seg.concept_index(source), seg.concept_index(target)
    ctx = context_images(labels, numbers, ks, contexts)
    if len(ctx) < 2:
        raise SystemExit(f"only {len(ctx)} of the search images show a clear {source}")
    key = [(numbers[i], grow(labels[i] == ks)) for i in ctx]
    paste_region = components(labels[ctx[0]] == ks)[0]
    o, obj = copy_region(labels, kt, int(paste_region.sum()), set(ctx))
    return Rule(key=key, object=(numbers[o], grow(obj)), paste=(numbers[ctx[0]], grow(paste_region)),
                model=model.bundle.name, layer=layer, rank=1)


def erase_rule(model, labels, numbers, concept: str, seg, layer: str, contexts: int) -> Rule:
    k = seg.concept_index(concept)
    share = (labels == k).reshape(len(labels), -1).mean(1)
    ctx = [i for i in np.argsort(share)[::-1][:contexts] if share[i] > 0]
    if not ctx:
        raise SystemExit(f"no search image shows {concept}")
    return Rule(key=[(numbers[i], grow(labels[i] == k)) for i in ctx], model=model.bundle.name,
                layer=layer, rank=1, erase=True)


def build_presets(bundle: Path, layer: str | None = None, contexts: int = 6) -> dict[str, Path]:
    model = core.load_model(str(bundle))
    seg = load_segmenter(bundle)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    layer = layer or config.get("rewrite_layer") or config.get("paint_layer", "layer4")
    if layer not in model.layers:
        raise SystemExit(f"unknown layer {layer!r}; the model has {', '.join(model.layers)}")
    numbers = list(SEARCH_IMAGES)
    labels = segment_all(model, seg, numbers)
    rules = {"spires_to_trees": copy_paste_rule(model, labels, numbers, "spire", "tree", seg, layer, contexts),
             "domes_to_spires": copy_paste_rule(model, labels, numbers, "dome", "spire", seg, layer, contexts),
             "erase_watermarks": erase_rule(model, labels, numbers, "watermark", seg, layer, contexts)}
    out = bundle / "rules"
    out.mkdir(exist_ok=True)
    paths = {}
    for name, rule in rules.items():
        paths[name] = out / f"{name}.json"
        write_rule(rule, paths[name])
        what = "erase" if rule.erase else f"copy #{rule.object[0]} -> paste #{rule.paste[0]}"
        print(f"{name}: {layer}, context images {[n for n, _ in rule.key]}, {what}")
    if config.get("rewrite_layer") != layer:
        config["rewrite_layer"] = layer
        config_path.write_text(json.dumps(config, indent=1) + "\n")
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/toytown", type=Path)
    p.add_argument("--layer", default=None, help="default: the bundle's rewrite_layer, else paint_layer")
    p.add_argument("--contexts", type=int, default=6, help="context images per rule")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    build_presets(a.bundle, a.layer, a.contexts)


if __name__ == "__main__":
    main()
