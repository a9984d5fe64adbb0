"""Photos: safe loading, inversion into the generator, image-specific adaptation, compositing.

The pipeline (ganseeing's: encoder start, latent + residual optimisation, then adaptation of
the fine layers; see ARCHITECTURE.md)::

    x = load_photo("upload.jpg", model.resolution)             # [1,3,R,R] in [-1, 1], or PhotoError
    inv = finish(invert(model, x, encoder=load_encoder(path), segmenter=seg))   # z + feature residual
    ada = finish(adapt(model, inv, x, segmenter=seg))           # dense ΔW on the fine layers only
    stack = EditStack(ada.edits).push(paint_edit(...))          # per-session edits, base untouched
    before, after = inv.render(model, EditStack(ada.edits)), inv.render(model, stack)
    out = composite(x, before, after)                           # the upload, edited region replaced

``invert`` and ``adapt`` are *generator functions*: they yield progress records (so a UI can stream
previews and a Stop button works) and the last record carries the result::

    {"stage": "invert" | "adapt", "step": i, "steps": n, "loss": float, "psnr": float,
     "preview": [1,3,R,R] tensor (CPU, clamped) or None, "done": bool, "stopped": bool,
     "result": InversionResult | AdaptResult | None}      # result only on the final record

``stop()`` (a callable) is checked every step; when it returns True the generator ends early with
the best iterate so far. ``progress(fraction, desc=...)`` (``gr.Progress``-compatible) is called at
every record. :func:`finish` runs such a generator to the end and returns the result.

Inversion (ICCV'19 "invert a layer"): start from the encoder's ``(z, features)`` when the bundle has
one, else from the best of ``starts`` seeded random z (scored by pixel loss); then Adam on z plus an
additive residual on one early layer's output (default: the bundle's paint layer), minimising
``L1 pixel + feature_weight * perceptual + residual_weight * mean(r^2)/mean(f^2)``. The perceptual
term compares the bundle segmenter's intermediate activations (ToySegNet ``enc2``/``enc3``) of the
render and of the photo (computed once); it is skipped when there is no segmenter.

Adaptation (GANPaint Studio): the latent and residual stay fixed; a dense ΔW per *fine* layer
(default: layers after the paint layer at >= 2x its resolution, e.g. layer7..layer10 of the 64-px
Toytown ProGAN, whose paint layer is the 16-px layer6) is fitted with the same losses plus
``penalty * sum ||ΔW||^2 / ||W||^2``. Coarse layers are untouched, so painted concepts keep their meaning. The result is a tuple of
``WeightEdit.full(layer, ΔW)``: a per-session edit. The output (toRGB) layer is not a named layer
and cannot be expressed as a WeightEdit, so it is never adapted.

Defaults, chosen on the 64-px Toytown GAN (10,647 steps) with 8 held-out renders, 2 CPU threads:
``invert(steps=150, lr=0.2, feature_weight=0.1, residual_weight=0.05, starts=16)`` then
``adapt(steps=300, lr=0.05, penalty=1)`` (10% warm-up) on layer7..layer10: median 30.3 dB after
inversion, 31.3 dB after adaptation, 13.4 s per photo, editability 0.84 (a tree stroke raises tree
pixels by 84% of what it does on samples). The penalty trades fidelity for editability: 0.3 gave
31.8 dB / 0.60, 0.01 33.0 dB / 0.09 (the fine layers then redraw the photo whatever the paint layer
says), no adaptation 28.3 dB / 0.85 on the four hardest. 600 steps added < 0.1 dB. The old default
(only the two 64-px layers, lr 0.005, penalty 10, 100 steps) added 0.1-0.2 dB: 2 x 16 channels
cannot fit a photo's detail.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .edits import EditStack, WeightEdit
from .model import generator_of, sampling_options
from .optim import Adam
from .settings import model_settings

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
        from .images import to_pil
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


# ====================================================================================== shared bits
def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (both clamped), i.e. on the 0..1 scale."""
    mse = F.mse_loss(a.detach().float().clamp(-1, 1), b.detach().float().clamp(-1, 1)).item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def finish(gen: Iterator[dict]):
    """Run an ``invert``/``adapt`` generator to the end and return the final record's result."""
    last = None
    for last in gen:
        pass
    if last is None or last.get("result") is None:
        raise RuntimeError("the generator ended without a result")
    return last["result"]


def chain_edits(*edits):
    """One ``edit(name, x)`` callable applying several (None ones skipped) in order."""
    edits = [e for e in edits if e is not None]
    if not edits:
        return None
    if len(edits) == 1:
        return edits[0]

    def edit(name, x):
        for e in edits:
            x = e(name, x)
        return x
    return edit


def _layer_res(g, layer: str) -> int:
    from .edits import layer_shape
    return int(layer_shape(g, layer)[1])


def default_fine_layers(model, paint: str | None = None) -> list[str]:
    """Default layers to adapt: those after the paint layer at >= 2x its resolution (layer7..layer10
    for the 64-px Toytown ProGAN, paint layer layer6); at least the last two layers. Only the
    64-px layers (>= 4x) gave +0.1 dB there: 2 x 16 channels cannot fit a photo's detail."""
    g = generator_of(model)
    paint = paint or model_settings(model).paint_layer
    p = g.layer_index(paint)
    res = _layer_res(g, paint)
    out = [n for n in g.layers[p + 1:] if _layer_res(g, n) >= 2 * res]
    if not out:
        out = [n for n in g.layers[-2:] if g.layer_index(n) > p] or g.layers[-1:]
    return out


def segmenter_features(segmenter, images: torch.Tensor) -> list[torch.Tensor]:
    """Intermediate activations used as a perceptual loss: ``segmenter.features(images)`` when the
    object has it, else the ToySegNet encoder's ``enc2`` and ``enc3`` outputs; [] when neither."""
    if segmenter is None:
        return []
    if hasattr(segmenter, "features"):
        return list(segmenter.features(images))
    net = getattr(segmenter, "net", None)
    if net is None or not all(hasattr(net, k) for k in ("enc1", "enc2", "enc3")):
        return []
    e1 = net.enc1(images)
    e2 = net.enc2(e1)
    e3 = net.enc3(e2)
    return [e2, e3]


class PhotoLoss:
    """``L1(render, photo) + feature_weight * sum_k mse(f_k(render), f_k(photo)) / mean f_k(photo)^2``
    with ``f_k`` the segmenter's intermediate activations (photo features computed once)."""

    def __init__(self, photo: torch.Tensor, segmenter=None, feature_weight: float = 0.1):
        self.photo = photo
        self.feature_weight = float(feature_weight)
        self.segmenter = segmenter if self.feature_weight > 0 else None
        with torch.no_grad():
            self.targets = segmenter_features(self.segmenter, photo)
        self.norms = [t.pow(2).mean().clamp_min(1e-8) for t in self.targets]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        loss = (image - self.photo).abs().mean(dim=(1, 2, 3))
        if self.targets:
            feats = segmenter_features(self.segmenter, image)
            for f, t, n in zip(feats, self.targets, self.norms):
                loss = loss + self.feature_weight * (f - t).pow(2).mean(dim=(1, 2, 3)) / n
        return loss              # [N]


def _record(stage, step, steps, loss, image, photo, preview, done=False, stopped=False,
            result=None) -> dict:
    img = image.detach().clamp(-1, 1).cpu()
    return {"stage": stage, "step": int(step), "steps": int(steps), "loss": float(loss),
            "psnr": psnr(img, photo.cpu()), "preview": img if preview else None, "done": done,
            "stopped": stopped, "result": result}


def _lr_at(lr: float, step: int, steps: int, warmup: int = 0) -> float:
    """Cosine decay from lr to lr/10, after a linear warm-up over the first ``warmup`` steps."""
    t = step / max(1, steps)
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return ramp * lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _as_photo(photo, resolution: int, device) -> torch.Tensor:
    if isinstance(photo, torch.Tensor):
        x = photo.detach().float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"photo must be [1,3,H,W] in [-1, 1], got {list(photo.shape)}")
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                              align_corners=False, antialias=True)
    else:
        x = load_photo(photo, resolution)
    return x.to(device)


def _report(progress, rec: dict) -> None:
    if progress is not None:
        progress(rec["step"] / max(1, rec["steps"]),
                 desc=f"{rec['stage']}: step {rec['step']}/{rec['steps']}, PSNR {rec['psnr']:.1f} dB")


# ====================================================================================== inversion
@dataclasses.dataclass(eq=False)
class InversionResult:
    """A photo's place in the generator: ``z`` ``[1, z_dim]`` plus an additive ``residual``
    ``[1, C, h, w]`` on the output of ``layer`` (tensors on the CPU)."""
    z: torch.Tensor
    layer: str
    residual: torch.Tensor
    loss: float = float("nan")
    psnr: float = float("nan")
    steps: int = 0
    stopped: bool = False
    seconds: float = 0.0
    start: str = ""                       # "encoder", "encoder+features" or "random (best of N)"
    image: torch.Tensor | None = None     # the final render [1,3,R,R], clamped

    def feature_edit(self, then=None):
        """``edit(name, x)`` for ``Generator.run``: adds the residual after ``layer``, then applies
        ``then`` (e.g. ``stack.feature_edit()``, so paint strokes at that layer land on top)."""
        layer, residual = self.layer, self.residual

        def edit(name, x):
            return x + residual.to(x.device, x.dtype) if name == layer else x
        return chain_edits(edit, then)

    def render(self, model, stack: EditStack | None = None) -> torch.Tensor:
        """The inverted photo under an edit stack (adaptation WeightEdits + paint UnitEdits):
        ``[1,3,R,R]`` on the model's device."""
        g = generator_of(model)
        t, n = sampling_options(model)
        stack = stack or EditStack()
        deltas = stack.weight_deltas(g)
        with torch.no_grad():
            state = g.start(self.z.to(g.device), truncation=t, noise=n,
                            weight_deltas=deltas or None)
            state = g.run(state, edit=self.feature_edit(stack.feature_edit()))
            return g.finish(state)


def _random_starts(g, model, target_loss: PhotoLoss, starts: int, seed: int, device):
    t, n = sampling_options(model)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(max(1, int(starts)), g.z_dim, generator=gen).to(device)
    with torch.no_grad():
        scores = []
        for i in range(0, len(z), 8):
            img = g.unclamped_output(g.run(g.start(z[i:i + 8], truncation=t, noise=n)))
            scores.append((img - target_loss.photo).abs().mean(dim=(1, 2, 3)))
        best = int(torch.cat(scores).argmin())
    return z[best:best + 1]


def invert(model, photo, steps: int = 150, encoder=None, segmenter=None, layer: str | None = None,
           lr: float = 0.2, residual_lr: float | None = None, feature_weight: float = 0.1,
           residual_weight: float = 0.05, starts: int = 16, seed: int = 0,
           progress: Callable | None = None, stop: Callable[[], bool] | None = None,
           preview_every: int = 10) -> Iterator[dict]:
    """Invert a photo (``[1,3,R,R]`` in [-1, 1], or anything :func:`load_photo` takes): a generator
    yielding progress records; the final one (``done=True``) has ``result``: an
    :class:`InversionResult` holding the best iterate.

    Start: ``encoder(photo) -> (z, features)`` when given (its features seed the residual when
    that renders closer), else the best of ``starts`` seeded random z by pixel L1. Then ``steps``
    Adam steps (cosine-decayed ``lr``; ``residual_lr`` defaults to ``lr``) on z and the residual at
    ``layer`` (default: the encoder's layer, else the paint layer), minimising :class:`PhotoLoss`
    + ``residual_weight * mean(r^2) / mean(f^2)``. A record is yielded at step 0, every
    ``preview_every`` steps (with a preview) and at the end."""
    t0 = time.perf_counter()
    g = generator_of(model)
    device = g.device
    t, n = sampling_options(model)
    x = _as_photo(photo, g.resolution, device)
    layer = g.check_layer(layer or getattr(encoder, "layer", None) or model_settings(model).paint_layer)
    steps, preview_every = max(0, int(steps)), max(1, int(preview_every))
    objective = PhotoLoss(x, segmenter, feature_weight)

    def prefix(z):
        return g.run(g.start(z, truncation=t, noise=n), stop=layer)

    def tail(state, residual):
        s = state.clone()
        s.x = state.x + residual
        return g.unclamped_output(g.run(s))

    with torch.no_grad():
        if encoder is not None:
            if getattr(encoder, "layer", layer) != layer:
                raise ValueError(f"the encoder predicts {encoder.layer!r} features; invert at that "
                                 f"layer (got layer={layer!r})")
            z_hat, f_hat = encoder(x)
            z0 = z_hat.reshape(1, g.z_dim).to(device)
            s0 = prefix(z0)
            r_enc = (f_hat.to(device) - s0.x)
            cand = [(r_enc, "encoder+features"), (torch.zeros_like(s0.x), "encoder")]
            scores = [float(objective(tail(s0, r))) for r, _ in cand]
            r0, how = cand[int(np.argmin(scores))]
        else:
            z0 = _random_starts(g, model, objective, starts, seed, device)
            s0 = prefix(z0)
            r0, how = torch.zeros_like(s0.x), f"random (best of {max(1, int(starts))})"
        f_scale = s0.x.pow(2).mean().clamp_min(1e-8)

    z = z0.clone().requires_grad_(True)
    r = r0.clone().requires_grad_(True)
    opt = Adam([z, r])
    base_lrs = [lr, lr if residual_lr is None else residual_lr]
    best = None
    stopped = False
    step = 0
    while True:
        image = tail(prefix(z), r)
        loss = objective(image)[0] + residual_weight * r.pow(2).mean() / f_scale
        lv = float(loss.detach())
        if best is None or lv < best[0]:
            best = (lv, z.detach().clone(), r.detach().clone(), image.detach().clamp(-1, 1))
        if step == 0 or step % preview_every == 0:
            rec = _record("invert", step, steps, lv, image, x, preview=True)
            _report(progress, rec)
            yield rec
        if step >= steps:
            break
        if stop is not None and stop():
            stopped = True
            break
        opt.step(list(torch.autograd.grad(loss, [z, r])),
                 [_lr_at(base, step, steps) for base in base_lrs])
        step += 1
    lv, zb, rb, img = best
    result = InversionResult(zb.cpu(), layer, rb.cpu(), loss=lv, psnr=psnr(img, x), steps=step,
                             stopped=stopped, seconds=time.perf_counter() - t0, start=how,
                             image=img.cpu())
    rec = _record("invert", step, steps, lv, img, x, preview=True, done=True, stopped=stopped,
                  result=result)
    _report(progress, rec)
    yield rec


# ====================================================================================== adaptation
@dataclasses.dataclass(eq=False)
class AdaptResult:
    """Image-specific adaptation: ``edits`` (``WeightEdit.full`` per fine layer) to push onto the
    session's stack before paint edits; ``psnr_before``/``psnr`` of the inversion without/with
    them; ``change`` = ``sum ||ΔW||^2 / ||W||^2``."""
    edits: tuple
    layers: tuple
    psnr_before: float
    psnr: float
    loss: float
    change: float
    steps: int = 0
    stopped: bool = False
    seconds: float = 0.0
    image: torch.Tensor | None = None

    def stack(self) -> EditStack:
        return EditStack(self.edits)


def adapt(model, inversion: InversionResult, photo, steps: int = 300,
          fine_layers: list[str] | None = None, penalty: float = 1.0, lr: float = 0.05,
          segmenter=None, feature_weight: float = 0.1, progress: Callable | None = None,
          stop: Callable[[], bool] | None = None, preview_every: int = 10) -> Iterator[dict]:
    """Fit dense ΔW on ``fine_layers`` (default :func:`default_fine_layers`: only layers well after the
    paint layer) so the inverted photo matches the photo: Adam (``lr``, cosine-decayed) on
    :class:`PhotoLoss` + ``penalty * sum_l ||ΔW_l||^2 / ||W_l||^2``. z and the residual stay fixed;
    the layers before the first fine layer run once. A generator like :func:`invert`; the final
    record's ``result`` is an :class:`AdaptResult` (best iterate). The shared model is never
    modified (gradients go only to the ΔW tensors)."""
    t0 = time.perf_counter()
    g = generator_of(model)
    device = g.device
    t, n = sampling_options(model)
    x = _as_photo(photo, g.resolution, device)
    layers = list(fine_layers) if fine_layers else default_fine_layers(model)
    for name in layers:
        g.check_layer(name)
    layers = sorted(set(layers), key=g.layer_index)
    first = g.layer_index(layers[0])
    if g.layer_index(inversion.layer) >= first:
        raise ValueError(f"fine layers must come after the inversion layer {inversion.layer!r}; "
                         f"got {', '.join(layers)}")
    steps, preview_every = max(0, int(steps)), max(1, int(preview_every))
    objective = PhotoLoss(x, segmenter, feature_weight)
    residual_edit = inversion.feature_edit()
    with torch.no_grad():
        state0 = g.start(inversion.z.to(device), truncation=t, noise=n)
        if first > 0:
            state0 = g.run(state0, stop=g.layers[first - 1], edit=residual_edit)
    weights = {name: g.main_weight(name) for name in layers}
    norms = {name: weights[name].detach().pow(2).sum().clamp_min(1e-12) for name in layers}
    deltas = {name: torch.zeros_like(weights[name], requires_grad=True) for name in layers}
    params = list(deltas.values())
    opt = Adam(params)

    def render():
        s = state0.clone()
        s.weight_deltas = deltas
        return g.unclamped_output(g.run(s, edit=residual_edit))

    best = None
    stopped = False
    step = 0
    psnr_before = None
    while True:
        image = render()
        change = sum(deltas[k].pow(2).sum() / norms[k] for k in layers)
        loss = objective(image)[0] + penalty * change
        lv = float(loss.detach())
        if psnr_before is None:
            psnr_before = psnr(image, x)
        if best is None or lv < best[0]:
            best = (lv, {k: v.detach().clone() for k, v in deltas.items()},
                    image.detach().clamp(-1, 1), float(change.detach()))
        if step == 0 or step % preview_every == 0:
            rec = _record("adapt", step, steps, lv, image, x, preview=True)
            _report(progress, rec)
            yield rec
        if step >= steps:
            break
        if stop is not None and stop():
            stopped = True
            break
        # warm-up: Adam's first steps move every weight by ~lr at once, which overshot on photos
        # the inversion already fits well (the best iterate stayed the unadapted one)
        rate = _lr_at(lr, step, steps, warmup=steps // 10)
        opt.step(list(torch.autograd.grad(loss, params)), [rate] * len(params))
        step += 1
    lv, dbest, img, change = best
    edits = tuple(WeightEdit.full(k, dbest[k].cpu(), label=f"adapt {k}") for k in layers)
    result = AdaptResult(edits, tuple(layers), psnr_before, psnr(img, x), lv, change, step,
                         stopped, time.perf_counter() - t0, img.cpu())
    rec = _record("adapt", step, steps, lv, img, x, preview=True, done=True, stopped=stopped,
                  result=result)
    _report(progress, rec)
    yield rec


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


__all__ = ["PhotoError", "load_photo", "open_photo", "crop_resize", "invert", "adapt", "finish",
           "composite", "edit_mask", "InversionResult", "AdaptResult", "PhotoLoss", "psnr",
           "default_fine_layers", "segmenter_features", "chain_edits",
           "MAX_BYTES", "MAX_PIXELS", "MIN_SIDE"]
