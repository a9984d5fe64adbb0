"""The model facade: :class:`Model` (a bundle's generator with its defaults) and
:class:`EditedModel` (a base Model plus an edit stack), and the one way engine code reaches a
model's generator and sampling options (the device is ``generator.device``), whatever it was handed (a Model, an EditedModel,
a Bundle or a bare Generator)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from .bundle import Bundle
from .generators import Generator
from .images import parse_image_numbers


def generator_of(model) -> Generator:
    """A core.Model, a Bundle or a Generator -> the Generator."""
    g = getattr(model, "generator", model)
    if not isinstance(g, Generator):
        raise TypeError(f"expected a core.Model or a Generator, got {type(model).__name__}")
    return g


def sampling_options(model, truncation=None, noise=None) -> tuple[float, object]:
    """(truncation, noise): the arguments when given, else the model's bundle defaults, else
    1.0 and ``"buffers"``; noise is checked."""
    d = getattr(model, "defaults", None) or {}
    t = d.get("truncation", 1.0) if truncation is None else float(truncation)
    return t, _check_noise(d.get("noise", "buffers") if noise is None else noise)


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
        return self.generator.device

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {self.bundle.architecture}, {self.resolution}px, "
                f"z_dim={self.z_dim}, layers={self.layers})")

    # ------------------------------------------------------------------ running
    def _options(self, truncation, noise):
        return sampling_options(self, truncation, noise)

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


class EditedModel(Model):
    """A :class:`core.Model` whose ``generate`` / ``features`` / ``render`` apply an EditStack on
    top of the shared, read-only base generator (``generator`` is the base; ``stack`` the edits;
    ``base`` the base Model). Interactive code that caches states should use
    ``core.edits.Renderer(edited.base).render(z, edited.stack)``, which gives the same images."""

    def __init__(self, base: Model, stack, config: dict | None = None, path: Path | None = None):
        super().__init__(base.bundle)
        self.base = base
        self.stack = stack.validate(base)
        self.share_config = dict(config or {})
        self.path = None if path is None else Path(path)
        self._deltas = stack.weight_deltas(base.generator) or None
        self._edit = stack.feature_edit()

    @property
    def name(self) -> str:
        return self.share_config.get("name") or f"{self.base.name} (edited)"

    def __repr__(self) -> str:
        return f"EditedModel({self.name!r}, base={self.base.name!r}, {self.stack!r})"

    @torch.no_grad()
    def generate(self, z, truncation: float | None = None, noise=None) -> torch.Tensor:
        t, n = self._options(truncation, noise)
        return self.generator.generate(self._z(z), truncation=t, noise=n,
                                       weight_deltas=self._deltas, edit=self._edit)

    @torch.no_grad()
    def features(self, z, layer: str, truncation: float | None = None, noise=None) -> torch.Tensor:
        g = self.generator
        g.check_layer(layer)
        t, n = self._options(truncation, noise)
        state = g.start(self._z(z), truncation=t, noise=n, weight_deltas=self._deltas)
        return g.run(state, stop=layer, edit=self._edit).x


__all__ = ["Model", "EditedModel", "generator_of", "sampling_options"]
