"""A small photo encoder: image -> (z, features of one early layer), the start for inversion.

Trained per model on the model's own samples (``python -m training.encoder``; ganseeing trains its
encoder the same way, on generated (image, latent) pairs). Stored in the bundle as two files::

    encoder.json          {"format": "painting-with-neurons-encoder", "version": 1,
                           "architecture": "convenc", "layer": "layer4", "resolution": 64,
                           "z_dim": 128, "feature_channels": 192, "feature_size": 8,
                           "kwargs": {"width": 24, "max_width": 96},
                           "generator_sha256": "...", "training": {...}, "metrics": {...}}
    encoder.safetensors   the network's state dict

``load_encoder(bundle)`` returns a :class:`PhotoEncoder` or None (no encoder, or one trained for
different generator weights: a warning says so and inversion falls back to random starts).

Shape (64-px Toytown, layer4 = 192 x 8 x 8): conv 3->24 at 64, then stride-2 stages 48@32, 96@16,
96@8 (two 3x3 convs each, LeakyReLU 0.2); a features head (3x3 conv + 1x1 conv to 192) and a z
head (stride-2 conv to 4x4, linear to z_dim). About 0.7 M parameters, ~85 M multiply-adds per
image: a few milliseconds per photo on a CPU.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_CONFIG = "encoder.json"
ENCODER_WEIGHTS = "encoder.safetensors"
FORMAT = "painting-with-neurons-encoder"
VERSION = 1


class EncoderError(ValueError):
    pass


def _block(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                         nn.LeakyReLU(0.2))


class PhotoEncoder(nn.Module):
    """``encoder(images [N,3,R,R] in [-1,1]) -> (z [N, z_dim], features [N, C, h, h])``."""

    def __init__(self, resolution: int, z_dim: int, layer: str, feature_channels: int,
                 feature_size: int, width: int = 24, max_width: int = 96):
        super().__init__()
        self.resolution, self.z_dim, self.layer = int(resolution), int(z_dim), str(layer)
        self.feature_channels, self.feature_size = int(feature_channels), int(feature_size)
        self.width, self.max_width = int(width), int(max_width)
        if self.feature_size < 1 or self.resolution % self.feature_size:
            raise EncoderError(f"feature size {feature_size} does not divide resolution {resolution}")
        downs = int(round(math.log2(self.resolution // self.feature_size)))
        if 2 ** downs * self.feature_size != self.resolution:
            raise EncoderError(f"resolution {resolution} / feature size {feature_size} is not a power of 2")
        c = self.width
        layers = [_block(3, c)]
        for _ in range(downs):
            c2 = min(2 * c, self.max_width)
            layers += [_block(c, c2, stride=2), _block(c2, c2)]
            c = c2
        self.body = nn.Sequential(*layers)
        self.feature_head = nn.Sequential(_block(c, c), nn.Conv2d(c, self.feature_channels, 1))
        z_layers, s = [], self.feature_size
        while s > 4:
            z_layers.append(_block(c, c, stride=2))
            s //= 2
        self.z_convs = nn.Sequential(*z_layers)
        self.z_head = nn.Linear(c * s * s, self.z_dim)

    def config(self) -> dict:
        return {"architecture": "convenc", "layer": self.layer, "resolution": self.resolution,
                "z_dim": self.z_dim, "feature_channels": self.feature_channels,
                "feature_size": self.feature_size,
                "kwargs": {"width": self.width, "max_width": self.max_width}}

    def forward(self, images: torch.Tensor):
        x = images.float()
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=True)
        h = self.body(x)
        features = self.feature_head(h)
        z = self.z_head(self.z_convs(h).flatten(1))
        # ProGAN pixel-normalises z first, so only its direction matters; return a typical norm.
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return z, features


def build_encoder(model, layer: str, width: int = 24, max_width: int = 96) -> PhotoEncoder:
    """A fresh encoder for ``model`` (a core.Model or Generator) predicting ``layer``'s output."""
    from .edits import layer_shape
    from .model import generator_of
    g = generator_of(model)
    c, h, _ = layer_shape(g, layer)
    return PhotoEncoder(g.resolution, g.z_dim, layer, c, h, width, max_width)


def _bundle_path(source) -> Path | None:
    bundle = getattr(source, "bundle", source)
    path = getattr(bundle, "path", None) if not isinstance(bundle, (str, Path)) else bundle
    return None if path is None else Path(path)


def generator_digest(bundle_path) -> str | None:
    from .bundle import WEIGHTS_FILE, sha256_file
    f = Path(bundle_path) / WEIGHTS_FILE
    return sha256_file(f) if f.is_file() else None


def save_encoder(encoder: PhotoEncoder, bundle_path, training: dict | None = None,
                 metrics: dict | None = None) -> Path:
    """Write encoder.safetensors + encoder.json into a bundle folder; returns the json path."""
    from safetensors.torch import save_file
    folder = Path(bundle_path)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"format": FORMAT, "version": VERSION, **encoder.config(),
           "generator_sha256": generator_digest(folder), "training": training or {},
           "metrics": metrics or {}}
    tmp = folder / (ENCODER_WEIGHTS + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(tmp),
              metadata={"format": FORMAT})
    tmp.replace(folder / ENCODER_WEIGHTS)
    (folder / ENCODER_CONFIG).write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    return folder / ENCODER_CONFIG


def load_encoder(source, device: str | torch.device = "cpu", check_generator: bool = True):
    """The bundle's encoder (eval mode, no gradients), or None when it has none. ``source``: a
    bundle folder, a Bundle or a core.Model. An encoder trained for other generator weights
    (sha256 of generator.safetensors differs) gives a warning and None; a damaged one raises
    :class:`EncoderError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = _bundle_path(source)
    if folder is None or not (folder / ENCODER_CONFIG).is_file():
        return None
    cfg_path, w_path = folder / ENCODER_CONFIG, folder / ENCODER_WEIGHTS
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise EncoderError(f"{cfg_path}: malformed JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise EncoderError(f"{cfg_path}: not an encoder config (format must be {FORMAT!r})")
    if not isinstance(cfg.get("version"), int) or cfg["version"] > VERSION:
        raise EncoderError(f"{cfg_path}: unsupported encoder version {cfg.get('version')!r}")
    if cfg.get("architecture") != "convenc":
        raise EncoderError(f"{cfg_path}: unknown encoder architecture {cfg.get('architecture')!r}")
    if check_generator and cfg.get("generator_sha256"):
        digest = generator_digest(folder)
        if digest is not None and digest != cfg["generator_sha256"]:
            warnings.warn(f"{cfg_path}: the encoder was trained for other generator weights; "
                          "ignoring it (retrain with `python -m training.encoder`)", stacklevel=2)
            return None
    try:
        enc = PhotoEncoder(cfg["resolution"], cfg["z_dim"], cfg["layer"], cfg["feature_channels"],
                           cfg["feature_size"], **cfg.get("kwargs", {}))
        enc.load_state_dict(load_file(str(w_path)), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise EncoderError(f"{folder}: cannot load the encoder: {str(e).splitlines()[0][:200]}") from None
    gen = getattr(source, "generator", None) or getattr(getattr(source, "bundle", None), "generator", None)
    if gen is not None:
        if gen.z_dim != enc.z_dim or gen.resolution != enc.resolution or enc.layer not in gen.layers:
            raise EncoderError(f"{cfg_path}: made for a {enc.resolution}px, z_dim {enc.z_dim} model "
                               f"with layer {enc.layer!r}; this model does not match")
    enc.eval().requires_grad_(False)
    enc.training_info = cfg.get("training", {})
    enc.metrics = cfg.get("metrics", {})
    return enc.to(device)


__all__ = ["PhotoEncoder", "build_encoder", "save_encoder", "load_encoder", "EncoderError",
           "ENCODER_CONFIG", "ENCODER_WEIGHTS"]
