"""Segmenters: image -> per-pixel concept labels. Dissection and evaluation judge images with one.

A bundle's segmenter is two files: ``segmenter.json`` ({"architecture": "toyseg", "concepts": [...],
"kwargs": {...}, "palette": [[r,g,b], ...], "metrics": {...}}) and ``segmenter.safetensors``.
Any object with ``concepts`` and ``segment(images)`` can stand in (tests use small fakes).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SEGMENTER_CONFIG = "segmenter.json"
SEGMENTER_WEIGHTS = "segmenter.safetensors"


class SegmenterError(ValueError):
    pass


def _conv(c_in, c_out, k=3, stride=1, dilation=1):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ToySegNet(nn.Module):
    """A small encoder-decoder: full, 1/2 and 1/4 resolution with dilated context at 1/4."""

    def __init__(self, n_classes: int, width: int = 24):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_conv(3, w), _conv(w, w))
        self.enc2 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w, dilation=2),
                                  _conv(4 * w, 4 * w, dilation=4))
        self.dec2 = nn.Sequential(_conv(6 * w, 2 * w, k=1), _conv(2 * w, 2 * w))
        self.dec1 = nn.Sequential(_conv(3 * w, w, k=1), _conv(w, w))
        self.head = nn.Conv2d(w, n_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
        return self.head(d1)


class Segmenter:
    """A trained segmentation net with its concept names. Read-only and thread-safe to share."""

    def __init__(self, net: nn.Module, concepts: list[str], palette=None, config: dict | None = None):
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.concepts = list(concepts)
        self.palette = palette
        self.config = config or {}

    @property
    def id(self) -> str:
        return self.config.get("id", "toyseg")

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> [N,C,H,W] class scores (differentiable)."""
        return self.net(images.float())

    @torch.no_grad()
    def segment(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> [N,H,W] long concept indices."""
        out = [self.logits(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, *images.shape[2:], dtype=torch.long)

    def concept_index(self, concept: str) -> int:
        if concept not in self.concepts:
            raise SegmenterError(f"unknown concept {concept!r}; this segmenter knows "
                                 f"{', '.join(self.concepts)}")
        return self.concepts.index(concept)


def build_net(config: dict) -> nn.Module:
    if config.get("architecture") != "toyseg":
        raise SegmenterError(f"unknown segmenter architecture {config.get('architecture')!r}")
    return ToySegNet(len(config["concepts"]), **config.get("kwargs", {}))


def save_segmenter(seg: Segmenter, folder) -> None:
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in seg.net.state_dict().items()}, folder / SEGMENTER_WEIGHTS)
    (folder / SEGMENTER_CONFIG).write_text(json.dumps(seg.config, indent=1))


def load_segmenter(folder) -> Segmenter | None:
    """The segmenter stored in a bundle folder, or None when the bundle has none."""
    from safetensors.torch import load_file
    folder = Path(folder)
    cfg_path, w_path = folder / SEGMENTER_CONFIG, folder / SEGMENTER_WEIGHTS
    if not cfg_path.exists():
        return None
    try:
        config = json.loads(cfg_path.read_text())
        net = build_net(config)
        net.load_state_dict(load_file(w_path), strict=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SegmenterError(f"{folder}: cannot load the segmenter: {e}") from None
    return Segmenter(net, config["concepts"], config.get("palette"), config)
