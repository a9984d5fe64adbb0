"""Where a rule applies and what it writes: the context's key direction(s), searching images for
that context, and copying / pasting a piece of the layer's value."""
from __future__ import annotations

import dataclasses
import math
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from ..generators.base import Generator
from .keys import (Progress, RewriteError, Stop, _base_weight, _key_state, _numbers, _parts,
                   bounding_box, resize_mask)
from .stats import _C, whitening

_GRIDS: "weakref.WeakKeyDictionary[Generator, dict]" = weakref.WeakKeyDictionary()
HIGHLIGHT_QUANTILE = 0.999            # "Show Context Matches" threshold of the original UI


# =============================================================================== context direction
def context_keys(model, layer: str, contexts, weight_deltas=None):
    """Key rows under the context masks: ``(keys [P, C_in] float64, weights [P])`` for pixels with
    weight > 0 (fractional fringe included, as the original)."""
    g, t, n, _ = _parts(model)
    g.main_weight(layer)
    contexts = list(contexts or [])
    if not contexts:
        raise RewriteError("empty context: add at least one (image number, mask) to the context")
    numbers = []
    for i, item in enumerate(contexts):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise RewriteError(f"context {i} must be an (image number, mask) pair")
        numbers.append(_numbers([item[0]])[0])
    unique = sorted(set(numbers))
    keys = {}
    for s in range(0, len(unique), 16):
        chunk = unique[s:s + 16]
        k, _ = _key_state(g, layer, g.sample_z(chunk), t, n, weight_deltas)
        keys.update({num: k[j] for j, num in enumerate(chunk)})
    rows, weights = [], []
    for num, (_, mask) in zip(numbers, contexts):
        k = keys[num]
        w = resize_mask(mask, k.shape[-2:], what=f"context mask of image {num}").to(k.device)
        sel = w.reshape(-1) > 0
        rows.append(k.permute(1, 2, 0).reshape(-1, k.shape[0])[sel].double())
        weights.append(w.reshape(-1)[sel].double())
    rows, weights = torch.cat(rows), torch.cat(weights)
    if rows.shape[0] == 0:
        raise RewriteError("empty context: the context masks select no pixels at the layer's "
                           "resolution (paint a larger region)")
    return rows, weights


def direction_from_keys(keys: torch.Tensor, weights: torch.Tensor, C, rank: int = 1) -> torch.Tensor:
    """The original's ``'zca'`` key method on given key rows: whiten the weighted keys with
    ``C^-1/2``, take the top-``rank`` right singular vectors, map back through ``C^-1/2``,
    QR-orthonormalise and flip each to agree with the summed whitened keys. -> D [rank, C_in]."""
    rank = int(rank)
    keys = keys.double()
    n_keys, c_in = keys.shape
    if rank < 1:
        raise RewriteError(f"rank must be >= 1, got {rank}")
    if rank > c_in:
        raise RewriteError(f"rank {rank} is larger than the layer's {c_in} key channels")
    if rank > n_keys:
        raise RewriteError(f"rank {rank} is larger than the number of context pixels ({n_keys} at "
                           "the layer's resolution); lower the rank or add context")
    Cm = _C(C).to(keys.device)
    if Cm.shape[0] != c_in:
        raise RewriteError(f"C is {Cm.shape[0]}x{Cm.shape[0]} but the keys have {c_in} channels")
    zca = whitening(Cm)
    white = (weights.double().to(keys.device)[:, None] * keys) @ zca          # rows w * C^-1/2 k
    _, _, vh = torch.linalg.svd(white, full_matrices=False)
    row_dirs = vh[:rank] @ zca                                                 # C^-1/2 q
    q, _ = torch.linalg.qr(row_dirs.T)                                         # [C_in, rank]
    signs = torch.sign(q.T @ white.sum(0))
    signs[signs == 0] = 1
    return (q.T * signs[:, None]).float()


def context_direction(model, layer: str, contexts, C, rank: int = 1, weight_deltas=None):
    """Key direction(s) of the context: D [rank, C_in] (orthonormal rows). ``contexts`` is a list of
    (image number, mask); for a single key pixel D ∝ C⁻¹k."""
    keys, weights = context_keys(model, layer, contexts, weight_deltas)
    return direction_from_keys(keys, weights, C, rank)


def query_direction(model, layer: str, image_number: int, mask, C, weight_deltas=None):
    """The original's "Match Sel" query: normalised ``C⁻¹ k̄`` for the mask-weighted mean key."""
    keys, weights = context_keys(model, layer, [(image_number, mask)], weight_deltas)
    mean = (weights[:, None] * keys).sum(0) / weights.sum()
    d = torch.linalg.lstsq(_C(C).to(mean.device), mean[:, None]).solution[:, 0]
    return (d / d.norm().clamp_min(1e-30)).float()


# =============================================================================== search
@dataclasses.dataclass
class SearchResult:
    """Images ranked by ``max over pixels of k·d``; per-image heat maps ``k·d`` [h, w] at the key
    resolution, and the highlight threshold (quantile of all heat values)."""
    ranking: list[int]
    scores: dict[int, float]
    heatmaps: dict[int, torch.Tensor]
    threshold: float

    def highlight(self, image_number: int, size: int | None = None) -> torch.Tensor:
        """Bool mask of pixels above the threshold (nearest-upsampled to ``size`` if given)."""
        m = (self.heatmaps[image_number] > self.threshold).float()
        if size is not None and tuple(m.shape) != (size, size):
            m = F.interpolate(m[None, None], size=(size, size), mode="nearest")[0, 0]
        return m > 0.5


def search(model, layer: str, direction, image_numbers, batch_size: int = 16,
           quantile: float = HIGHLIGHT_QUANTILE, weight_deltas=None,
           progress: Progress | None = None, stop: Stop | None = None) -> SearchResult:
    """Rank ``image_numbers`` by the maximum over pixels of ``k·d`` (``d`` = direction [C_in], or the
    first row of D [rank, C_in]); heat maps for highlighting, thresholded at the ``quantile`` of
    all heat values (the original's 0.999)."""
    g, t, n, _ = _parts(model)
    g.main_weight(layer)
    d = torch.as_tensor(direction, dtype=torch.float32)
    d = d[0] if d.dim() == 2 else d
    numbers = _numbers(image_numbers)
    if not numbers:
        raise RewriteError("search needs at least one image number")
    if not 0 < quantile < 1:
        raise RewriteError(f"quantile must be in (0, 1), got {quantile}")
    heat, scores = {}, {}
    for s in range(0, len(numbers), max(1, int(batch_size))):
        if stop is not None and stop():
            break
        chunk = numbers[s:s + batch_size]
        key, _ = _key_state(g, layer, g.sample_z(chunk), t, n, weight_deltas)
        if key.shape[1] != d.numel():
            raise RewriteError(f"direction has {d.numel()} channels, {layer}'s keys have {key.shape[1]}")
        h = torch.einsum("nihw,i->nhw", key, d.to(key)).cpu()
        for j, num in enumerate(chunk):
            heat[num] = h[j]
            scores[num] = float(h[j].max())
        if progress is not None:
            progress(min(s + batch_size, len(numbers)), len(numbers), None)
    if not heat:
        raise RewriteError("search stopped before any image was scored")
    allv = torch.cat([h.reshape(-1) for h in heat.values()]).numpy()
    threshold = float(np.quantile(allv, quantile))
    ranking = sorted(scores, key=lambda i: (-scores[i], i))
    return SearchResult(ranking, scores, heat, threshold)


# =============================================================================== copy / paste
@dataclasses.dataclass
class Clip:
    """A piece of a layer's value: ``value`` [C_out, h, w] cropped to the bounding box of the copy
    mask at the value resolution, with that (fractional) mask [h, w]."""
    layer: str
    image_number: int
    value: torch.Tensor
    mask: torch.Tensor
    box: tuple[int, int, int, int]          # (top, left, bottom, right) in the value grid
    grid: tuple[int, int]                   # value resolution (H, W)


def _value_map(model, layer, image_number, weight_deltas=None):
    g, t, n, _ = _parts(model)
    key, state = _key_state(g, layer, g.sample_z([image_number]), t, n, weight_deltas)
    with torch.no_grad():
        v = g.layer_value(layer, key, weight=_base_weight(g, layer, weight_deltas), state=state)
    return key, state, v


def copy_value(model, layer: str, image_number: int, mask, weight_deltas=None) -> Clip:
    """Copy the layer's value under ``mask`` (image-resolution mask) of one image."""
    image_number = _numbers([image_number])[0]
    _, _, v = _value_map(model, layer, image_number, weight_deltas)
    area = resize_mask(mask, v.shape[-2:], what="copy mask").to(v.device)
    box = bounding_box(area)
    if box is None:
        raise RewriteError("empty copy mask: nothing selected to copy")
    t, l, b, r = box
    return Clip(layer, image_number, v[0, :, t:b, l:r].clone(), area[t:b, l:r].clone(), box,
                tuple(v.shape[-2:]))


def paste_center(model, layer: str, mask) -> tuple[float, float]:
    """Paste location (x, y) in image pixels for a paste mask: the centre of the mask's bounding
    box on the layer's value grid (the original's ``centered_location``)."""
    g, *_ = _parts(model)
    grid = _value_grid(model, layer)
    area = resize_mask(mask, grid, what="paste mask")
    box = bounding_box(area)
    if box is None:
        raise RewriteError("empty paste mask: nowhere to paste")
    t, l, b, r = box
    cy, cx = (t + b) // 2, (l + r) // 2
    res = g.resolution
    return ((cx + 0.5) * res / grid[1], (cy + 0.5) * res / grid[0])


def _value_grid(model, layer: str) -> tuple[int, int]:
    """(H, W) of ``layer``'s value map (measured once per generator and layer)."""
    g, *_ = _parts(model)
    table = _GRIDS.setdefault(g, {})
    if layer not in table:
        table[layer] = tuple(_value_map(model, layer, 0)[2].shape[-2:])
    return table[layer]


def paste_target(model, layer: str, image_number: int, clip: Clip, center_xy,
                 weight_deltas=None):
    """Target value map of ``image_number`` with ``clip`` alpha-blended centred at ``center_xy``
    ((x, y) in image pixels; moved to stay inside the map, as the original). Returns
    ``(target [C_out, H, W], region bool [H, W])``; ``region`` is the box the clip covers."""
    g, *_ = _parts(model)
    if clip.layer != layer:
        raise RewriteError(f"the clip was copied from {clip.layer}, not {layer}")
    image_number = _numbers([image_number])[0]
    _, _, v = _value_map(model, layer, image_number, weight_deltas)
    H, W = v.shape[-2:]
    if tuple(clip.grid) != (H, W):
        raise RewriteError(f"clip grid {clip.grid} does not match {layer}'s value grid {(H, W)}")
    try:
        x, y = (float(c) for c in center_xy)
    except (TypeError, ValueError):
        raise RewriteError(f"paste location must be (x, y), got {center_xy!r}") from None
    res = g.resolution
    if not (0 <= x < res and 0 <= y < res) or not (math.isfinite(x) and math.isfinite(y)):
        raise RewriteError(f"paste location ({x:g}, {y:g}) is outside the {res}x{res} image")
    cy, cx = int(y * H / res), int(x * W / res)
    h, w = clip.value.shape[-2:]
    t = max(0, min(H - h, cy - h // 2))
    l = max(0, min(W - w, cx - w // 2))
    target = v[0].clone()
    a = clip.mask.to(target)[None]
    target[:, t:t + h, l:l + w] = (1 - a) * target[:, t:t + h, l:l + w] + a * clip.value.to(target)
    region = torch.zeros(H, W, dtype=torch.bool, device=target.device)
    region[t:t + h, l:l + w] = True
    return target, region


@torch.no_grad()
def render_with_value(model, layer: str, image_number: int, value, weight_deltas=None):
    """The image [3, H, W] rendered with ``layer``'s value replaced by ``value`` [C_out, h, w]
    (e.g. a paste target: the original's paste preview)."""
    g, t, n, _ = _parts(model)
    key, state = _key_state(g, layer, g.sample_z([_numbers([image_number])[0]]), t, n, weight_deltas)
    state = g.run(state, stop=layer)        # state after the layer (ToRGB pending for StyleGAN2)
    value = torch.as_tensor(value).to(state.x)
    state.x = g.value_to_features(layer, value[None])
    return g.finish(g.run(state))[0].cpu()
