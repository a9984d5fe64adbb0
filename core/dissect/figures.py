"""What a catalog is shown as: a summary table, the interpretable-unit rule, a per-layer chart,
unit overlays and a unit's top images."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..model import sampling_options
from .tally import IOU_THRESHOLD, upsample

# =============================================================================== reports
def summary_table(catalog: dict) -> str:
    """Plain-text table: per concept, the interpretable units labelled with it, and the top unit
    of its ranking with that unit's IoU (and IQR and chance IoU when the catalog has them)."""
    concepts = catalog["concept_list"]
    n_units = len(catalog["units"])
    inter = catalog.get("interpretable", {})
    width = max([len("concept")] + [len(c) for c in concepts])

    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)
    lines = [f"{catalog.get('model', '')} {catalog['layer']}: {n_units} units, "
             f"{catalog.get('samples', '?')} samples, protocol {catalog.get('protocol', '?')}, "
             f"segmenter {catalog.get('segmenter', '?')}",
             f"{'concept'.ljust(width)}  interpretable  top unit  its IoU  its IQR  chance IoU"]
    for c in concepts:
        ranking = catalog["concepts"].get(c) or []
        best = ranking[0] if ranking else {}
        chance = None
        if best and 0 <= best.get("unit", -1) < n_units:
            u = catalog["units"][best["unit"]]
            chance = u.get("iou_chance") if u.get("label") == c else None
        lines.append(f"{c.ljust(width)}  {inter.get(c, 0):>13}  {str(best.get('unit', '-')):>8}  "
                     f"{num(best.get('iou')):>7}  {num(best.get('iqr'), '.4f'):>7}  "
                     f"{num(chance):>10}")
    total = sum(inter.values())
    lines.append(f"{'all'.ljust(width)}  {total:>13}  ({100 * total / max(1, n_units):.0f}% of "
                 f"{n_units} units: {interpretable_rule(catalog)})")
    return "\n".join(lines)


def concept_homes(catalogs: dict[str, dict]) -> dict[str, tuple[str, float, int]]:
    """Where each concept lives among the dissected layers ``{layer: catalog}``: ``{concept:
    (layer whose best unit matches it best, that unit's IoU, units labelled with it there)}``."""
    homes: dict[str, tuple[str, float, int]] = {}
    for layer, cat in catalogs.items():
        counts = cat.get("interpretable", {})
        for concept, ranking in (cat.get("concepts") or {}).items():
            if not ranking:
                continue
            iou = max(float(e["iou"]) for e in ranking)
            if concept not in homes or iou > homes[concept][1]:
                homes[concept] = (layer, iou, int(counts.get(concept, 0)))
    return homes


def interpretable_rule(catalog: dict) -> str:
    """The catalog's interpretability rule in words, e.g. ``IoU > 0.04 and IQR > 0.01``."""
    rule = f"IoU > {catalog.get('iou_threshold', IOU_THRESHOLD)}"
    if "iqr_threshold" in catalog:
        rule += f" and IQR > {catalog['iqr_threshold']}"
    return rule


_CHART_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
                 (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150)]


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                                   # Pillow < 10.1
        return ImageFont.load_default()


def layer_chart(catalogs: Sequence[dict], path) -> Path:
    """A PNG stacked bar chart: interpretable units per concept (stack) per layer (bar), in the
    order given. Drawn with PIL only."""
    from PIL import Image, ImageDraw

    catalogs = list(catalogs)
    if not catalogs:
        raise ValueError("no catalogs to chart")
    concepts = []
    for cat in catalogs:
        concepts += [c for c in cat["concept_list"] if c not in concepts]
    palette = catalogs[0].get("palette") or []
    colors = {c: (tuple(palette[i]) if i < len(palette) else _CHART_COLORS[i % len(_CHART_COLORS)])
              for i, c in enumerate(concepts)}
    counts = [[int(cat.get("interpretable", {}).get(c, 0)) for c in concepts] for cat in catalogs]
    totals = [sum(row) for row in counts]
    units = [len(cat["units"]) for cat in catalogs]
    top = max(1, max(totals))
    step = 10 ** max(0, int(math.log10(top)))
    step = step if top / step >= 4 else max(1, step // 2)
    ymax = int(math.ceil(top / step) * step)
    font, small = _font(16), _font(13)
    shown = [c for j, c in enumerate(concepts) if any(row[j] for row in counts)] or concepts
    bar_w, gap = 46, 22
    left, right, top_m, bottom = 60, 190, 50, 70
    plot_h = 320
    title = f"Interpretable units per layer ({catalogs[0].get('model', '')}, " \
            f"{interpretable_rule(catalogs[0])})"
    width = max(left + len(catalogs) * (bar_w + gap) + gap + right,
                left + int(font.getlength(title)) + 20)
    height = max(top_m + plot_h + bottom, top_m + 22 * len(shown) + 20)
    im = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.text((left, 14), title, fill=(0, 0, 0), font=font)
    y0 = top_m + plot_h
    for t in range(0, ymax + 1, step):
        y = y0 - plot_h * t / ymax
        d.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        label = str(t)
        d.text((left - 8 - d.textlength(label, font=small), y - 7), label, fill=(60, 60, 60), font=small)
    d.line([(left, top_m), (left, y0)], fill=(0, 0, 0))
    d.line([(left, y0), (width - right, y0)], fill=(0, 0, 0))
    for i, (cat, row) in enumerate(zip(catalogs, counts)):
        x = left + gap + i * (bar_w + gap)
        y = y0
        for c, n in zip(concepts, row):
            if n:
                hgt = plot_h * n / ymax
                d.rectangle([x, y - hgt, x + bar_w, y], fill=colors[c], outline=(255, 255, 255))
                y -= hgt
        label = str(cat["layer"])
        d.text((x + bar_w / 2 - d.textlength(label, font=small) / 2, y0 + 6), label,
               fill=(0, 0, 0), font=small)
        sub = f"{totals[i]}/{units[i]}"
        d.text((x + bar_w / 2 - d.textlength(sub, font=small) / 2, y0 + 24), sub,
               fill=(90, 90, 90), font=small)
    d.text((left, y0 + 46), "layer (interpretable / units)", fill=(60, 60, 60), font=small)
    lx, ly = width - right + 20, top_m
    for c in shown:
        d.rectangle([lx, ly + 2, lx + 14, ly + 16], fill=colors[c], outline=(80, 80, 80))
        d.text((lx + 22, ly), c, fill=(0, 0, 0), font=small)
        ly += 22
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


def unit_overlay(image, activation, threshold: float) -> np.ndarray:
    """GAN Dissection style overlay, ``uint8 [H,W,3]``: ``image`` ``[3,H,W]`` in [-1,1];
    ``activation`` ``[h,w]`` upsampled bilinearly (as in dissection) to ``[H,W]``; pixels with
    ``act > threshold`` are kept, the rest darkened to 50%, and mask pixels with a 4-neighbour
    outside the mask get a 1-px yellow (255,255,0) outline (the image edge is not a border)."""
    from ..images import mask_border, to_uint8
    img = to_uint8(torch.as_tensor(image).detach().float().cpu())
    if img.ndim != 3:
        raise ValueError("unit_overlay takes one image [3,H,W]")
    H, W = img.shape[:2]
    act = torch.as_tensor(activation).detach().float().cpu()
    if act.dim() != 2:
        raise ValueError(f"activation must be [h,w], got shape {tuple(act.shape)}")
    mask = (upsample(act, (H, W)) > float(threshold)).numpy()
    out = img.astype(np.float32)
    out[~mask] *= 0.5
    out[mask_border(mask)] = (255, 255, 0)
    return out.astype(np.uint8)


def top_images(model, catalog: dict, unit: int, count: int | None = None,
               batch_size: int = 16) -> list[tuple[int, np.ndarray]]:
    """``[(image number, overlay uint8 [H,W,3]), ...]`` for a unit's top images in ``catalog``,
    regenerated from the catalog's seed and thresholded at the unit's catalog threshold."""
    entry = catalog["units"][int(unit)]
    numbers = entry["top"][:count] if count else entry["top"]
    if not numbers:
        return []
    layer, seed = catalog["layer"], int(catalog.get("seed", 1))
    g = model.generator
    t, n = sampling_options(model)
    device = g.device
    out = []
    with torch.no_grad():
        for i in range(0, len(numbers), batch_size):
            nums = numbers[i:i + batch_size]
            state = g.run(g.start(g.sample_z(nums, seed).to(device), truncation=t, noise=n),
                          stop=layer)
            feats = state.x[:, int(unit)].cpu()
            images = g.finish(g.run(state)).cpu()
            out += [(num, unit_overlay(im, f, entry["threshold"]))
                    for num, im, f in zip(nums, images, feats)]
    return out
