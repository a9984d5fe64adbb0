"""Rewriting a generator's rule (Bau et al., "Rewriting a Deep Generative Model", ECCV 2020).

A conv layer is treated as an associative memory ``W: key -> value``. The user shows *context*
(masks on a few images: "where the rule applies"), copies a piece of the layer's *value* from one
image and pastes it into another; the layer's weight is then changed only along the context's key
direction(s) ``D`` so that the pasted value appears::

    W' = W + ΔW,   ΔW[o, i, y, x] = sum_r Λ[o, r, y, x] * D[r, i]     (rank ``rank`` along C_in)

Pipeline (every step is a plain function; see ``core.rules.apply_rule`` for the whole thing)::

    stats = get_stats(model, layer)                   # C = E[k kᵀ] (python -m core stats ...)
    D = context_direction(model, layer, [(img, mask), ...], stats, rank=1)
    clip = copy_value(model, layer, obj_img, obj_mask)
    target, region = paste_target(model, layer, paste_img, clip, paste_center(model, layer, paste_mask))
    edit = rewrite(model, layer, D, paste_img, target, region, stats)    # -> WeightEdit(layer, Λ, D)

Keys and values (what the original code uses, davidbau/rewriting):

- ProGAN: key = the conv input (after PixelNorm and the 2x up-sampling), value = the raw conv
  output before scale, bias and activation (``generator.layer_value``): linear in W, so the update
  has a least-squares closed form.
- StyleGAN2: key = ``x * s`` (after style modulation, before the conv; half the output resolution
  on up-sampling layers), value = the layer output after demodulation, noise, bias and activation.
  Demodulation is recomputed from the edited weight, so the value is not linear in W and the
  update is iterative (Levenberg–Marquardt on Λ).

Conventions: ``model`` is a :class:`core.Model` (its bundle's truncation/noise defaults are used)
or a bare generator (truncation 1, noise ``"buffers"``). Image numbers index the seed-1 latent
stream. Masks are float ``[H, W]`` in [0, 1] (or bool), normally at image resolution; any size is
accepted and resized to the feature grid with antialiased bilinear interpolation (what PIL's
bilinear resize of the original's mask PNGs does), values below 1/512 dropped (they would round
to 0 in the original's 8-bit masks). ``C`` arguments take a :class:`KeyStats` or a ``[C_in, C_in]``
tensor. Long calls take ``progress(done, total, loss)`` (loss is None where there is none) and
``stop()`` (return True to stop: a rewrite then returns what it has so far; statistics return the
images done so far). ``weight_deltas`` ({layer: ΔW}, e.g. ``EditStack.weight_deltas()``) runs
everything on top of earlier weight edits; the returned edit is relative to that edited model.
"""
from __future__ import annotations

import dataclasses
import math
import time
import weakref
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .generators.base import Generator
from .model import generator_of, sampling_options
from .optim import Adam

Progress = Callable[[int, int, "float | None"], None]
Stop = Callable[[], bool]

STATS_FORMAT = "painting-with-neurons-key-stats"
DEFAULT_STATS_SAMPLES = 1000          # images, as the original (zds size 1000, seed 1)
DEFAULT_STATS_BATCH = 10              # the original's tally batch size
EIG_REL_FLOOR = 1e-10                 # eigenvalues of C below max*1e-10 are clamped (whitening)
CLOSED_FORM_RIDGE = 1e-6              # ridge, relative to the mean diagonal of FᵀF
ORIGINAL_NITER, ORIGINAL_LR, ORIGINAL_PITER = 2001, 0.05, 10    # the original defaults
GN_ITERS = 15                         # Levenberg–Marquardt iterations of our iterative solver
LOWRANK_NITER, LOWRANK_LR = 0, 0.05   # optional Adam refinement after it (lr relative to Λ's RMS)
HIGHLIGHT_QUANTILE = 0.999            # "Show Context Matches" threshold of the original UI
_MASK_FLOOR = 1.0 / 512               # mask values that round to 0 in 8 bits


class RewriteError(ValueError):
    """A request that cannot be carried out (empty context, paste outside the image, ...)."""


class MissingStatsError(FileNotFoundError):
    """The key statistics of a layer have not been computed yet."""

    def __str__(self):
        return str(self.args[0])


# =============================================================================== model plumbing
def _parts(model):
    """(generator, truncation, noise, bundle or None) for a core.Model or a bare generator."""
    return (generator_of(model), *sampling_options(model), getattr(model, "bundle", None))


def _base_weight(g: Generator, layer: str, weight_deltas=None) -> torch.Tensor:
    w = g.main_weight(layer).detach()           # raises LayerError for unknown / weightless layers
    delta = (weight_deltas or {}).get(layer)
    return w if delta is None else w + delta.to(w)


def _numbers(image_numbers) -> list[int]:
    if isinstance(image_numbers, (int, np.integer)) and not isinstance(image_numbers, bool):
        return [int(image_numbers)]
    if isinstance(image_numbers, str):
        from .images import parse_image_numbers
        return list(parse_image_numbers(image_numbers))
    out = []
    for i in image_numbers:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise RewriteError(f"image numbers must be non-negative integers, got {i!r}")
        out.append(int(i))
    return out


@torch.no_grad()
def _key_state(g: Generator, layer: str, z: torch.Tensor, truncation, noise, weight_deltas=None):
    """(key [N, C_in, h, w], state before ``layer``)."""
    state = g.start(z.to(g.device), truncation=truncation, noise=noise, weight_deltas=weight_deltas)
    i = g.layer_index(layer)
    if i > 0:
        state = g.run(state, stop=g.layers[i - 1])
    return g.rewrite_key(layer, state), state


def layer_keys(model, layer: str, image_numbers, weight_deltas=None, seed: int = 1,
               truncation=None, noise=None):
    """Keys of ``layer`` for image numbers: ``(keys [N, C_in, h, w], state before the layer)``."""
    g, t, n, _ = _parts(model)
    g.main_weight(layer)
    t = t if truncation is None else truncation
    n = n if noise is None else noise
    z = g.sample_z(_numbers(image_numbers), seed)
    return _key_state(g, layer, z, t, n, weight_deltas)


def layer_values(model, layer: str, image_numbers, weight_deltas=None) -> torch.Tensor:
    """The rewriting *value* of ``layer`` for image numbers: [N, C_out, H, W] (ProGAN: the raw conv
    output before scale/bias/activation; StyleGAN2: the layer output)."""
    g, t, n, _ = _parts(model)
    key, state = layer_keys(model, layer, image_numbers, weight_deltas)
    with torch.no_grad():
        return g.layer_value(layer, key, weight=_base_weight(g, layer, weight_deltas), state=state)


def low_rank_delta(lam: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """ΔW = Λ·D along the input-channel axis: lam [..., rank, k, k], dirs [rank, C_in] ->
    [..., C_in, k, k]."""
    return torch.einsum("...rhw,ri->...ihw", lam, dirs.to(lam))


def project_weight(weight: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """W·DᵀD along the input-channel axis (the original's ``projected_conv``)."""
    return low_rank_delta(torch.einsum("...ihw,ri->...rhw", weight, dirs.to(weight)), dirs)


def _make_edit(layer: str, lam: torch.Tensor, dirs: torch.Tensor, label: str = ""):
    from .edits import WeightEdit
    return WeightEdit(layer, lam.detach().float().contiguous(), dirs.detach().float().contiguous(),
                      label=label)


def edit_delta(edit) -> torch.Tensor:
    """Dense ΔW of a WeightEdit (low-rank ``lam``/``dirs`` or dense)."""
    if hasattr(edit, "delta"):
        return edit.delta()
    return low_rank_delta(edit.lam, edit.dirs)


# =============================================================================== masks and boxes
def _mask_tensor(mask, what: str = "mask") -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise RewriteError(f"{what} must be a 2-D [H, W] array, got shape {tuple(m.shape)}")
    if m.dtype == torch.bool:
        return m.float()
    if not (m.is_floating_point() or m.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise RewriteError(f"{what} must be float in [0, 1] or bool, got {m.dtype}")
    m = m.float()
    if not bool(torch.isfinite(m).all()):
        raise RewriteError(f"{what} has NaN or inf values")
    if m.numel() and (float(m.min()) < 0 or float(m.max()) > 1):
        raise RewriteError(f"{what} values must lie in [0, 1], got {float(m.min()):g}..{float(m.max()):g}")
    return m


def resize_mask(mask, size: Sequence[int], what: str = "mask") -> torch.Tensor:
    """A mask resized to ``size`` (h, w) with antialiased bilinear interpolation, in [0, 1]."""
    m = _mask_tensor(mask, what).cpu()
    size = (int(size[0]), int(size[1]))
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False,
                          antialias=True)[0, 0].clamp(0, 1)
    return torch.where(m < _MASK_FLOOR, torch.zeros_like(m), m)


def bounding_box(mask) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of ``mask > 0`` (bottom/right exclusive), or None if empty."""
    pos = torch.as_tensor(mask) > 0
    if not bool(pos.any()):
        return None
    rows = torch.nonzero(pos.any(1))[:, 0]
    cols = torch.nonzero(pos.any(0))[:, 0]
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


# =============================================================================== statistics
@dataclasses.dataclass
class KeyStats:
    """Uncentered second moment of a layer's keys: ``mom2 = E[k kᵀ]`` over ``count`` key pixels."""
    mom2: torch.Tensor                      # [C_in, C_in] float64
    count: int
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def C(self) -> torch.Tensor:
        return self.mom2

    @property
    def unit_mean_square(self) -> torch.Tensor:
        """E[k_i²] per key channel (the diagonal)."""
        return torch.diagonal(self.mom2)


def _C(C) -> torch.Tensor:
    if isinstance(C, KeyStats):
        C = C.mom2
    if not isinstance(C, torch.Tensor) or C.dim() != 2 or C.shape[0] != C.shape[1]:
        raise RewriteError("C must be KeyStats or a square [C_in, C_in] tensor")
    return C.double()


def collect_key_stats(model, layer: str, image_numbers, batch_size: int = DEFAULT_STATS_BATCH,
                      progress: Progress | None = None, stop: Stop | None = None,
                      truncation=None, noise=None, seed: int = 1, weight_deltas=None) -> KeyStats:
    """``C = E[k kᵀ]`` (uncentered) over every key pixel of ``image_numbers``, streamed in batches
    and accumulated in float64. ``truncation``/``noise`` default to the model's (recorded in the
    metadata). On ``stop()`` the images done so far are returned (``meta['samples']`` says how
    many)."""
    g, t, n, bundle = _parts(model)
    g.main_weight(layer)
    t = t if truncation is None else float(truncation)
    n = n if noise is None else noise
    numbers = _numbers(image_numbers)
    if not numbers:
        raise RewriteError("collect_key_stats needs at least one image number")
    batch_size = max(1, int(batch_size))
    mom2, count, done = None, 0, 0
    for s in range(0, len(numbers), batch_size):
        if stop is not None and stop():
            break
        chunk = numbers[s:s + batch_size]
        key, _ = _key_state(g, layer, g.sample_z(chunk, seed), t, n, weight_deltas)
        k = key.permute(0, 2, 3, 1).reshape(-1, key.shape[1]).double()
        mom2 = k.T @ k if mom2 is None else mom2 + k.T @ k
        count += k.shape[0]
        done += len(chunk)
        if progress is not None:
            progress(done, len(numbers), None)
    if mom2 is None:
        raise RewriteError("stopped before any image was processed")
    meta = {"format": STATS_FORMAT, "layer": layer, "samples": str(done),
            "first_image": str(numbers[0]), "last_image": str(numbers[done - 1]),
            "seed": str(seed), "truncation": repr(float(t)), "noise": str(n),
            "architecture": g.family, "key_pixels": str(count),
            "model": getattr(bundle, "name", "") or ""}
    return KeyStats((mom2 / count).cpu(), count, meta)


def save_key_stats(stats: KeyStats, path) -> Path:
    """Write ``stats`` to a safetensors file (tensors ``mom2`` [C_in, C_in] float64 and ``count``
    [1] int64, metadata strings). Tensors other than those two already in the file (e.g. quantiles
    written by dissection) are kept; the write is atomic."""
    from safetensors.torch import load_file, save as st_save
    from safetensors import safe_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, meta = {}, {}
    if path.is_file():
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = dict(f.metadata() or {})
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            tensors, meta = {}, {}
    tensors = {k: v.contiguous() for k, v in tensors.items() if k not in ("mom2", "count")}
    tensors["mom2"] = stats.mom2.double().cpu().contiguous()
    tensors["count"] = torch.tensor([int(stats.count)], dtype=torch.int64)
    meta.update({str(k): str(v) for k, v in stats.meta.items()})
    data = st_save(tensors, metadata=meta)
    from .bundle import atomic_write
    atomic_write(path, data)
    return path


def load_key_stats(path, layer: str | None = None, channels: int | None = None) -> KeyStats:
    """Read a stats file written by :func:`save_key_stats`; checks shape, finiteness and, when
    given, the layer name and the key channel count."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            names = set(f.keys())
            if "mom2" not in names or "count" not in names:
                raise RewriteError(f"{path}: no key statistics in this file (tensors 'mom2' and "
                                   "'count' missing)")
            mom2, count = f.get_tensor("mom2"), f.get_tensor("count")
            meta = dict(f.metadata() or {})
    except RewriteError:
        raise
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises several types on damaged files
        raise RewriteError(f"{path}: not a readable safetensors stats file ({e})") from None
    if mom2.dim() != 2 or mom2.shape[0] != mom2.shape[1] or not bool(torch.isfinite(mom2).all()):
        raise RewriteError(f"{path}: 'mom2' must be a finite square matrix, got {tuple(mom2.shape)}")
    if layer is not None and meta.get("layer") not in (None, layer):
        raise RewriteError(f"{path}: statistics are for layer {meta.get('layer')!r}, not {layer!r}")
    if channels is not None and mom2.shape[0] != channels:
        raise RewriteError(f"{path}: statistics have {mom2.shape[0]} key channels but {layer} has "
                           f"{channels}; recompute them with `python -m core stats`")
    return KeyStats(mom2.double(), int(count.reshape(-1)[0]), meta)


_STATS_CACHE: dict[tuple[str, int], KeyStats] = {}


def stats_path(model, layer: str) -> Path:
    g, _, _, bundle = _parts(model)
    if bundle is None or getattr(bundle, "path", None) is None:
        raise RewriteError("this model was not loaded from a bundle folder, so it has no cached "
                           "statistics; compute them with collect_key_stats(...) or save the bundle "
                           "and run `python -m core stats`")
    return bundle.stats_path(layer)


def get_stats(model, layer: str, path=None) -> KeyStats:
    """The cached key statistics of ``layer``: the file at ``path``, by default the bundle's
    (``<bundle>/stats/<layer>.safetensors``)."""
    g, _, _, bundle = _parts(model)
    w = g.main_weight(layer)
    path = stats_path(model, layer) if path is None else Path(path)
    if not path.is_file():
        raise MissingStatsError(f"no key statistics for {layer} of {bundle.name!r} ({path} is "
                                f"missing); compute them with: python -m core stats "
                                f"{bundle.path} --layer {layer}")
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _STATS_CACHE:
        if len(_STATS_CACHE) > 32:
            _STATS_CACHE.clear()
        _STATS_CACHE[key] = load_key_stats(path, layer, channels=w.shape[-3])
    return _STATS_CACHE[key]


def whitening(C) -> torch.Tensor:
    """``C^-1/2`` (ZCA) via eigh in float64; eigenvalues below ``max * EIG_REL_FLOOR`` clamped."""
    C = _C(C)
    evals, evecs = torch.linalg.eigh(C)
    floor = max(float(evals.max()), 1e-300) * EIG_REL_FLOOR
    return (evecs * evals.clamp(min=floor).rsqrt()) @ evecs.T


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


_GRIDS: "weakref.WeakKeyDictionary[Generator, dict]" = weakref.WeakKeyDictionary()


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


# =============================================================================== the update
@dataclasses.dataclass
class _Problem:
    """Everything an iterative solver needs on the cropped region of one image."""
    g: Generator
    layer: str
    key: torch.Tensor               # [1, C_in, kh, kw] cropped key (with margin)
    state: object
    offset: tuple[int, int]          # origin of the crop's output in the full value map
    inner: tuple[int, int, int, int]  # region box inside the crop's output
    target: torch.Tensor            # [1, C_out, bh, bw]
    weight: torch.Tensor            # [1, 1, bh, bw] region weights
    w0: torch.Tensor                # base raw weight

    def value(self, weight: torch.Tensor) -> torch.Tensor:
        out = self.g.layer_value(self.layer, self.key, weight=weight, state=self.state, offset=self.offset)
        t, l, b, r = self.inner
        return out[:, :, t:b, l:r]

    def l1(self, weight):
        d = (self.value(weight) - self.target).abs() * self.weight
        return d.sum() / (self.weight.sum() * self.target.shape[1])

    def mse(self, weight):
        d = (self.value(weight) - self.target).pow(2) * self.weight
        return d.sum() / (self.weight.sum() * self.target.shape[1])


def _problem(model, layer, image_number, target_value, region, weight_deltas) -> _Problem:
    g, t, n, _ = _parts(model)
    key, state = _key_state(g, layer, g.sample_z([image_number]), t, n, weight_deltas)
    w0 = _base_weight(g, layer, weight_deltas)
    target = torch.as_tensor(target_value).to(key)
    if target.dim() == 4 and target.shape[0] == 1:
        target = target[0]
    with torch.no_grad():
        full = g.layer_value(layer, key, weight=w0, state=state)
    H, W = full.shape[-2:]
    if tuple(target.shape) != tuple(full.shape[1:]):
        raise RewriteError(f"target value must be {list(full.shape[1:])} for {layer}, got "
                           f"{list(target.shape)}")
    reg = resize_mask(region, (H, W), what="region").to(key) if region is not None \
        else torch.ones(H, W, device=key.device)
    box = bounding_box(reg)
    if box is None:
        raise RewriteError("empty region: the update has no pixels to fit")
    bt, bl, bb, br = box
    kh, kw = key.shape[-2:]
    ry, rx = H // kh, W // kw                      # value pixels per key pixel (1 or 2; 4 at 1x1)
    m = 2                                          # key margin: covers 3x3 convs and up + blur
    at, al = max(0, bt // ry - m), max(0, bl // rx - m)
    ab, ar = min(kh, -(-bb // ry) + m), min(kw, -(-br // rx) + m)
    oy, ox = at * ry, al * rx
    return _Problem(g, layer, key[:, :, at:ab, al:ar].contiguous(), state, (oy, ox),
                    (bt - oy, bl - ox, bb - oy, br - ox), target[None, :, bt:bb, bl:br].detach(),
                    reg[bt:bb, bl:br][None, None].detach(), w0)


def _orthonormal_dirs(dirs, c_in: int) -> torch.Tensor:
    d = torch.as_tensor(dirs, dtype=torch.float32)
    if d.dim() == 1:
        d = d[None]
    if d.dim() != 2 or d.shape[1] != c_in:
        raise RewriteError(f"dirs must be [rank, {c_in}], got {list(d.shape)}")
    if d.shape[0] > c_in:
        raise RewriteError(f"rank {d.shape[0]} is larger than the layer's {c_in} key channels")
    gram = d.double() @ d.double().T
    if not torch.allclose(gram, torch.eye(d.shape[0], dtype=torch.float64), atol=1e-4):
        q, _ = torch.linalg.qr(d.double().T)
        signs = torch.sign(torch.einsum("ir,ri->r", q, d.double().T))
        signs[signs == 0] = 1
        d = (q * signs).T.float()
    return d


def _closed_form(model, layer, dirs, image_number, target_value, region, weight_deltas, ridge,
                 info) -> torch.Tensor:
    """Least squares for Λ on a layer whose value is a plain conv (``value_linear_in_weight``):
    the value is conv(k, W + Λ·D) and only D·k matters, so the features are the k x k taps of the
    keys projected on D."""
    g, t, n, _ = _parts(model)
    padding = g.conv_padding(layer)
    key, _ = _key_state(g, layer, g.sample_z([image_number]), t, n, weight_deltas)
    w0 = _base_weight(g, layer, weight_deltas)
    c_out, _, kh, kw = w0.shape
    with torch.no_grad():
        v0 = F.conv2d(key, w0, padding=padding)[0]                     # [C_out, H, W]
        target = torch.as_tensor(target_value).to(v0)
        target = target[0] if target.dim() == 4 else target
        if target.shape != v0.shape:
            raise RewriteError(f"target value must be {list(v0.shape)} for {layer}, got "
                               f"{list(target.shape)}")
        H, W = v0.shape[-2:]
        reg = resize_mask(region, (H, W), what="region").to(v0) if region is not None \
            else torch.ones(H, W, device=v0.device)
        sel = reg.reshape(-1) > 0
        if not bool(sel.any()):
            raise RewriteError("empty region: the update has no pixels to fit")
        kd = torch.einsum("ri,nihw->nrhw", dirs.to(key), key).double()          # keys along D
        feats = F.unfold(kd, (kh, kw), padding=padding)[0]               # [rank*kh*kw, H*W]
        if feats.shape[1] != H * W:
            raise RewriteError(f"{layer}: unexpected conv geometry (unfold gives {feats.shape[1]} "
                               f"positions for a {H}x{W} output)")
        A = feats[:, sel].T                                                    # [P, rank*k*k]
        R = (target - v0).reshape(c_out, -1)[:, sel].T.double()                # [P, C_out]
        sw = reg.reshape(-1)[sel].double().sqrt()[:, None]
        A, R = A * sw, R * sw
        nf = A.shape[1]
        lam_ridge = ridge * float((A * A).sum()) / nf + 1e-12
        A_aug = torch.cat([A, math.sqrt(lam_ridge) * torch.eye(nf, dtype=A.dtype, device=A.device)])
        R_aug = torch.cat([R, torch.zeros(nf, c_out, dtype=R.dtype, device=R.device)])
        sol = torch.linalg.lstsq(A_aug.cpu(), R_aug.cpu()).solution.to(A.device)     # [nf, C_out]
        lam = sol.T.reshape(c_out, dirs.shape[0], kh, kw)
        if info is not None:
            before = float((R ** 2).sum() / (sw ** 2).sum() / c_out)
            res = R - A @ sol
            info.update(loss_before=before, loss=float((res ** 2).sum() / (sw ** 2).sum() / c_out),
                        pixels=int(sel.sum()), ridge=lam_ridge)
    return lam.float()


def _lowrank_iterative(p: _Problem, dirs, gn_iters, niter, lr, progress, stop, info) -> torch.Tensor:
    """Fit Λ directly (ΔW = Λ·D: the update never leaves span(D)), MSE on the cropped region.

    1. Levenberg–Marquardt: output channel o depends only on Λ[o] (its demodulation, bias, noise
       and activation are per channel), so the Jacobian is block-diagonal and ``rank*k*k``
       central differences (one per tap, all channels at once: 2 forward passes each, step
       1e-2 x RMS(W)) give all of it; each iteration solves
       ``(JᵀJ + μ·mean diag)δ = Jᵀr`` per channel, accepting a step only if the loss drops.
       Scale-free; exact in one step on a linear layer.
    2. Optional Adam refinement (``niter`` steps, step size ``lr`` times Λ's RMS, cosine-decayed
       to a tenth); the best iterate is kept."""
    rank = dirs.shape[0]
    shape = list(p.w0.shape)
    shape[-3] = rank
    nf = rank * shape[-2] * shape[-1]
    d = dirs.to(p.w0)
    lam = torch.zeros(shape, device=p.w0.device, dtype=p.w0.dtype)
    sw = p.weight.sqrt()
    total = gn_iters + niter
    eps = 1e-2 * max(float(p.w0.pow(2).mean().sqrt()), 1e-8)     # finite-difference step on Λ

    def loss_of(l):
        with torch.no_grad():
            return float(p.mse(p.w0 + low_rank_delta(l, d)))

    cur = loss_of(lam)
    history, mu, done = [cur], 1e-3, 0
    for it in range(gn_iters):
        if stop is not None and stop():
            break
        cols = []
        with torch.no_grad():
            primal = p.value(p.w0 + low_rank_delta(lam, d))
            for j in range(nf):                     # central differences along tap j, all o at once
                e = torch.zeros(shape[:-3] + [nf], device=lam.device, dtype=lam.dtype)
                e[..., j] = eps
                e = e.reshape(shape)
                plus = p.value(p.w0 + low_rank_delta(lam + e, d))
                minus = p.value(p.w0 + low_rank_delta(lam - e, d))
                cols.append((((plus - minus) / (2 * eps)) * sw)[0].flatten(1))   # [C_out, P]
        J = torch.stack(cols, -1).double()                                   # [C_out, P, nf]
        r = ((p.target - primal) * sw)[0].flatten(1).double()               # [C_out, P]
        JtJ = J.transpose(1, 2) @ J
        Jtr = (J.transpose(1, 2) @ r[..., None])[..., 0]
        scale = torch.diagonal(JtJ, dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None]
        eye = torch.eye(nf, dtype=J.dtype, device=J.device)
        improved = False
        while mu <= 1e6:
            step = torch.linalg.solve(JtJ + mu * scale * eye, Jtr[..., None])[..., 0]
            cand = lam + step.to(lam.dtype).reshape(shape)
            new = loss_of(cand)
            if new < cur:
                lam, cur, mu, improved = cand, new, max(mu / 3, 1e-9), True
                break
            mu *= 10
        history.append(cur)
        done += 1
        if progress is not None:
            progress(done, total, cur)
        if not improved or history[-2] - history[-1] <= 1e-6 * history[0]:
            break
    if niter > 0 and not (stop is not None and stop()):
        lam_p = lam.clone().requires_grad_(True)
        rms = float(lam.pow(2).mean().sqrt())
        base_lr = lr * (rms if rms > 0 else 1.0)
        opt = Adam([lam_p])
        best, best_lam = cur, lam.clone()
        for it in range(niter):
            if stop is not None and stop():
                break
            with torch.enable_grad():
                loss = p.mse(p.w0 + low_rank_delta(lam_p, d))
                grad, = torch.autograd.grad(loss, lam_p)
            lv = float(loss.detach())
            if lv < best:
                best, best_lam = lv, lam_p.detach().clone()
            history.append(lv)
            opt.step([grad], base_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * it / niter))))
            done += 1
            if progress is not None and (it % 10 == 0 or it == niter - 1):
                progress(done, total, lv)
        last = loss_of(lam_p.detach())
        cur, lam = (last, lam_p.detach()) if last < best else (best, best_lam)
    if info is not None:
        info.update(loss_before=history[0], loss=cur, history=history, steps=done)
    return lam.detach()


def _original_insert(p: _Problem, dirs, niter, lr, piter, project_gradient, progress, stop,
                     info) -> torch.Tensor:
    """The original ``insert``: Adam on the FULL weight, L1 loss, projection
    ``W <- W0_perp + W·DᵀD`` every ``piter`` steps and after the last one."""
    d = dirs.to(p.w0)
    weight = p.w0.clone().requires_grad_(True)
    with torch.no_grad():
        ortho = p.w0 - project_weight(p.w0, d)
    opt = Adam([weight])
    history = []
    for it in range(niter):
        stopping = stop is not None and stop()
        if not stopping:
            with torch.enable_grad():
                loss = p.l1(weight)
                grad, = torch.autograd.grad(loss, weight)
            if project_gradient:
                grad = project_weight(grad, d)
            opt.step([grad], lr)
            history.append(float(loss.detach()))
            if progress is not None and (it % 10 == 0 or it == niter - 1):
                progress(it + 1, niter, history[-1])
        if stopping or it % piter == 0 or it == niter - 1:
            with torch.no_grad():
                weight.copy_(ortho + project_weight(weight, d))
        if stopping:
            break
    with torch.no_grad():
        final = float(p.l1(weight))
    if info is not None:
        info.update(loss_before=history[0] if history else final, loss=final, history=history,
                    steps=len(history))
    with torch.no_grad():
        return torch.einsum("...ihw,ri->...rhw", weight - p.w0, d)


METHODS = ("closed_form", "iterative", "original")


def rewrite(model, layer: str, dirs, target_image_number: int, target_value, region, C=None,
            method: str = "closed_form", *, weight_deltas=None, ridge: float = CLOSED_FORM_RIDGE,
            niter: int | None = None, lr: float | None = None, piter: int = ORIGINAL_PITER,
            gn_iters: int = GN_ITERS,
            project_gradient: bool = False, progress: Progress | None = None,
            stop: Stop | None = None, label: str = "", info: dict | None = None):
    """Change ``layer``'s weight along ``dirs`` (D [rank, C_in]) so that image
    ``target_image_number`` produces ``target_value`` ([C_out, H, W] value map) inside ``region``
    ([H, W] mask on the value grid, or None = everywhere). Returns ``WeightEdit(layer, Λ, D)``.

    Methods:

    - ``"closed_form"`` (default): on ProGAN (linear value) the ridge least-squares Λ minimising
      ``||conv(k, W + Λ·D) - v_target||²`` over the region's pixels (``torch.linalg.lstsq`` on the
      k x k taps of ``D·k``; ridge ``ridge * mean diag(FᵀF)``, default 1e-6, only for
      stability). StyleGAN2 has no closed form (demodulation): there it means ``"iterative"``.
    - ``"iterative"``: fit Λ directly (the update never leaves span(D)), MSE on the cropped
      region: ``gn_iters`` (15) Levenberg–Marquardt iterations on the block-diagonal Jacobian
      (central differences), then ``niter`` (default 0) Adam steps on Λ with step ``lr`` (0.05) x RMS(Λ).
      (Plain Adam on Λ at a fixed lr was tried first: it needs the lr matched to Λ's scale and,
      e.g., reached an MSE of 2446 after 400 steps where the least-squares optimum is 715 on a
      random 256->192 ProGAN layer; LM reaches it in one iteration there, and beat 400 Adam steps
      on every StyleGAN2 layer type in <= 10 iterations.)
    - ``"original"``: the original code's ``insert``: Adam on the full weight (``lr`` 0.05,
      ``niter`` 2001), L1 loss on the cropped region, projection ``W <- W0_perp + W·DᵀD`` every
      ``piter`` (10) steps and after the last (``project_gradient`` also projects each gradient,
      as the original's watermark script). Λ = (W - W0)·Dᵀ, exact after the final projection.

    The crop keeps a 2-pixel key margin around the region, so the cropped value equals the full
    map's (the original crops the key to the box itself, which changes border pixels). ``C`` is
    only used to check the key dimension. ``info`` (a dict) receives ``loss_before``, ``loss``,
    ``seconds`` and, for iterative methods, ``history``."""
    g, *_ = _parts(model)
    if method not in METHODS:
        raise RewriteError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    w0 = g.main_weight(layer)
    c_in = w0.shape[-3]
    if C is not None and _C(C).shape[0] != c_in:
        raise RewriteError(f"C is {_C(C).shape[0]}x{_C(C).shape[0]} but {layer} has {c_in} key channels")
    d = _orthonormal_dirs(dirs, c_in).to(w0.device)
    image_number = _numbers([target_image_number])[0]
    info = {} if info is None else info
    t0 = time.perf_counter()
    closed_form = method == "closed_form" and g.value_linear_in_weight
    if closed_form:
        lam = _closed_form(model, layer, d, image_number, target_value, region, weight_deltas,
                           ridge, info)
        if progress is not None:
            progress(1, 1, info.get("loss"))
    else:
        p = _problem(model, layer, image_number, target_value, region, weight_deltas)
        if method == "original":
            lam = _original_insert(p, d, ORIGINAL_NITER if niter is None else int(niter),
                                   ORIGINAL_LR if lr is None else float(lr), max(1, int(piter)),
                                   project_gradient, progress, stop, info)
        else:
            lam = _lowrank_iterative(p, d, max(0, int(gn_iters)),
                                     LOWRANK_NITER if niter is None else max(0, int(niter)),
                                     LOWRANK_LR if lr is None else float(lr), progress, stop, info)
    info["seconds"] = time.perf_counter() - t0
    info["method"] = "iterative" if (method == "closed_form" and not closed_form) else method
    label = label or f"rewrite {layer} (rank {d.shape[0]}, {info['method']})"
    return _make_edit(layer, lam, d, label)


def region_loss(model, layer: str, image_number: int, target_value, region, edit=None,
                weight_deltas=None, kind: str = "mse") -> float:
    """Mean loss (``"mse"`` or ``"l1"``) between the layer's value and ``target_value`` on the
    region, with ``edit`` (a WeightEdit or a ΔW tensor) added to the weight if given."""
    p = _problem(model, layer, _numbers([image_number])[0], target_value, region, weight_deltas)
    w = p.w0
    if edit is not None:
        w = w + (edit if isinstance(edit, torch.Tensor) else edit_delta(edit)).to(w)
    with torch.no_grad():
        return float(p.mse(w) if kind == "mse" else p.l1(w))


# =============================================================================== erase
ERASE_UNITS = 30                      # the original's default drank


def erase_units(model, layer: str, contexts, C, drank: int | None = None, weight_deltas=None) -> list[int]:
    """Key channels most active in the context: ranked by the mask-weighted mean of ``k²/E[k²]``
    (``E[k²]`` = diag(C)), top ``drank`` (the original's ``normdissect_units``; default 30, or all
    channels of a narrower layer)."""
    keys, weights = context_keys(model, layer, contexts, weight_deltas)
    c_in = keys.shape[1]
    drank = min(ERASE_UNITS, c_in) if drank is None else int(drank)
    if not 1 <= drank <= c_in:
        raise RewriteError(f"drank must be between 1 and {c_in} (the layer's key channels), got {drank}")
    scale = torch.diagonal(_C(C)).to(keys).clamp_min(1e-30)
    score = ((keys ** 2 / scale) * weights[:, None]).sum(0) / weights.sum()
    return [int(i) for i in torch.argsort(score, descending=True)[:drank]]


def erase_target(model, layer: str, image_number: int, units: Sequence[int], weight_deltas=None):
    """The layer's value for ``image_number`` computed with key channels ``units`` zeroed (the
    whole map, as the original's erase). -> (target [C_out, H, W], region all-True [H, W])."""
    g, t, n, _ = _parts(model)
    key, state = _key_state(g, layer, g.sample_z([_numbers([image_number])[0]]), t, n, weight_deltas)
    key = key.clone()
    key[:, list(units)] = 0
    with torch.no_grad():
        v = g.layer_value(layer, key, weight=_base_weight(g, layer, weight_deltas), state=state)[0]
    return v, torch.ones(v.shape[-2:], dtype=torch.bool, device=v.device)


def erase(model, layer: str, contexts, C, image_number: int | None = None, drank: int | None = None,
          rank: int = 1, method: str = "closed_form", dirs=None, region=None, weight_deltas=None,
          **kwargs):
    """Remove what the context shows (e.g. watermarks) by rewriting: the target is the layer's
    value with the context's ``drank`` most active key units zeroed (:func:`erase_units`) on
    ``image_number`` (default: the first context image); D from the context (or ``dirs``); then
    the same update as :func:`rewrite` (``kwargs`` go there). ``region`` defaults to the whole map."""
    contexts = list(contexts or [])
    if not contexts:
        raise RewriteError("empty context: erase needs (image number, mask) pairs showing what to remove")
    units = erase_units(model, layer, contexts, C, drank, weight_deltas)
    drank = len(units)
    image_number = contexts[0][0] if image_number is None else image_number
    target, full = erase_target(model, layer, image_number, units, weight_deltas)
    if dirs is None:
        dirs = context_direction(model, layer, contexts, C, rank, weight_deltas)
    kwargs.setdefault("label", f"erase {layer} ({drank} units, rank {rank})")
    return rewrite(model, layer, dirs, image_number, target, full if region is None else region,
                   C, method=method, weight_deltas=weight_deltas, **kwargs)


__all__ = ["KeyStats", "collect_key_stats", "save_key_stats", "load_key_stats", "get_stats",
           "stats_path", "whitening", "context_keys", "direction_from_keys", "context_direction",
           "query_direction", "search", "SearchResult", "Clip", "copy_value", "paste_center",
           "paste_target", "render_with_value", "rewrite", "region_loss", "erase", "erase_units",
           "erase_target", "low_rank_delta", "project_weight", "edit_delta", "layer_keys",
           "layer_values", "resize_mask", "bounding_box", "RewriteError", "MissingStatsError",
           "METHODS"]
