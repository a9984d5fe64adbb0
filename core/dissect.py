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
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model import sampling_options

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
MAXIOU_LEVELS = tuple(float(q) for q in 1 - np.logspace(-3, np.log10(0.7), 24))   # maxiou, iqr
TOP1_LEVELS = (0.99,)
QUANTILE_LEVELS = (0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.995, 0.999)
IOU_THRESHOLD = 0.04
IQR_THRESHOLD = 0.01         # "iqr" protocol: a label must carry this much information too
LIST_MIN_IOU = 0.01          # concept_iou / concept rankings keep entries above this ...
RANK_MIN = 20                # ... and every concept ranking keeps at least its top 20 units
QUANTILE_SAMPLE = 1 << 16    # raw values kept per unit for the quantiles
QUANTILE_TOTAL = 1 << 24     # ... and at most this many over all units (64 MB)
GRID_BINS = 1024             # histogram bins per (unit, concept)
GRID_TOTAL = 1 << 23         # units * concepts * bins at most this (64 MB of counts)
CHUNK_ELEMENTS = 1 << 22     # upsampled values processed at once (12 bytes each of workspace)


class DissectionStopped(Exception):
    """Raised by :func:`dissect` when its ``stop()`` callback returns True."""


# =============================================================================== upsampling
def upsample(act: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of ``[..., h, w]`` to ``size`` (pixel-centre grid, border values
    repeated): ``F.interpolate(mode="bilinear", align_corners=False)``. See the module docstring
    for why not ``align_corners=True``."""
    size = (int(size[0]), int(size[1])) if not isinstance(size, int) else (size, size)
    x = torch.as_tensor(act).float()
    shape = x.shape
    x = x.reshape(-1, 1, shape[-2], shape[-1])
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return y.reshape(*shape[:-2], *size)


def interpolation_matrix(n_out: int, n_in: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[n_out, n_in]`` weights of 1-D linear interpolation on the pixel-centre grid with border
    clamping: ``A @ x`` equals ``F.interpolate(x, n_out, mode="linear", align_corners=False)``.
    Source coordinate of output pixel i: ``(i + 0.5) * n_in / n_out - 0.5``, clamped at 0."""
    i = torch.arange(n_out, dtype=torch.float64)
    src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp(min=0, max=n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    a.index_put_((rows, i0), 1 - w1, accumulate=True)
    a.index_put_((rows, i1), w1, accumulate=True)
    return a.to(dtype=dtype, device=device)


# =============================================================================== the tally
class Tally:
    """Running statistics of one layer over a sample set. Every buffer's size is fixed at the first
    batch by (units, concepts, bins, top_k, quantile sample size, N for the sample's positions);
    nothing grows with the images seen. ``update`` per batch, ``finish`` once."""

    def __init__(self, units: int, n_concepts: int, feature_hw, seg_hw, n_images: int, *,
                 levels: Sequence[float], top_k: int = 12, seed: int = 1,
                 quantile_sample: int | None = None, bins: int | None = None, device="cpu"):
        self.units, self.n_concepts = int(units), int(n_concepts)
        self.h, self.w = (int(v) for v in feature_hw)
        self.H, self.W = (int(v) for v in seg_hw)
        self.n_images = int(n_images)
        self.levels = [float(q) for q in levels]
        self.top_k = max(1, min(int(top_k), self.n_images))
        self.device = torch.device(device)
        C, K = self.units, self.n_concepts
        # grid histogram [C, K*F]: index label*F + bin
        if bins is None:
            bins = min(GRID_BINS, max(64, GRID_TOTAL // max(1, C * K)))
        self.bins = max(4, int(bins) - int(bins) % 2)     # even: doubling merges bin pairs
        self.hist = torch.zeros(C, K * self.bins, dtype=torch.int64, device=self.device)
        self.lo = None                 # [C] float64 grid origin (set by the first batch)
        self.width = None              # [C] float64 bin width
        self.doublings = 0
        # concept pixel counts and concept-conditional activation sums
        self.concept_pixels = torch.zeros(K, dtype=torch.int64, device=self.device)
        self.concept_sums = torch.zeros(C, K, dtype=torch.float64, device=self.device)
        # top-k by spatial max
        self.top_values = torch.full((C, self.top_k), -math.inf, device=self.device)
        self.top_numbers = torch.full((C, self.top_k), -1, dtype=torch.int64, device=self.device)
        # raw quantile sample: m positions per image (all of them when everything fits)
        hw = self.h * self.w
        per_unit = QUANTILE_SAMPLE if quantile_sample is None else int(quantile_sample)
        per_unit = max(1, min(per_unit, QUANTILE_TOTAL // max(1, C)))
        self.exact_quantiles = self.n_images * hw <= per_unit
        self.per_image = hw if self.exact_quantiles else max(1, per_unit // self.n_images)
        self.sample = torch.empty(C, self.n_images * self.per_image, device=self.device)
        self.sample_count = 0
        self._rng = torch.Generator().manual_seed(int(seed))
        self.images_seen = 0
        # upsampling weights (same numbers as F.interpolate bilinear, align_corners=False)
        self.a_h = interpolation_matrix(self.H, self.h, device=self.device)
        self.a_w = interpolation_matrix(self.W, self.w, device=self.device)
        self._a_w_t = self.a_w.t().contiguous()
        self._concept_ids = torch.arange(K, device=self.device).view(1, K, 1, 1)
        self._one = torch.ones(1, dtype=torch.int64, device=self.device)
        self._buf_t = self._buf_y = self._buf_i = None      # workspace, sized at the first batch

    def _alloc_workspace(self, b: int) -> None:
        """Scratch for the histogram pass, reused every batch: at most CHUNK_ELEMENTS upsampled
        values (12 bytes each) at a time, whole images and all units when they fit."""
        C, HW = self.units, self.H * self.W
        if C * HW <= CHUNK_ELEMENTS:
            self._chunk_images, self._chunk_units = max(1, min(b, CHUNK_ELEMENTS // (C * HW))), C
        else:
            self._chunk_images, self._chunk_units = 1, max(1, CHUNK_ELEMENTS // HW)
        n = self._chunk_images * self._chunk_units
        self._buf_t = torch.empty(n * self.h * self.W, device=self.device)
        self._buf_y = torch.empty(n * HW, device=self.device)
        self._buf_i = torch.empty(n * HW, dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ memory
    def state_tensors(self) -> dict:
        """The accumulators (for memory checks)."""
        return {"hist": self.hist, "concept_pixels": self.concept_pixels,
                "concept_sums": self.concept_sums, "top_values": self.top_values,
                "top_numbers": self.top_numbers, "sample": self.sample}

    def workspace_tensors(self) -> dict:
        """Scratch buffers of the histogram pass (fixed size: CHUNK_ELEMENTS values)."""
        return {k: v for k, v in (("t", self._buf_t), ("y", self._buf_y), ("i", self._buf_i))
                if v is not None}

    def nbytes(self, workspace: bool = False) -> int:
        tensors = list(self.state_tensors().values())
        if workspace:
            tensors += list(self.workspace_tensors().values())
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ per batch
    def _sample_positions(self, b: int) -> torch.Tensor:
        hw = self.h * self.w
        if self.exact_quantiles:
            return torch.arange(hw).repeat(b, 1)
        return torch.stack([torch.randperm(hw, generator=self._rng)[:self.per_image]
                            for _ in range(b)])

    def _init_grid(self, feats: torch.Tensor, sample: torch.Tensor) -> None:
        s = sample.double()
        lo = torch.quantile(s, 0.05, dim=1) if s.shape[1] > 1 else s[:, 0]
        hi = feats.double().amax(dim=(0, 2, 3))
        span = (hi - lo).clamp(min=0)
        tiny = 1e-6 * (lo.abs() + 1)
        self.lo = lo
        self.width = torch.maximum(span * 1.25 / self.bins, tiny)

    def _grow_grid(self, batch_max: torch.Tensor) -> None:
        """Double the width of units whose grid ends below the batch maximum, merging bin pairs."""
        K, Fb = self.n_concepts, self.bins
        while True:
            grow = batch_max >= self.lo + Fb * self.width
            if not bool(grow.any()):
                return
            idx = grow.nonzero().flatten()
            h = self.hist[idx].view(len(idx), K, Fb // 2, 2).sum(-1)
            merged = torch.zeros(len(idx), K, Fb, dtype=self.hist.dtype, device=self.device)
            merged[:, :, :Fb // 2] = h
            self.hist[idx] = merged.view(len(idx), K * Fb)
            self.width[idx] *= 2
            self.doublings += 1

    @torch.no_grad()
    def update(self, feats: torch.Tensor, seg: torch.Tensor, numbers: Sequence[int]) -> None:
        """Add a batch: ``feats [b,C,h,w]`` raw layer output, ``seg [b,H,W]`` concept indices,
        ``numbers`` the batch's image numbers."""
        b, C, h, w = feats.shape
        if (C, h, w) != (self.units, self.h, self.w) or tuple(seg.shape) != (b, self.H, self.W):
            raise ValueError(f"batch shapes {tuple(feats.shape)} / {tuple(seg.shape)} do not match "
                             f"the tally ({self.units}, {self.h}, {self.w}) / ({self.H}, {self.W})")
        if self.images_seen + b > self.n_images:
            raise ValueError(f"more images than the {self.n_images} announced")
        feats = feats.float().to(self.device)
        seg = seg.to(self.device)
        K, Fb = self.n_concepts, self.bins
        numbers_t = torch.as_tensor(list(numbers), dtype=torch.int64, device=self.device)

        # raw quantile sample
        pos = self._sample_positions(b).to(self.device)                 # [b, m]
        flat = feats.reshape(b, C, h * w)
        picked = torch.gather(flat, 2, pos[:, None, :].expand(b, C, pos.shape[1]))  # [b, C, m]
        picked = picked.permute(1, 0, 2).reshape(C, -1)
        if self.lo is None:
            self._init_grid(feats, picked)
            self._alloc_workspace(b)
        self.sample[:, self.sample_count:self.sample_count + picked.shape[1]] = picked
        self.sample_count += picked.shape[1]

        # top-k by spatial max
        smax = flat.amax(dim=2).t()                                        # [C, b]
        vals = torch.cat([self.top_values, smax], 1)
        nums = torch.cat([self.top_numbers, numbers_t[None].expand(C, b)], 1)
        top = vals.topk(self.top_k, dim=1)
        self.top_values = top.values
        self.top_numbers = torch.gather(nums, 1, top.indices)

        # concept pixel counts and exact sums of upsampled activation per concept: upsampling is
        # linear, so sum_p up(x)[p] * [label p = k] = sum_cells x * (A_h^T onehot_k A_w)
        self.concept_pixels += torch.bincount(seg.reshape(-1), minlength=K)[:K]
        onehot = (seg[:, None] == self._concept_ids).float()                # [b, K, H, W]
        down = torch.matmul(torch.matmul(self.a_h.t(), onehot), self.a_w)   # [b, K, h, w]
        self.concept_sums += torch.bmm(flat, down.reshape(b, K, h * w).transpose(1, 2)).sum(0).double()

        # grid histogram of upsampled values per (unit, concept)
        self._grow_grid(feats.double().amax(dim=(0, 2, 3)))
        sc = (1.0 / self.width).float()
        lo = self.lo.float()
        y_raw = (feats - lo.view(1, C, 1, 1)) * sc.view(1, C, 1, 1)         # upsampling is linear
        y_raw = y_raw.transpose(0, 1).contiguous()                         # [C, b, h, w]
        label_off = seg.reshape(b, -1) * Fb                                # [b, H*W]
        HW, n_img, n_units = self.H * self.W, self._chunk_images, self._chunk_units
        for u in range(0, C, n_units):
            uu = min(n_units, C - u)
            for i in range(0, b, n_img):
                part = y_raw[u:u + uu, i:i + n_img]
                n = part.shape[1]
                t = self._buf_t[:uu * n * h * self.W].view(uu * n * h, self.W)
                torch.mm(part.reshape(uu * n * h, w), self._a_w_t, out=t)
                y = self._buf_y[:uu * n * HW].view(uu * n, self.H, self.W)
                torch.matmul(self.a_h, t.view(uu * n, h, self.W), out=y)   # upsampled [uu*n,H,W]
                y = y.view(uu, n * HW).clamp_(0, Fb - 1)
                idx = self._buf_i[:uu * n * HW].view(uu, n * HW)
                idx.copy_(y)                                               # floor (values >= 0)
                idx.add_(label_off[i:i + n].reshape(1, -1))
                self.hist[u:u + uu].scatter_add_(1, idx, self._one.expand_as(idx))
        self.images_seen += b

    # ------------------------------------------------------------------ results
    @torch.no_grad()
    def finish(self) -> dict:
        """Final statistics (float64 / int64 tensors on the CPU)."""
        if self.images_seen == 0:
            raise ValueError("no images were added")
        C, K, Fb = self.units, self.n_concepts, self.bins
        total = self.images_seen * self.H * self.W
        hist = self.hist.view(C, K, Fb).cpu()
        # S[u, k, e] = #pixels with bin >= e (i.e. act >= lo + e*width) and label k
        suffix = hist.flip(-1).cumsum(-1).flip(-1)
        active = suffix.sum(1)                                             # [C, Fb]
        edge_level = 1 - active.double() / total                           # [C, Fb]
        edges = torch.arange(1, Fb)                                        # usable edges 1..Fb-1
        levels = torch.tensor(self.levels, dtype=torch.float64)
        chosen = torch.stack([edges[(edge_level[:, 1:] - q).abs().argmin(-1)] for q in levels],
                             1)                                            # [C, L] nearest edge
        lo, width = self.lo.cpu(), self.width.cpu()
        thresholds = lo[:, None] + chosen.double() * width[:, None]        # [C, L]
        inter = torch.gather(suffix, 2, chosen[:, None, :].expand(C, K, len(self.levels)))
        inter = inter.permute(0, 2, 1)                                     # [C, L, K]
        act = torch.gather(active, 1, chosen)                              # [C, L]
        cpx = self.concept_pixels.cpu()
        union = act[:, :, None] + cpx[None, None, :] - inter
        iou = torch.where(union > 0, inter.double() / union.clamp(min=1).double(),
                          torch.zeros((), dtype=torch.float64))
        measured = torch.gather(edge_level, 1, chosen)                     # [C, L]
        iqr, chance = _iqr_and_chance(inter, act, cpx, total)
        n = self.sample_count
        sample = self.sample[:, :n].double().cpu()
        qs = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
        rows = max(1, (1 << 24) // max(1, n))                              # torch.quantile limit
        quantiles = torch.cat([torch.quantile(sample[i:i + rows], qs, dim=1).t()
                               for i in range(0, C, rows)])                # [C, Q]
        sums = self.concept_sums.cpu()
        means = torch.where(cpx[None] > 0, sums / cpx.clamp(min=1)[None].double(),
                            torch.full_like(sums, math.nan))
        return {"thresholds": thresholds, "levels": measured, "iou": iou, "inter": inter,
                "iqr": iqr, "iou_chance": chance,
                "active": act, "concept_pixels": cpx, "total_pixels": total,
                "concept_means": means, "quantiles": quantiles,
                "top_values": self.top_values.cpu(), "top_numbers": self.top_numbers.cpu(),
                "sample_size": n}


def _iqr_and_chance(inter, act, cpx, total):
    """Information quality ratio I(M;Y)/H(M,Y) of unit mask M and concept mask Y (0 when they
    are independent; GAN Dissection ICLR'19), and the IoU two independent masks of the same sizes
    would have, A*C/(A+C-A*C) in pixel fractions. Shapes [C, L, K]."""
    p11 = inter.double() / total
    pa = (act.double() / total)[:, :, None]
    pc = (cpx.double() / total)[None, None, :]
    cells = [(p11, pa, pc), (pa - p11, pa, 1 - pc), (pc - p11, 1 - pa, pc),
             (1 - pa - pc + p11, 1 - pa, 1 - pc)]
    mi = torch.zeros_like(p11)
    joint = torch.zeros_like(p11)
    for p, px, py in cells:
        p = p.clamp(min=0)
        pos = p > 0
        logp = torch.where(pos, p, torch.ones_like(p)).log()
        mi += torch.where(pos, p * (logp - (px * py).clamp(min=1e-300).log()), torch.zeros_like(p))
        joint -= torch.where(pos, p * logp, torch.zeros_like(p))
    iqr = torch.where(joint > 0, mi / joint.clamp(min=1e-300), torch.zeros_like(mi)).clamp(min=0)
    denom = pa + pc - pa * pc
    chance = torch.where(denom > 0, pa * pc / denom.clamp(min=1e-300), torch.zeros_like(denom))
    return iqr, chance.expand_as(p11)


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
    from .images import parse_image_numbers

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
    from .bundle import atomic_write
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
    from .images import mask_border, to_uint8
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


__all__ = ["dissect", "DissectionStopped", "Tally", "save_catalog", "load_catalog",
           "summary_table", "layer_chart", "unit_overlay", "top_images", "upsample",
           "interpolation_matrix", "compact_numbers", "FORMAT", "VERSION", "PROTOCOLS",
           "MAXIOU_LEVELS", "QUANTILE_LEVELS", "IOU_THRESHOLD", "IQR_THRESHOLD"]
