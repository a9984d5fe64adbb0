"""Painting with Neurons: the editing engine's public Python API.

    import core
    model = core.load_model("path/to/bundle")       # or a legacy .pth/.pt, or "default"
    images = model.render("0-7")                    # image numbers -> [8,3,H,W] in about [-1, 1]
    feats = model.features(model.sample_z([0, 1]), "layer4")
    core.images.save_grid(images, "grid.png", nrow=4)

Everything here is pure torch/numpy (no Gradio). Kept small on purpose:

- ``load_model(source, device="cpu") -> Model``
- ``Model``: ``.bundle .generator .layers .resolution .z_dim .name .defaults``,
  ``.sample_z(image_numbers, seed=1)``, ``.generate(z, truncation=None, noise=None)``,
  ``.features(z, layer, truncation=None, noise=None)``,
  ``.render(image_numbers, batch_size=16, truncation=None, noise=None, seed=1)``
- bundles: ``Bundle``, ``BundleError``, ``load_bundle``, ``save_bundle``, ``convert_checkpoint``
- ``LayerError`` (a wrong layer name; the message lists the valid ones), ``parse_image_numbers``
"""
from __future__ import annotations

from . import images
from .bundle import Bundle, BundleError, convert_checkpoint, load_bundle, save_bundle
from .generators import LayerError
from .images import parse_image_numbers
from .model import Model
from .paths import DEFAULT_BUNDLE, MODELS_DIR, REPO_ROOT
from .sources import load_model

__all__ = ["load_model", "Model", "Bundle", "BundleError", "load_bundle", "save_bundle",
           "convert_checkpoint", "LayerError", "parse_image_numbers", "images", "DEFAULT_BUNDLE",
           "MODELS_DIR", "REPO_ROOT"]
