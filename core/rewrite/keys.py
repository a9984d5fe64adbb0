"""Keys and values of a layer, low-rank weight deltas, and the masks every rewriting step takes."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..generators.base import Generator
from ..model import generator_of, sampling_options


Progress = Callable[[int, int, "float | None"], None]


Stop = Callable[[], bool]
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
        from ..images import parse_image_numbers
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
    from ..edits import WeightEdit
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
