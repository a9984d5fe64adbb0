"""Running a dissection of one layer and its catalog: the rankings, the protocol's thresholds, and
the JSON file (saved atomically, validated when read)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..model import sampling_options
from .tally import (IOU_THRESHOLD, IQR_THRESHOLD, LIST_MIN_IOU, MAXIOU_LEVELS, QUANTILE_LEVELS, RANK_MIN,
                    TOP1_LEVELS, Tally)

FORMAT = "painting-with-neurons-catalog"


VERSION = 1


PROTOCOLS = ("maxiou", "iqr", "top1")


PROTOCOL_TEXT = {
    "maxiou": ("IoU-maximising thresholds: for each unit and concept, the threshold among 24 "
               "quantile levels of the unit's upsampled activations (top 0.1% .. top 70% over "
               "the whole sample) with the highest IoU; label = concept with the best IoU; "
               "interpretable if IoU > 0.04."),
    "iqr": ("GAN Dissection (ICLR'19 code's default for GANs): for each unit and concept, the "
            "threshold among the same 24 levels that maximises the information quality ratio "
            "I(unit mask; concept mask) / H(unit mask, concept mask), which is 0 for a mask "
            "unrelated to the concept; label = concept with the best ratio; interpretable if "
            "IoU > 0.04 and ratio > 0.01."),
    "top1": ("PNAS'20: threshold = each unit's 0.99 quantile of its upsampled activations over "
             "the whole sample (top 1%); label = concept with the best IoU at that threshold; "
             "interpretable if IoU > 0.04."),
}


class DissectionStopped(Exception):
    """Raised by :func:`dissect` when its ``stop()`` callback returns True."""


# =============================================================================== dissect
def _r(x, digits: int = 4):
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def compact_numbers(numbers: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (order kept)."""
    parts, i, numbers = [], 0, [int(n) for n in numbers]
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ",".join(parts)


def _segmenter_device(segmenter):
    net = getattr(segmenter, "net", None)
    if net is not None:
        p = next(iter(net.parameters()), None)
        if p is not None:
            return p.device
    return None


def _dissect(model, segmenter, layer, image_numbers, *, protocol="maxiou", batch_size=32,
             progress=None, top_k=12, stop=None, seed=1, quantile_sample=None, bins=None):
    """:func:`dissect`, returning ``(catalog, tally, results)`` (tests and tools look inside)."""
    from ..images import parse_image_numbers

    if segmenter is None:
        raise ValueError("this model has no segmenter; catalogs from elsewhere can still be browsed")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    g = getattr(model, "generator", model)
    g.check_layer(layer)
    if isinstance(image_numbers, (int, np.integer)) and not isinstance(image_numbers, bool):
        if image_numbers < 1:
            raise ValueError(f"the number of samples must be >= 1, got {image_numbers}")
        image_numbers = range(int(image_numbers))
    if not isinstance(image_numbers, str):
        image_numbers = list(image_numbers)
        if not image_numbers:
            raise ValueError("no image numbers given: dissection needs at least 1 sample")
    numbers = parse_image_numbers(image_numbers)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    top_k = int(top_k)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    concepts = list(segmenter.concepts)
    if not concepts:
        raise ValueError("the segmenter has no concepts")
    levels = TOP1_LEVELS if protocol == "top1" else MAXIOU_LEVELS
    truncation, noise = sampling_options(model)
    device = g.device
    seg_device = _segmenter_device(segmenter)
    N = len(numbers)
    timing = {"generate_s": 0.0, "segment_s": 0.0, "stats_s": 0.0}
    tally = None
    if progress:
        progress(0, N)
    for start in range(0, N, batch_size):
        if stop is not None and stop():
            raise DissectionStopped(f"dissection of {layer} stopped after {start} of {N} images")
        nums = numbers[start:start + batch_size]
        t0 = time.perf_counter()
        with torch.no_grad():
            z = g.sample_z(nums, seed).to(device)
            state = g.run(g.start(z, truncation=truncation, noise=noise), stop=layer)
            feats = state.x
            images = g.finish(g.run(state))
        t1 = time.perf_counter()
        with torch.no_grad():
            seg = segmenter.segment(images if seg_device is None else images.to(seg_device))
        t2 = time.perf_counter()
        seg = torch.as_tensor(seg)
        if seg.dim() != 3 or seg.shape[0] != len(nums) or seg.is_floating_point():
            raise ValueError(f"the segmenter must return [N,H,W] integer labels, got "
                             f"{tuple(seg.shape)} {seg.dtype}")
        seg = seg.long().to(device)
        if seg.numel() and (int(seg.min()) < 0 or int(seg.max()) >= len(concepts)):
            raise ValueError(f"segmentation labels must lie in 0..{len(concepts) - 1} "
                             f"(the segmenter's {len(concepts)} concepts), got "
                             f"{int(seg.min())}..{int(seg.max())}")
        if not bool(torch.isfinite(feats).all()):
            raise ValueError(f"the generator produced non-finite features at {layer}")
        if tally is None:
            tally = Tally(feats.shape[1], len(concepts), feats.shape[2:], seg.shape[1:], N,
                          levels=levels, top_k=top_k, seed=seed, quantile_sample=quantile_sample,
                          bins=bins, device=device)
        tally.update(feats, seg, nums)
        t3 = time.perf_counter()
        timing["generate_s"] += t1 - t0
        timing["segment_s"] += t2 - t1
        timing["stats_s"] += t3 - t2
        if progress:
            progress(min(start + batch_size, N), N)
    t0 = time.perf_counter()
    res = tally.finish()
    catalog = _build_catalog(model, segmenter, layer, numbers, protocol, seed, tally, res,
                             truncation, noise)
    timing["stats_s"] += time.perf_counter() - t0
    catalog["timing"] = {k: round(v, 3) for k, v in timing.items()}
    return catalog, tally, res


def dissect(model, segmenter, layer: str, image_numbers, *, protocol: str = "maxiou",
            batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
            top_k: int = 12, stop: Callable[[], bool] | None = None, seed: int = 1,
            quantile_sample: int | None = None, bins: int | None = None) -> dict:
    """Dissect ``layer`` of ``model`` (a :class:`core.Model`) over ``image_numbers`` (a spec like
    ``"0-999"``, a list, or an int N meaning images 0..N-1) with ``segmenter`` (anything with
    ``concepts`` and ``segment(images) -> [N,H,W]`` long). Returns the catalog dict (see
    :func:`save_catalog`). ``progress(done, total)`` is called after each batch; ``stop()``
    returning True raises :class:`DissectionStopped`. Raises ``LayerError`` for an unknown layer
    and ``ValueError`` for no segmenter, no images or a bad protocol."""
    return _dissect(model, segmenter, layer, image_numbers, protocol=protocol,
                    batch_size=batch_size, progress=progress, top_k=top_k, stop=stop, seed=seed,
                    quantile_sample=quantile_sample, bins=bins)[0]


def _quantile_method(tally: Tally, res: dict) -> str:
    n = res["sample_size"]
    if tally.exact_quantiles:
        return (f"exact: linear interpolation over all {n:,} raw (not upsampled) feature values "
                "per unit")
    err = math.sqrt(0.99 * 0.01 / n)
    return (f"sampled: exact quantiles (linear interpolation) of a seeded uniform random subset of "
            f"{tally.per_image} of the {tally.h * tally.w} raw feature positions per image "
            f"({n:,} values per unit); standard rank error about sqrt(q(1-q)/n), "
            f"{err:.5f} at q=0.99 (more where pixels of one image are correlated)")


def _build_catalog(model, segmenter, layer, numbers, protocol, seed, tally: Tally, res: dict,
                   truncation, noise) -> dict:
    concepts = list(segmenter.concepts)
    K, C = len(concepts), tally.units
    iou, iqr, chance = res["iou"].numpy(), res["iqr"].numpy(), res["iou_chance"].numpy()
    score = iqr if protocol == "iqr" else iou          # [C, L, K]: what thresholds maximise
    best_level = score.argmax(1)                       # [C, K]
    rows, cols = np.arange(C)[:, None], np.arange(K)[None, :]
    best_score = score[rows, best_level, cols]         # [C, K]
    best_iou = iou[rows, best_level, cols]
    best_iqr = iqr[rows, best_level, cols]
    best_chance = chance[rows, best_level, cols]
    thresholds, levels = res["thresholds"].numpy(), res["levels"].numpy()
    quantiles = res["quantiles"].numpy()
    top_numbers, top_values = res["top_numbers"].tolist(), res["top_values"].tolist()
    q_default = int(np.argmin([abs(q - 0.99) for q in tally.levels]))
    units = []
    interpretable = {c: 0 for c in concepts}
    qkeys = [str(q) for q in QUANTILE_LEVELS]
    i99 = QUANTILE_LEVELS.index(0.99)
    best_iou_r = np.round(best_iou, 4).tolist()
    best_iqr_r = np.round(best_iqr, 5).tolist()
    for u in range(C):
        k = int(best_score[u].argmax())
        value = float(best_iou[u, k])
        li = int(best_level[u, k]) if best_score[u, k] > 0 else q_default
        keep = [j for j in np.argsort(-best_iou[u], kind="stable").tolist()
                if best_iou[u, j] > LIST_MIN_IOU]
        good = value > IOU_THRESHOLD and (protocol != "iqr" or best_iqr[u, k] > IQR_THRESHOLD)
        entry = {
            "unit": u, "label": concepts[k], "iou": _r(value),
            "iqr": best_iqr_r[u][k], "iou_chance": _r(best_chance[u, k]),
            "interpretable": bool(good),
            "threshold": _r(thresholds[u, li]), "level": _r(levels[u, li], 5),
            "quantile_99": _r(quantiles[u, i99]),
            "quantiles": {key: _r(v) for key, v in zip(qkeys, quantiles[u].tolist())},
            "top": [int(n) for n in top_numbers[u] if n >= 0],
            "top_max": [_r(v) for n, v in zip(top_numbers[u], top_values[u]) if n >= 0],
            "concept_iou": {concepts[j]: best_iou_r[u][j] for j in keep},
        }
        if good:
            interpretable[concepts[k]] += 1
        units.append(entry)
    rankings = {}
    best_thr = np.round(thresholds[rows, best_level], 4).tolist()          # [C, K]
    for j, c in enumerate(concepts):
        order = np.argsort(-best_score[:, j], kind="stable").tolist()
        keep = [u for i, u in enumerate(order) if i < RANK_MIN or best_iou[u, j] > LIST_MIN_IOU]
        rankings[c] = [{"unit": u, "iou": best_iou_r[u][j], "iqr": best_iqr_r[u][j],
                        "threshold": best_thr[u][j]} for u in keep]
    cpx = res["concept_pixels"].tolist()
    means = np.round(res["concept_means"].numpy(), 4)
    draw = {c: means[:, j].tolist() for j, c in enumerate(concepts) if cpx[j] > 0}
    bundle = getattr(model, "bundle", None)
    name = getattr(model, "name", None) or (bundle.name if bundle is not None else "model")
    catalog = {
        "format": FORMAT, "version": VERSION, "model": name, "layer": layer,
        "protocol": protocol, "protocol_text": PROTOCOL_TEXT[protocol],
        "quantile_method": _quantile_method(tally, res),
        "threshold_method": (f"exact counts over all images on a per-unit grid of {tally.bins} "
                             "bins of upsampled activation (width doubles as needed); each "
                             "candidate level realised by the grid edge whose exact level is "
                             "nearest ('level' is that exact level)"),
        "iou_threshold": IOU_THRESHOLD,
        "ranked_by": "iqr" if protocol == "iqr" else "iou",
        "samples": len(numbers),
        "image_numbers": compact_numbers(numbers),
        "seed": int(seed),
        "truncation": truncation, "noise": noise,
        "segmenter": getattr(segmenter, "id", type(segmenter).__name__),
        "concept_list": concepts,
        "feature_shape": [C, tally.h, tally.w],
        "seg_size": [tally.H, tally.W],
        "upsampling": "bilinear, pixel-centre grid, border padding (F.interpolate align_corners=False)",
        "candidate_levels": [_r(q, 5) for q in tally.levels],
        "quantile_levels": list(QUANTILE_LEVELS),
        "concept_fraction": {c: _r(cpx[j] / res["total_pixels"], 5)
                             for j, c in enumerate(concepts)},
        "units": units,
        "concepts": rankings,
        "draw_values": draw,
        "interpretable": interpretable,
    }
    palette = getattr(segmenter, "palette", None)
    if protocol == "iqr":
        catalog["iqr_threshold"] = IQR_THRESHOLD
    if palette:
        catalog["palette"] = [[int(v) for v in p] for p in palette]
    return catalog


# =============================================================================== files
def _dumps(catalog: dict) -> str:
    """JSON with one unit / one ranking / one draw-value list per line (diffable, compact)."""
    def one(v):
        return json.dumps(v, separators=(",", ":"))
    parts = []
    for k, v in catalog.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            inner = ",\n  ".join(one(x) for x in v)
            parts.append(f" {json.dumps(k)}: [\n  {inner}\n ]")
        elif isinstance(v, dict) and v and all(isinstance(x, (list, dict)) for x in v.values()):
            inner = ",\n  ".join(f"{json.dumps(kk)}: {one(vv)}" for kk, vv in v.items())
            parts.append(f" {json.dumps(k)}: {{\n  {inner}\n }}")
        else:
            parts.append(f" {json.dumps(k)}: {one(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def save_catalog(catalog: dict, path) -> Path:
    """Write a catalog as JSON (atomically; folders created). Returns the path."""
    path = Path(path)
    if catalog.get("format") != FORMAT:
        raise ValueError(f"not a dissection catalog (format {catalog.get('format')!r})")
    text = _dumps(catalog)
    json.loads(text)                                    # never write something unreadable
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..bundle import atomic_write
    atomic_write(path, text)
    return path


_REQUIRED = ("layer", "units", "concept_list", "feature_shape", "concepts")


def load_catalog(path, model=None, layer: str | None = None) -> dict:
    """Read a catalog written by :func:`save_catalog`, checking its format. With ``layer`` the
    catalog must be that layer's; with ``model`` (a Model or generator) its layer must exist in
    the model with as many units (channels) as the catalog has. Raises ``ValueError`` (or
    ``LayerError`` when the model lacks the layer) with a message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such catalog file")
    try:
        cat = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(cat, dict) or cat.get("format") != FORMAT:
        found = cat.get("format") if isinstance(cat, dict) else type(cat).__name__
        raise ValueError(f"{path}: not a dissection catalog (format {found!r}, expected {FORMAT!r})")
    version = cat.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: malformed catalog, 'version' must be a positive integer")
    if version > VERSION:
        raise ValueError(f"{path}: catalog version {version} is newer than this code reads "
                         f"(version {VERSION})")
    missing = [k for k in _REQUIRED if k not in cat]
    if missing:
        raise ValueError(f"{path}: malformed catalog, missing {', '.join(missing)}")
    shape = cat["feature_shape"]
    if (not isinstance(shape, list) or len(shape) != 3 or not isinstance(cat["units"], list)
            or len(cat["units"]) != shape[0]):
        raise ValueError(f"{path}: malformed catalog, {len(cat['units'])} unit entries for "
                         f"feature_shape {shape}")
    if layer is not None and cat["layer"] != layer:
        raise ValueError(f"{path}: catalog is for layer {cat['layer']} but layer {layer} was asked for")
    if model is not None:
        g = getattr(model, "generator", model)
        want = cat["layer"]
        g.check_layer(want)
        have = int(g.layer_channels(want))
        if have != shape[0]:
            raise ValueError(f"{path}: catalog is for layer {want} with {shape[0]} units but the "
                             f"model's layer has {have}")
    return cat
