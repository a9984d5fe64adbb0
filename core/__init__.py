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

from pathlib import Path
from typing import Iterable

import torch

from . import images
from .bundle import (LEGACY_SUFFIXES, Bundle, BundleError, convert_checkpoint, load_bundle,
                     read_checkpoint, save_bundle)
from .generators import LayerError
from .images import parse_image_numbers

REPO_ROOT = Path(__file__).resolve().parent.parent
# The checkout's models/ folder; an installed copy (pyproject.toml) carries it as core/_models.
_INSTALLED_MODELS = Path(__file__).resolve().parent / "_models"
MODELS_DIR = _INSTALLED_MODELS if _INSTALLED_MODELS.is_dir() else REPO_ROOT / "models"
DEFAULT_BUNDLE = MODELS_DIR / "toytown"


def _check_noise(noise):
    if noise in ("buffers", "zero") or (isinstance(noise, int) and not isinstance(noise, bool)):
        return noise
    raise ValueError(f"noise must be 'buffers', 'zero' or an integer seed, got {noise!r}")


class Model:
    """A generator from a bundle, with the bundle's defaults and convenience calls.

    ``generator`` is the shared, read-only base model (eval mode, no gradients). Calls run under
    ``torch.no_grad()`` and return tensors on the model's device."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.generator = bundle.generator

    # ------------------------------------------------------------------ facts
    @property
    def layers(self) -> list[str]:
        return list(self.generator.layers)

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def defaults(self) -> dict:
        return self.bundle.defaults

    @property
    def device(self) -> torch.device:
        p = next(iter(self.generator.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {self.bundle.architecture}, {self.resolution}px, "
                f"z_dim={self.z_dim}, layers={self.layers})")

    # ------------------------------------------------------------------ running
    def _options(self, truncation, noise):
        d = self.defaults
        t = d["truncation"] if truncation is None else float(truncation)
        return t, _check_noise(d["noise"] if noise is None else noise)

    def _z(self, z) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() == 1:
            z = z[None]
        if z.shape[0] == 0 or z[0].numel() != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}] for this model, got {tuple(z.shape)}")
        return z.reshape(z.shape[0], self.z_dim).to(self.device)

    def sample_z(self, image_numbers: Iterable[int] | str, seed: int = 1) -> torch.Tensor:
        """Latents of image numbers (a list or a string like ``"0-15,20"``): ``[N, z_dim]`` float32,
        row i of ``RandomState(seed).standard_normal(...)`` (ARCHITECTURE.md, "Conventions")."""
        return self.generator.sample_z(parse_image_numbers(image_numbers), seed)

    @torch.no_grad()
    def generate(self, z, truncation: float | None = None, noise=None) -> torch.Tensor:
        """Images ``[N,3,H,W]``, about [-1, 1]. ``truncation``/``noise`` default to the bundle's
        defaults; noise is ``"buffers"``, ``"zero"`` or an int seed (ProGAN ignores both)."""
        t, n = self._options(truncation, noise)
        return self.generator.generate(self._z(z), truncation=t, noise=n)

    @torch.no_grad()
    def features(self, z, layer: str, truncation: float | None = None, noise=None) -> torch.Tensor:
        """Output of ``layer`` (``[N,C,h,w]``); raises LayerError listing the layers if unknown."""
        self.generator.check_layer(layer)
        t, n = self._options(truncation, noise)
        return self.generator.features(self._z(z), layer, truncation=t, noise=n)

    def render(self, image_numbers: Iterable[int] | str, batch_size: int = 16,
               truncation: float | None = None, noise=None, seed: int = 1) -> torch.Tensor:
        """Images for image numbers, in batches of ``batch_size``; returned on the CPU."""
        z = self.sample_z(image_numbers, seed)
        batch_size = max(1, int(batch_size))
        out = [self.generate(z[i:i + batch_size], truncation, noise).cpu()
               for i in range(0, len(z), batch_size)]
        return torch.cat(out)


def load_model(source, device: str | torch.device = "cpu") -> Model:
    """Open a model from:

    - a bundle folder (``config.json`` + ``generator.safetensors``), or a :class:`Bundle`;
    - a legacy checkpoint ``.pth``/``.pt`` (converted in memory, nothing written);
    - ``"default"``: the embedded bundle at ``<repo>/models/toytown`` (``DEFAULT_BUNDLE``);
    - a Hugging Face Hub id ``"org/name"`` or ``"org/name@revision"`` (cache first, then download;
      an edited-model repo is applied on top of its base), see :mod:`core.hub`.

    Raises :class:`BundleError` (a ``ValueError``) naming the file and problem, or
    :class:`core.hub.HubError` naming the repo."""
    if isinstance(source, Bundle):
        return Model(source)
    if isinstance(source, str) and source == "default":
        if not (DEFAULT_BUNDLE / "config.json").is_file():
            raise BundleError(f"{DEFAULT_BUNDLE}: the embedded default bundle is not there yet "
                              "(it is built by the scripts in training/); pass a bundle folder or "
                              "a .pth/.pt checkpoint instead")
        return Model(load_bundle(DEFAULT_BUNDLE, device=device))
    path = Path(source)
    from .hub import folder_kind, load_model_from_hub, looks_like_repo_id
    if path.is_dir():
        if folder_kind(path) == "edited":
            return load_model_from_hub(path, device=device)
        return Model(load_bundle(path, device=device))
    if isinstance(source, str) and not path.exists() and looks_like_repo_id(source):
        return load_model_from_hub(source, device=device)
    if path.is_file():
        if path.suffix.lower() not in LEGACY_SUFFIXES:
            raise BundleError(f"{path}: not a bundle folder or a .pth/.pt checkpoint")
        b = read_checkpoint(path)
        b.generator.to(device)
        return Model(b)
    raise BundleError(f"{path}: no such bundle folder or checkpoint file (or use 'default')")


__all__ = ["load_model", "Model", "Bundle", "BundleError", "load_bundle", "save_bundle",
           "convert_checkpoint", "LayerError", "parse_image_numbers", "images", "DEFAULT_BUNDLE"]
