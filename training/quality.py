"""Measure the default model against its data, and write the numbers into the bundle.

    python -m training.quality --bundle models/toytown [--n 5000]

- FSD ("Seeing What a GAN Cannot Generate"): Fréchet distance between the per-image class-fraction
  vectors (x100, from the bundle's segmenter) of N renders and N samples, next to the same distance
  between two independent sets of renders (the floor);
- per-class pixel share of samples vs renders, and the share of images with a watermark
  (>= 0.5% watermark pixels) in each;
- a sample grid (samples.png) beside the bundle's data grid (data.png).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

import core
from core.segmenter import load_segmenter
from training.toytown import render_batch

WATERMARK_MIN_FRACTION = 0.005


def class_fractions(labels: torch.Tensor, k: int) -> np.ndarray:
    """[N,H,W] labels -> [N,k] pixel fractions x100."""
    onehot = torch.nn.functional.one_hot(labels.flatten(1), k).float()
    return (onehot.mean(1) * 100).numpy()


def best_concept_iou(catalogs) -> dict:
    """{concept: [best unit IoU, layer]} over dissection catalogs (units' ``concept_iou``)."""
    best = {}
    for cat in catalogs:
        for unit in cat["units"]:
            for concept, v in unit.get("concept_iou", {}).items():
                if v > best.get(concept, [0.0])[0]:
                    best[concept] = [round(float(v), 3), cat["layer"]]
    return best


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def segment_renders(seg, seed: int, n: int, batch: int = 500):
    out = []
    for s in range(0, n, batch):
        images, _ = render_batch(seed, min(batch, n - s), start=s)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(seg.segment(x))
    return torch.cat(out)


def segment_samples(model, seg, n: int, start: int, batch: int = 250):
    out = []
    for s in range(start, start + n, batch):
        out.append(seg.segment(model.render(range(s, min(s + batch, start + n)), batch_size=batch)))
    return torch.cat(out)


def measure(bundle: Path, n: int = 5000) -> dict:
    model = core.load_model(str(bundle))
    seg = load_segmenter(bundle)
    k = len(seg.concepts)
    wm = seg.concept_index("watermark")
    renders_a = segment_renders(seg, 1001, n)
    renders_b = segment_renders(seg, 1002, n)
    samples = segment_samples(model, seg, n, start=200_000)  # held out from catalogs and tests
    fa, fb, fs = (class_fractions(x, k) for x in (renders_a, renders_b, samples))

    def wm_share(labels):
        return float(((labels == wm).flatten(1).float().mean(1) >= WATERMARK_MIN_FRACTION).float().mean())

    return {
        "n": n,
        "fsd": round(frechet(fa, fs), 3),
        "fsd_floor_renders_vs_renders": round(frechet(fa, fb), 3),
        "pixel_share_samples": {c: round(float(v) / 100, 4) for c, v in zip(seg.concepts, fs.mean(0))},
        "pixel_share_renders": {c: round(float(v) / 100, 4) for c, v in zip(seg.concepts, fa.mean(0))},
        "watermark_image_share_samples": round(wm_share(samples), 4),
        "watermark_image_share_renders": round(wm_share(renders_a), 4),
        "note": "class fractions from the bundle's segmenter; samples are image numbers 200,000+; "
                "renders are Toytown seeds 1001 and 1002 (never used for training)",
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/toytown", type=Path)
    p.add_argument("--n", type=int, default=5000)
    a = p.parse_args(argv)
    metrics = measure(a.bundle, a.n)
    print(json.dumps(metrics, indent=1))
    cfg_path = a.bundle / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("metrics", {})["quality"] = metrics
    cfg_path.write_text(json.dumps(cfg, indent=1))
    from training.build_bundle import write_card
    write_card(a.bundle)


if __name__ == "__main__":
    main()
