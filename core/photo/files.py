"""Opening a photo safely: size limits before decoding, EXIF orientation, colour profiles and
modes to RGB, centre crop and resize to the model's resolution."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


MAX_BYTES = 10 * 1024 * 1024        # files / byte strings larger than this are refused


MAX_PIXELS = 40_000_000             # images with more pixels than this are refused before decoding


MIN_SIDE = 16                       # images with a side shorter than this are refused


_U8_OFFSET = 1 / 64                 # see _to_tensor: makes images.to_uint8 return the upload exactly


class PhotoError(ValueError):
    """A photo that cannot be used; the message says why, in one sentence for the user."""


# ====================================================================================== loading
def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return "the image"


def _read_bytes(source, max_bytes: int) -> tuple[bytes, str]:
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise PhotoError(f"{name}: no such file")
        size = path.stat().st_size
        if size > max_bytes:
            raise PhotoError(f"{name}: the file is {size / 2**20:.1f} MB; photos up to "
                             f"{max_bytes / 2**20:.0f} MB are accepted")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("a file object given to load_photo must be opened in binary mode")
        data = bytes(data)
    else:
        raise TypeError(f"load_photo takes a path, bytes, a binary file, a PIL image, a numpy array "
                        f"or an image tensor, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise PhotoError(f"{name}: the file is over {max_bytes / 2**20:.0f} MB; photos up to "
                         f"{max_bytes / 2**20:.0f} MB are accepted")
    if not data:
        raise PhotoError(f"{name}: the file is empty")
    return data, name


def _open(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Image.open reads only the header; a decompression bomb is refused here, before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoError(f"{name}: the image is far too large (a decompression bomb?); photos "
                             f"up to {max_pixels / 1e6:.0f} megapixels are accepted") from None
        except UnidentifiedImageError:
            raise PhotoError(f"{name}: not an image (or a format that cannot be read); "
                             "upload a PNG, JPEG, WebP, GIF, BMP or TIFF file") from None
        except Exception as e:  # noqa: BLE001 - plugins raise many types on malformed headers
            raise PhotoError(f"{name}: not a readable image ({_short(e)})") from None


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]


def _check_size(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise PhotoError(f"{name}: the image is {w}x{h} ({w * h / 1e6:.0f} megapixels); photos up "
                         f"to {max_pixels / 1e6:.0f} megapixels are accepted")
    if min(w, h) < MIN_SIDE:
        raise PhotoError(f"{name}: the image is only {w}x{h} pixels; it needs at least "
                         f"{MIN_SIDE} pixels on each side")


def _decode(img: Image.Image, name: str, want: int | None) -> Image.Image:
    """Force a full decode of the first frame (truncated files fail here)."""
    if want and img.format == "JPEG":
        try:                 # decode JPEGs at a reduced DCT scale when they are much larger
            img.draft(None, (want, want))
        except Exception:    # noqa: BLE001 - draft is an optimisation only
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message=".*[Tt]ransparency.*")
        try:
            img.seek(0)
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoError(f"{name}: the image is far too large (a decompression bomb?)") from None
        except MemoryError:
            raise PhotoError(f"{name}: the image is too large to decode") from None
        except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, EOFError, ValueError ...
            what = ("truncated" if "truncat" in str(e).lower() or isinstance(e, EOFError)
                    else "damaged")
            raise PhotoError(f"{name}: the image data is {what} and cannot be decoded "
                             f"({_short(e)})") from None
    return img


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited on white; 16/32-bit and float grey are
    scaled (Pillow's own convert clips them at 255); an ICC profile is applied when possible."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode.startswith("I;16"):
            scale = 65535.0
        elif mode == "I":
            scale = 65535.0 if top > 255 else 255.0
        else:
            scale = 1.0 if top <= 1.0 else (255.0 if top <= 255 else 65535.0)
        arr = np.clip(np.nan_to_num(arr / scale), 0, 1)
        return Image.fromarray(np.round(arr * 255).astype(np.uint8), "L").convert("RGB")
    icc = img.info.get("icc_profile")
    if icc and mode in ("RGB", "RGBA", "CMYK"):
        img = _apply_icc(img, icc)
        mode = img.mode
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info \
        or (mode == "P" and getattr(img.palette, "mode", "") == "RGBA")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if has_alpha:
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            if mode == "1":
                img = img.convert("L")
            return img.convert("RGB")
    except Exception as e:  # noqa: BLE001
        raise PhotoError(f"{name}: unsupported colour mode {mode!r} ({_short(e)})") from None


def _apply_icc(img: Image.Image, icc: bytes) -> Image.Image:
    """Convert to sRGB with the embedded ICC profile; on any problem keep the image as it is."""
    try:
        from PIL import ImageCms
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        out = ImageCms.profileToProfile(img, src, dst, outputMode=out_mode)
        return out if out is not None else img
    except Exception:  # noqa: BLE001 - colour management is best effort
        return img


def _from_array(arr: np.ndarray) -> Image.Image:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise PhotoError(f"an image array must be [H,W], [H,W,1], [H,W,3] or [H,W,4], got shape "
                         f"{list(np.shape(arr))}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number):
            raise PhotoError(f"an image array must hold numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise PhotoError("the image array holds NaN or inf values")
        a = a * 255 if a.max(initial=0) <= 1.0 else a
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def open_photo(source, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               draft_size: int | None = None) -> Image.Image:
    """A photo as a decoded, upright (EXIF orientation applied), RGB PIL image, not cropped.

    ``source``: a path, bytes, a binary file object, a PIL image, an HWC numpy array (uint8, or
    floats in [0, 1]) or an image tensor (``[3,H,W]``/``[1,3,H,W]`` in [-1, 1]). Only the first
    frame of an animation is used. Raises :class:`PhotoError` for files over ``max_bytes``, images
    over ``max_pixels`` (checked from the header, before decoding), sides under 16 px, things that
    are not images, and truncated or damaged data."""
    if isinstance(source, torch.Tensor):
        from ..images import to_pil
        t = source.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        try:
            img = to_pil(t)
        except ValueError as e:
            raise PhotoError(f"not an image tensor: {e}") from None
        _check_size(img, "the image", max_pixels)
        return img
    if isinstance(source, np.ndarray):
        img = _from_array(source)
        _check_size(img, "the image", max_pixels)
        return _to_rgb(img, "the image")
    if isinstance(source, Image.Image):
        img, name = source, "the image"
    else:
        data, name = _read_bytes(source, int(max_bytes))
        img = _open(data, name, int(max_pixels))
    _check_size(img, name, int(max_pixels))
    img = _decode(img, name, draft_size)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the pixels as stored
        pass
    return _to_rgb(img, name)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> [1,3,H,W] float32. ``(u + 1/64) / 127.5 - 1`` (clamped to 1) instead of
    ``u / 127.5 - 1`` so that :func:`core.images.to_uint8`, which truncates, gives back exactly
    ``u`` (the plain formula loses 1 on a quarter of the byte values)."""
    u = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return ((u + _U8_OFFSET) / 127.5 - 1).clamp(max=1.0)[None]


def crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    """Centre-crop to a square and resize to ``resolution`` (Lanczos)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        img = img.crop((left, top, left + s, top + s))     # crop first: no bleed from outside
    return img.resize((resolution, resolution), Image.LANCZOS, reducing_gap=3.0)


def load_photo(source, resolution: int, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A photo as ``[1,3,R,R]`` float32 in [-1, 1]: EXIF orientation honoured, any colour mode
    converted to RGB (transparency on white), first frame of animations, centre-cropped to a
    square and resized with Lanczos. Raises one :class:`PhotoError` per problem (see
    :func:`open_photo`)."""
    resolution = int(resolution)
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    img = open_photo(source, max_bytes, max_pixels, draft_size=2 * resolution)
    return _to_tensor(crop_resize(img, resolution))
