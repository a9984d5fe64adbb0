"""Concept painting (GANPaint) and unit removal (watermarks, objects) on top of :mod:`core.edits`.

    cat = load_catalog(model, "layer4")                  # <bundle>/catalog/layer4.json
    m = feature_mask(brush_mask_256x256, (8, 8))         # adaptive max pool to the feature grid
    edit = paint_edit(cat, "layer4", "tree", m, mode="draw", n_units=10)
    stack = stack.push(edit)                             # then Renderer.render(z, stack)

Catalogs are plain JSON written by dissection (``core/dissect/``); only these keys are read and
anything else is ignored::

    {"layer": "layer4",
     "units": [{"unit": 0, "label": "tree", "iou": 0.31, "threshold": 2.1, "quantile_99": 5.3, ...}],
     "concepts": {"tree": [{"unit": 12, "iou": 0.31}, ...]},         # ranked by IoU
     "concept_list": ["tree", ...],
     "causal": {"tree": [{"unit": 12, "effect": 0.08}, ...]},        # optional, ranked by effect
     "draw_values": {"tree": [per-unit value, ...]}}                 # optional (list by unit or
                                                                     #  {"unit": value} dict)

Draw values: each unit's 0.99 quantile (GANPaint's default), or with ``value="mean"`` the
concept-conditional mean activation (``draw_values``). Remove value: 0. On the default model
(layer6, 10 causal units, 1/16-image square, 100 held-out images) the quantile raised the concept's
share inside the stroke by tree +0.21, cloud +0.22, grass +0.20, dome +0.06, window +0.02, door
-0.005, and the mean by +0.005, +0.05, +0.08, -0.002, +0.006, +0.003: the mean is too weak to draw.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .edits import UnitEdit
from .model import generator_of, sampling_options

RANKINGS = ("causal", "specific", "iou")
SPECIFIC_FLOOR = 0.01               # collateral floor of the "specific" score (|Δpixel| on [-1, 1])
DRAW_VALUES = ("quantile_99", "mean")


class CatalogError(ValueError):
    """A catalog that is missing, malformed, or lacks what a call needs."""


# --------------------------------------------------------------------------------- masks
def feature_mask(mask, feature_hw, pooling: str = "max") -> torch.Tensor:
    """A mask at image resolution (``[H, W]`` bool, 0/1 integers, or floats in [0, 1]; numpy or
    torch) -> ``[h, w]`` float32 at the feature grid. ``pooling="max"`` (GANPaint's default: a
    cell is as on as the most-on pixel in its region) or ``"mean"``. An empty mask gives all zeros
    (callers treat that as no edit)."""
    if isinstance(feature_hw, int):
        feature_hw = (feature_hw, feature_hw)
    hw = (int(feature_hw[0]), int(feature_hw[1]))
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.dim() == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or m.numel() == 0:
        raise ValueError(f"mask must be [H, W], got shape {list(m.shape)}")
    if m.dtype == torch.bool or not m.is_floating_point():
        m = (m != 0).float()
    else:
        m = m.detach().float().cpu()
        if not bool(torch.isfinite(m).all()):
            raise ValueError("mask holds NaN or inf values")
        if bool((m < 0).any()) or bool((m > 1).any()):
            raise ValueError(f"float mask values must lie in [0, 1] (got "
                             f"{m.min().item():.3g}..{m.max().item():.3g})")
    if not bool((m > 0).any()):
        return torch.zeros(hw)
    if pooling == "max":
        return F.adaptive_max_pool2d(m[None, None], hw)[0, 0]
    if pooling == "mean":
        return F.adaptive_avg_pool2d(m[None, None], hw)[0, 0]
    raise ValueError(f"pooling must be 'max' or 'mean', got {pooling!r}")


# --------------------------------------------------------------------------------- catalogs
def load_catalog(source, layer: str | None = None) -> dict:
    """A catalog dict from a JSON file, or from a bundle (core.Model, Bundle or folder) and a
    layer name (``<bundle>/catalog/<layer>.json``)."""
    bundle = getattr(source, "bundle", source)
    if hasattr(bundle, "catalog_path"):
        if layer is None:
            raise CatalogError("load_catalog(model, layer): the layer is needed")
        path = bundle.catalog_path(layer)
    else:
        path = Path(source)
        if path.is_dir():
            if layer is None:
                raise CatalogError("load_catalog(folder, layer): the layer is needed")
            path = path / "catalog" / f"{layer}.json"
    if not path.is_file():
        raise CatalogError(f"{path}: no catalog (run dissection for layer {layer} first)")
    try:
        cat = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(cat, dict):
        raise CatalogError(f"{path}: a catalog must be a JSON object")
    if layer is not None and cat.get("layer", layer) != layer:
        raise CatalogError(f"{path}: is the catalog of {cat.get('layer')!r}, not {layer!r}")
    return cat


def _known_concepts(catalog: dict) -> list[str]:
    names = list(catalog.get("concept_list") or [])
    for key in ("concepts", "causal"):
        names += [c for c in (catalog.get(key) or {}) if c not in names]
    return names


def _entry_unit(entry) -> int:
    if isinstance(entry, dict):
        return int(entry["unit"])
    return int(entry)


def _ranked(entries, score: str) -> list[int]:
    entries = list(entries or [])
    if entries and all(isinstance(e, dict) and score in e for e in entries):
        entries = sorted(entries, key=lambda e: -float(e[score]))      # stable: ties keep order
    return [_entry_unit(e) for e in entries]


def specific_score(entry: dict) -> float:
    """The ``"specific"`` ranking's score of a causal entry: effect per collateral."""
    return float(entry["effect"]) / (float(entry["collateral"]) + SPECIFIC_FLOOR)


def units_for(catalog: dict, concept: str, n: int = 10, ranking: str = "causal") -> list[int]:
    """The top ``n`` units for ``concept``. ``ranking="causal"`` uses the catalog's causal ranking
    (units whose removal most reduces the concept) and falls back to IoU when the catalog has none
    for the concept; ``"specific"`` reorders the causal entries by effect per collateral
    (``effect / (collateral + SPECIFIC_FLOOR)``: removes the concept, leaves the rest; plain causal
    order when the entries have no ``collateral``); ``"iou"`` uses the dissection IoU ranking (or
    the units labelled with the concept, by IoU). Raises CatalogError when the concept has no
    units."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    units: list[int] = []
    if ranking in ("causal", "specific"):
        entries = list((catalog.get("causal") or {}).get(concept) or [])
        if ranking == "specific" and entries and all(isinstance(e, dict) and "collateral" in e
                                                     for e in entries):
            entries = [dict(e, specific=specific_score(e)) for e in entries]
            units = _ranked(entries, "specific")
        else:
            units = _ranked(entries, "effect")
    if not units:
        units = _ranked((catalog.get("concepts") or {}).get(concept), "iou")
    if not units:
        labelled = [u for u in catalog.get("units") or []
                    if isinstance(u, dict) and u.get("label") == concept]
        units = _ranked(labelled, "iou")
    if not units:
        known = [c for c in _known_concepts(catalog)
                 if (catalog.get("concepts") or {}).get(c) or (catalog.get("causal") or {}).get(c)]
        raise CatalogError(f"concept {concept!r} has no units in the {catalog.get('layer', '')} "
                           f"catalog; concepts with units: {', '.join(known) or 'none'}")
    return list(dict.fromkeys(units))[:n]


def draw_values(catalog: dict, concept: str, units: Sequence[int],
                value: str = "quantile_99") -> list[float]:
    """Per-unit values to draw ``concept`` with: each unit's ``quantile_99`` (``value="quantile_99"``)
    or the catalog's concept-conditional mean activation (``value="mean"``, its ``draw_values``
    table; units it lacks fall back to the quantile)."""
    if value not in DRAW_VALUES:
        raise ValueError(f"value must be one of {', '.join(DRAW_VALUES)}, got {value!r}")
    units = [int(u) for u in units]
    table = (catalog.get("draw_values") or {}).get(concept) if value == "mean" else None
    if table:
        try:
            if isinstance(table, dict):
                return [float(table[str(u)] if str(u) in table else table[u]) for u in units]
            return [float(table[u]) for u in units]
        except (KeyError, IndexError, TypeError, ValueError):
            pass                                   # incomplete table: fall back to the quantile
    q = {}
    for entry in catalog.get("units") or []:
        if isinstance(entry, dict) and "unit" in entry and entry.get("quantile_99") is not None:
            q[int(entry["unit"])] = float(entry["quantile_99"])
    missing = [u for u in units if u not in q]
    if missing:
        raise CatalogError(f"the {catalog.get('layer', '')} catalog has no draw value for units "
                           f"{missing[:5]} (no quantile_99)")
    return [q[u] for u in units]


def paint_edit(catalog: dict, layer: str, concept: str, mask, mode: str = "draw",
               n_units: int = 10, ranking: str = "causal", alpha: float = 1.0,
               value: str = "quantile_99") -> UnitEdit:
    """A UnitEdit that draws (``mode="draw"``) or removes (``"remove"``) ``concept`` inside
    ``mask`` (``[h, w]`` in [0, 1] at the layer's feature grid; other sizes are resized when
    applied; None = everywhere) using the concept's top ``n_units`` units (GANPaint: 4/10/15),
    drawn at ``value`` (see :func:`draw_values`)."""
    if catalog.get("layer", layer) != layer:
        raise CatalogError(f"this is the catalog of {catalog.get('layer')!r}, not {layer!r}")
    if mode not in ("draw", "remove"):
        raise ValueError(f"mode must be 'draw' or 'remove', got {mode!r}")
    units = units_for(catalog, concept, n_units, ranking)
    values = draw_values(catalog, concept, units, value) if mode == "draw" else None
    if mask is not None and not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    return UnitEdit(layer, units, values, mask, alpha, f"{mode} {concept}")


# --------------------------------------------------------------------------------- causal ranking
def _tile(obj, n: int, k: int):
    """Repeat every tensor whose batch axis is ``n`` k times (recursing into lists/tuples/dicts)."""
    if isinstance(obj, torch.Tensor):
        if obj.dim() >= 1 and obj.shape[0] == n:
            return obj.repeat(k, *([1] * (obj.dim() - 1)))
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tile(o, n, k) for o in obj)
    if isinstance(obj, dict):
        return {key: _tile(v, n, k) for key, v in obj.items()}
    return obj


def _share(labels: torch.Tensor, index: int) -> torch.Tensor:
    return (labels == index).float().mean(dim=(1, 2))


@torch.no_grad()
def ablation_effects(model, segmenter, layer: str, concept: str, image_numbers,
                     unit_sets: Sequence[Sequence[int]], batch_size: int = 16,
                     truncation=None, noise=None, seed: int = 1) -> dict:
    """For each set of units, zero them all at ``layer`` (whole image) and measure ``concept``'s
    pixel share with the segmenter. Returns ``{"base": mean share unedited, "shares": [mean share
    per set], "collateral": [mean |Δpixel| (images in [-1, 1]) over the pixels the unedited images
    do not label ``concept``, per set], "per_image_base": [N], "per_image": [[N] per set]}``.
    The layers up to ``layer`` run once per image; the later layers and the segmenter run ``1 + len(unit_sets)`` times per image
    (several sets share one batch of about ``batch_size`` images)."""
    from .images import parse_image_numbers
    g = generator_of(model)
    g.check_layer(layer)
    c = segmenter.concept_index(concept)
    channels = g.layer_channels(layer)
    sets = [[int(u) for u in s] for s in unit_sets]
    bad = sorted({u for s in sets for u in s if not 0 <= u < channels})
    if bad:
        raise ValueError(f"units {bad[:5]} out of range; {layer} has {channels} units")
    numbers = parse_image_numbers(image_numbers)
    if not numbers:
        raise ValueError("no image numbers given")
    t, nz = sampling_options(model, truncation, noise)
    z = g.sample_z(numbers, seed)
    z = z.to(g.device)
    bs = max(1, int(batch_size))
    base_all, per_set = [], [[] for _ in sets]
    change = [[0.0, 0] for _ in sets]                     # |Δpixel| sum and count outside concept
    for i in range(0, len(z), bs):
        zb = z[i:i + bs]
        nb = len(zb)
        state = g.run(g.start(zb, truncation=t, noise=nz), stop=layer)
        base_img = g.finish(g.run(state.clone()))
        base_lab = segmenter.segment(base_img)
        base_all.append(_share(base_lab, c).cpu())
        outside = (base_lab != c).to(base_img.device)
        per_batch = max(1, bs // nb)
        for j in range(0, len(sets), per_batch):
            chunk = sets[j:j + per_batch]
            tiled = state.clone()
            tiled.x = state.x.repeat(len(chunk), 1, 1, 1)
            tiled.extras = _tile(state.extras, nb, len(chunk))
            for k, units in enumerate(chunk):
                if units:
                    tiled.x[k * nb:(k + 1) * nb, units] = 0
            images = g.finish(g.run(tiled))
            shares = _share(segmenter.segment(images), c).cpu()
            for k in range(len(chunk)):
                per_set[j + k].append(shares[k * nb:(k + 1) * nb])
                diff = (images[k * nb:(k + 1) * nb] - base_img).abs().mean(1)
                change[j + k][0] += float(diff[outside].sum())
                change[j + k][1] += int(outside.sum())
    base_all = torch.cat(base_all)
    per_image = [torch.cat(s) for s in per_set]
    return {"base": base_all.mean().item(), "shares": [s.mean().item() for s in per_image],
            "collateral": [total / max(1, count) for total, count in change],
            "per_image_base": base_all.tolist(), "per_image": [s.tolist() for s in per_image]}


def causal_ranking(model, segmenter, layer: str, concept: str, image_numbers,
                   candidate_units: Iterable[int] | None = None, batch_size: int = 16,
                   truncation=None, noise=None, seed: int = 1) -> list[dict]:
    """Units ranked by how much zeroing each one alone (whole image) reduces ``concept``'s pixel
    share, as judged by ``segmenter``, averaged over ``image_numbers``:
    ``[{"unit": u, "effect": base_share - ablated_share, "collateral": mean |Δpixel| elsewhere},
    ...]``, largest effect first (the format of a catalog's ``"causal"`` entry).

    Cost: the layers up to ``layer`` run once per image; the later layers plus the segmenter run
    ``(1 + n_candidates) * n_images`` times (candidates are batched together). Restrict
    ``candidate_units`` (e.g. the concept's top 40 by IoU: ``units_for(cat, c, 40, "iou")``) to keep
    it cheap: all 512 units of a 256-px ProGAN layer4 x 100 images is ~51k tail passes."""
    g = generator_of(model)
    units = (list(range(g.layer_channels(g.check_layer(layer)))) if candidate_units is None
             else list(dict.fromkeys(int(u) for u in candidate_units)))
    res = ablation_effects(model, segmenter, layer, concept, image_numbers, [[u] for u in units],
                           batch_size, truncation, noise, seed)
    ranked = [{"unit": u, "effect": res["base"] - s, "collateral": col}
              for u, s, col in zip(units, res["shares"], res["collateral"])]
    ranked.sort(key=lambda r: (-r["effect"], r["unit"]))
    return ranked


# --------------------------------------------------------------------------------- removal
def watermark_rate(images_labels: torch.Tensor, wm_index: int, min_fraction: float = 0.005) -> float:
    """Share of images (``[N, H, W]`` segmenter labels) with at least ``min_fraction`` of their
    pixels labelled ``wm_index`` (default 0.5%)."""
    labels = torch.as_tensor(images_labels)
    if labels.dim() != 3:
        raise ValueError(f"labels must be [N, H, W], got shape {list(labels.shape)}")
    if labels.shape[0] == 0:
        return 0.0
    frac = (labels == int(wm_index)).float().mean(dim=(1, 2))
    return float((frac >= min_fraction).float().mean().item())


def remove_units_edit(layer: str, units: Iterable[int], mask=None, label: str | None = None) -> UnitEdit:
    """A UnitEdit zeroing ``units`` of ``layer`` (everywhere, or inside ``mask``)."""
    units = [int(u) for u in units]
    return UnitEdit(layer, units, None, mask, 1.0, label or f"remove {len(units)} units")


__all__ = ["feature_mask", "load_catalog", "units_for", "specific_score", "draw_values",
           "paint_edit", "causal_ranking", "ablation_effects", "watermark_rate",
           "remove_units_edit", "CatalogError", "RANKINGS", "DRAW_VALUES"]
