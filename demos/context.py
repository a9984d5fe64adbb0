"""What every tab shares: loaded base models (read-only, one per id) and display helpers.

Tabs never hold a model in session state: they hold a model *id* and ask ``AppContext.model(id)``;
per-session edits live in ``gr.State`` as small edit stacks.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

import core
from core.segmenter import load_segmenter

DISPLAY_SIZE = 512  # small GAN images are upscaled (nearest) so clicks and brushes have room


@dataclass
class Loaded:
    model: core.Model
    segmenter: object | None
    notice: str | None = None


@dataclass
class AppContext:
    default_source: str = "default"
    _models: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model_ids(self) -> list[str]:
        return [self.default_source]

    def get(self, model_id: str | None = None) -> Loaded:
        model_id = model_id or self.default_source
        with self._lock:
            if model_id not in self._models:
                model = core.load_model(model_id)
                seg = load_segmenter(model.bundle.path) if model.bundle.path else None
                self._models[model_id] = Loaded(model, seg)
            return self._models[model_id]

    def model(self, model_id: str | None = None) -> core.Model:
        return self.get(model_id).model


def display(image, size: int = DISPLAY_SIZE) -> Image.Image:
    """One engine image ([3,H,W] in [-1,1] or HWC uint8) as a PIL image upscaled to ``size``."""
    pil = core.images.to_pil(image)
    if pil.width < size:
        pil = pil.resize((size, size * pil.height // pil.width), Image.NEAREST)
    return pil


def colorize(labels: torch.Tensor, palette) -> np.ndarray:
    """[H,W] concept indices -> HWC uint8 colours."""
    pal = np.asarray(palette, np.uint8)
    return pal[labels.cpu().numpy()]


def blend(image_u8: np.ndarray, overlay_u8: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    return (image_u8 * (1 - alpha) + overlay_u8 * alpha).astype(np.uint8)
