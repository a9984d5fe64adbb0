"""Rebuild everything the embedded default bundle ships, from the training outputs.

    python -m training.finalize            # after python -m training.gan and training.segmenter

1. the bundle (generator EMA + segmenter + config + card)        training.build_bundle
2. unit catalogs of every layer over images 0-999                python -m core dissect --layer all
3. causal rankings of the paint concepts at the paint layer      core.paint.causal_ranking
4. key statistics of the rewritable layers                       python -m core stats
5. quality metrics (FSD, class shares, watermark share)          training.quality
6. rule presets (spires -> trees, domes -> spires, erase watermarks)  training.presets
The photo encoder is trained separately: python -m training.encoder --bundle models/toytown.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import core
from core.__main__ import main as core_main
from core.dissect import load_catalog, save_catalog
from core.paint import causal_ranking, units_for
from core.segmenter import load_segmenter

PAINT_CONCEPTS = ["tree", "grass", "dome", "spire", "door", "window", "roof", "cloud", "watermark"]
STATS_LAYERS = ["layer3", "layer4", "layer5", "layer6"]


def images_with(seg, model, concept: str, numbers, want: int, min_fraction: float = 0.005) -> list[int]:
    """The first ``want`` image numbers whose segmentation shows ``concept`` on >= min_fraction."""
    k = seg.concept_index(concept)
    found = []
    for i in range(0, len(numbers), 100):
        chunk = numbers[i:i + 100]
        labels = seg.segment(model.render(chunk, batch_size=100))
        share = (labels == k).flatten(1).float().mean(1)
        found += [n for n, s in zip(chunk, share.tolist()) if s >= min_fraction]
        if len(found) >= want:
            break
    return found[:want]


def add_causal_rankings(bundle: Path, layer: str, candidates: int = 32, images: int = 40):
    model = core.load_model(str(bundle))
    seg = load_segmenter(bundle)
    path = model.bundle.catalog_path(layer)
    cat = load_catalog(path, model=model, layer=layer)
    causal = {}
    for concept in PAINT_CONCEPTS:
        t = time.time()
        numbers = images_with(seg, model, concept, list(range(2000)), images)
        if len(numbers) < 5:
            print(f"causal {concept}: only {len(numbers)} images show it; skipped")
            continue
        cand = units_for(cat, concept, candidates, ranking="iou")
        causal[concept] = [{"unit": r["unit"], "effect": round(r["effect"], 5),
                            "collateral": round(r["collateral"], 5)} for r in
                           causal_ranking(model, seg, layer, concept, numbers, candidate_units=cand)]
        print(f"causal {concept}: {len(numbers)} images, {len(cand)} candidates, "
              f"{time.time() - t:.0f} s; top {[r['unit'] for r in causal[concept][:5]]}")
    cat["causal"] = causal
    cat["causal_protocol"] = (f"per concept: the top {candidates} units by IoU, each zeroed alone over the "
                              f"whole image on up to {images} of images 0-1999 that show the concept; "
                              "effect = drop of the concept's pixel share (segmenter); "
                              "collateral = mean |Δpixel| over the pixels not labelled with it")
    save_catalog(cat, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/toytown", type=Path)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--skip", nargs="*", default=[], choices=["bundle", "dissect", "causal", "stats", "quality", "presets"])
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.time()
    if "bundle" not in a.skip:
        from training.build_bundle import build
        build(Path("runs/gan"), Path("runs/segmenter"), a.bundle)
    layer = json.loads((a.bundle / "config.json").read_text()).get("paint_layer", "layer4")
    if "dissect" not in a.skip:
        core_main(["dissect", str(a.bundle), "--layer", "all", "--samples", str(a.samples),
                   "--protocol", "iqr"])
    if "causal" not in a.skip:
        add_causal_rankings(a.bundle, layer)
    if "stats" not in a.skip:
        for old in (a.bundle / "stats").glob("*.safetensors"):   # the previous generator's
            old.unlink()
        for name in STATS_LAYERS:
            core_main(["stats", str(a.bundle), "--layer", name, "--samples", str(a.samples)])
    if "quality" not in a.skip:
        from training.quality import main as quality_main
        quality_main(["--bundle", str(a.bundle)])
    if "presets" not in a.skip:
        from training.presets import build_presets
        build_presets(a.bundle)
    print(f"finalized {a.bundle} in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
