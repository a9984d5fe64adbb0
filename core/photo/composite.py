"""Putting an edit back into the photo: only the pixels the edit changed, with a feathered mask."""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .files import _to_tensor

# ====================================================================================== compositing
def _as_float(img) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        x = img.detach().float().cpu()
        return x[None] if x.dim() == 3 else x
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an HWC uint8 RGB array, a PIL image or a tensor, got "
                         f"{type(img).__name__} {getattr(a, 'shape', '')}")
    return _to_tensor(Image.fromarray(a))


def _blur(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur (sigma = radius/2, support ±radius) of a [1,1,H,W] mask."""
    if radius <= 0:
        return mask
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    w = torch.exp(-k ** 2 / (2 * (radius / 2) ** 2))
    w = w / w.sum()
    m = F.conv2d(F.pad(mask, (radius, radius, 0, 0), mode="replicate"), w.view(1, 1, 1, -1))
    return F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), w.view(1, 1, -1, 1))


def edit_mask(before, after, size: tuple[int, int] | None = None, threshold: float = 0.08,
              dilate: int = 1, feather: int = 2) -> torch.Tensor:
    """``[H, W]`` float mask in [0, 1] of where an edit changed the render.

    ``|after - before|`` (max over RGB, [-1, 1] units) above ``threshold``, at the renders'
    resolution, grown by ``dilate + feather`` pixels, resized to ``size`` (nearest) and feathered
    by a Gaussian of radius ``feather`` (so it is 1 on every changed pixel and exactly 0 further
    than ``dilate + 2*feather`` render pixels from one). ``dilate`` and ``feather`` are in render
    pixels: with a 512-px photo and 64-px renders, ``feather=2`` softens the edge over 16 photo
    pixels."""
    b, a = _as_float(before), _as_float(after)
    if a.shape != b.shape:
        raise ValueError(f"before and after must have the same shape, got {list(b.shape)} and "
                         f"{list(a.shape)}")
    changed = ((a - b).abs().amax(dim=1, keepdim=True) > threshold).float()
    grow = max(0, int(dilate)) + max(0, int(feather))
    if grow:
        changed = F.max_pool2d(changed, 2 * grow + 1, stride=1, padding=grow)
    scale = 1.0
    if size is not None and tuple(changed.shape[-2:]) != tuple(size):
        scale = size[0] / changed.shape[-2]
        changed = F.interpolate(changed, size=size, mode="nearest")
    m = _blur(changed, max(0, int(round(feather * scale))))
    m = torch.where(m > 0.999, torch.ones_like(m), m)
    m = torch.where(m < 1e-4, torch.zeros_like(m), m)
    return m[0, 0]


def composite(photo, adapted_before, adapted_after, feather: int = 2, threshold: float = 0.08,
              dilate: int = 1, return_mask: bool = False):
    """The original photo with only the edited region replaced by ``adapted_after``.

    ``adapted_before``/``adapted_after``: renders of the inverted (and adapted) photo without and
    with the user's edits, ``[1,3,r,r]`` in [-1, 1]; the photo may be larger (the renders are
    upsampled bilinearly). The region is :func:`edit_mask` (difference > ``threshold``, grown by
    ``dilate`` and feathered by ``feather`` render pixels). Pixels where the mask is 0 are exactly
    the photo's. Returns the same kind as ``photo``: a PIL image (blended in 8 bits) for a PIL
    image or HWC uint8 array, else a ``[1,3,H,W]`` tensor; ``(image, mask)`` with
    ``return_mask``."""
    as_pil = isinstance(photo, (Image.Image, np.ndarray))
    p = _as_float(photo)
    size = tuple(p.shape[-2:])
    a = _as_float(adapted_after)
    if tuple(a.shape[-2:]) != size:
        a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    m = edit_mask(adapted_before, adapted_after, size, threshold, dilate, feather)
    mm = m[None, None]
    if as_pil:
        pu = np.asarray(photo.convert("RGB") if isinstance(photo, Image.Image) else photo)
        au = ((a.clamp(-1, 1)[0].permute(1, 2, 0).numpy() + 1) * 127.5)
        mn = m.numpy()[..., None]
        blend = np.clip(np.round(pu * (1 - mn) + au * mn), 0, 255).astype(np.uint8)
        out = Image.fromarray(np.where(mn > 0, blend, pu).astype(np.uint8), "RGB")
    else:
        out = torch.where(mm > 0, p * (1 - mm) + a.clamp(-1, 1) * mm, p)
    return (out, m) if return_mask else out
