"""The dissection tally: per-unit activation quantiles and unit x concept intersection counts,
streamed over batches of upsampled activations and segmentations in bounded memory."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


TOP1_LEVELS = (0.99,)
MAXIOU_LEVELS = tuple(float(q) for q in 1 - np.logspace(-3, np.log10(0.7), 24))   # maxiou, iqr


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
