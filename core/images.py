"""Images in and out of the engine, and the "image numbers" users type.

Engine images are float tensors ``[N,3,H,W]`` (or one ``[3,H,W]``) in about [-1, 1]. Bytes are
``((x+1)/2*255).clamp(0,255)`` truncated to uint8, as in the original dissection code. Everything
written to disk is PNG (lossless).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MAX_IMAGE_COUNT = 10_000          # parse_image_numbers refuses longer lists
MAX_IMAGE_NUMBER = 10_000_000     # ... and numbers at or above this (latents come from one stream)


def to_uint8(x) -> np.ndarray:
    """``[3,H,W]`` -> ``[H,W,3]`` or ``[N,3,H,W]`` -> ``[N,H,W,3]`` uint8 (from [-1, 1] floats)."""
    x = torch.as_tensor(x).detach()
    if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"expected an image tensor [3,H,W] or [N,3,H,W], got shape {tuple(x.shape)}")
    x = ((x.float().cpu() + 1) / 2 * 255).clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).contiguous().numpy()


def _as_uint8_list(images) -> list[np.ndarray]:
    """A batch tensor, a list of tensors / HWC uint8 arrays / PIL images -> list of HWC uint8."""
    if isinstance(images, torch.Tensor):
        arr = to_uint8(images)
        return list(arr) if arr.ndim == 4 else [arr]
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4:
        return list(images)
    out = []
    for im in images:
        if isinstance(im, Image.Image):
            out.append(np.asarray(im.convert("RGB")))
        elif isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3:
            out.append(im)
        else:
            out.append(to_uint8(im))
    return out


def to_pil(x) -> Image.Image:
    """One image (``[3,H,W]``, ``[1,3,H,W]`` tensor in [-1, 1], or an HWC uint8 array) -> PIL RGB."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        arr = x
    else:
        arr = to_uint8(x)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"to_pil takes one image, got a batch of {arr.shape[0]}; index it first "
                             "or use make_grid")
        arr = arr[0]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return Image.fromarray(arr, "RGB")


def mask_border(mask) -> np.ndarray:
    """The pixels of a boolean mask ``[H,W]`` that have a 4-neighbour outside it (the image edge
    is not a border)."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def outline(image, mask, color=(255, 0, 255)) -> np.ndarray:
    """A copy of ``image`` (HWC uint8 or PIL) with the border of ``mask`` (bool ``[h,w]``, scaled
    to the image by nearest neighbour, so a 64 px label map outlines a 128 px tile) in ``color``."""
    img = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    H, W = img.shape[:2]
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (H, W):
        rows = np.arange(H) * mask.shape[0] // H
        cols = np.arange(W) * mask.shape[1] // W
        mask = mask[rows][:, cols]
    img[mask_border(mask)] = color
    return img


def make_grid(images, nrow: int = 8, captions: Sequence[str] | None = None, pad: int = 2,
              background: int = 255) -> Image.Image:
    """Tile images ``nrow`` per row with ``pad`` pixels between them; optional caption under each."""
    tiles = _as_uint8_list(images)
    if not tiles:
        raise ValueError("no images to put in a grid")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} images")
    nrow = max(1, min(int(nrow), len(tiles)))
    rows = math.ceil(len(tiles) / nrow)
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    font = ImageFont.load_default()
    cap_h = 0
    if captions is not None:
        cap_h = max(font.getbbox(str(c) or " ")[3] for c in captions) + 2
    cell_h = h + cap_h
    grid = Image.new("RGB", (pad + nrow * (w + pad), pad + rows * (cell_h + pad)),
                     (background,) * 3)
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, nrow)
        x0, y0 = pad + c * (w + pad), pad + r * (cell_h + pad)
        grid.paste(to_pil(tile), (x0, y0))
        if captions is not None:
            draw.text((x0, y0 + h + 1), str(captions[i]), fill=(0, 0, 0), font=font)
    return grid


def save_grid(images, path, nrow: int = 8, captions: Sequence[str] | None = None,
              pad: int = 2) -> Path:
    """Write ``make_grid(images, nrow, captions)`` as a PNG file and return its path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_grid writes PNG; give a .png file name, not {path.name!r}")
    grid = make_grid(images, nrow=nrow, captions=captions, pad=pad)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path


_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")


def parse_image_numbers(spec: str | int | Iterable[int], max_count: int = MAX_IMAGE_COUNT,
                        max_number: int = MAX_IMAGE_NUMBER) -> list[int]:
    """``"0-15,20,30-32"`` -> ``[0, 1, ..., 15, 20, 30, 31, 32]``.

    Ranges are inclusive; spaces are allowed; repeats are dropped (first occurrence kept, order
    kept). An int or a list of ints is checked the same way. Raises ``ValueError`` naming the bad
    item for empty input, non-numbers, negative numbers, backwards ranges, numbers >= ``max_number``
    and more than ``max_count`` images."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        items: list[tuple[int, int]] = [(int(spec), int(spec))]
        text = str(spec)
    elif isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError("no image numbers given (expected e.g. '0-15,20')")
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise ValueError(f"empty item in image numbers {spec!r} (stray comma?)")
            if any(len(d) > len(str(max_number)) for d in re.findall(r"\d+", part)):
                # (before int(): Python refuses to convert numbers of over 4,300 digits)
                shown = part if len(part) <= 20 else part[:20] + "..."
                raise ValueError(f"image number {shown} is too large (numbers must be below {max_number:,})")
            if part.startswith("-"):
                raise ValueError(f"image numbers are >= 0, got {part!r}")
            if part.isdigit():
                items.append((int(part), int(part)))
                continue
            m = _RANGE.fullmatch(part)
            if not m:
                raise ValueError(f"{part!r} is not an image number or a range like 10-20")
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                raise ValueError(f"range {part!r} goes backwards; write {b}-{a}")
            items.append((a, b))
    else:
        items = []
        for v in spec:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"image numbers must be integers, got {v!r}")
            items.append((int(v), int(v)))
        text = "the list"
        if not items:
            raise ValueError("no image numbers given")
    total = 0
    for a, b in items:
        if a < 0:
            raise ValueError(f"image numbers are >= 0, got {a}")
        if b >= max_number:
            raise ValueError(f"image number {b} is too large (numbers must be below {max_number:,})")
        total += b - a + 1
        if total > max_count:
            raise ValueError(f"{text} asks for more than {max_count:,} images; ask for fewer")
    seen: dict[int, None] = {}
    for a, b in items:
        for i in range(a, b + 1):
            seen.setdefault(i, None)
    return list(seen)
