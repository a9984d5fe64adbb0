"""The one generator interface both families implement.

A generator is a sequence of *named layers*. Rendering is split into three calls so that an edit at
layer L can cache the state after L and re-run only the layers that follow:

    state = g.start(z, truncation=1.0, noise="buffers", weight_deltas=None)
    for name in g.layers:
        state = g.step(name, state)          # state.x is that layer's output features
    image = g.finish(state)                  # [N,3,H,W], about [-1, 1]

``weight_deltas`` maps a layer name to ΔW for that layer's main conv weight (same shape), added on
the fly: the shared module is never modified, so many sessions can use one base model at once.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

# A unit edit: called with (layer name, features) after that layer; returns new features.
FeatureEdit = Callable[[str, torch.Tensor], torch.Tensor]


class LayerError(KeyError):
    """A layer name the model does not have."""

    def __str__(self):  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclasses.dataclass
class LayerState:
    """Everything the remaining layers need: features ``x`` plus family-specific extras."""
    x: torch.Tensor
    done: tuple[str, ...] = ()               # layers already run, in order
    weight_deltas: dict | None = None
    extras: dict = dataclasses.field(default_factory=dict)

    def clone(self) -> "LayerState":
        return LayerState(self.x, self.done, self.weight_deltas, dict(self.extras))


class Generator(nn.Module):
    """Base class: subclasses define ``layers``, ``z_dim``, ``resolution``, ``start``, ``step``,
    ``finish``, ``main_weight(layer)`` and ``rewrite_key(layer, state)``."""

    family: str = ""
    layers: list[str]
    z_dim: int
    resolution: int

    # ----------------------------------------------------------------- latents
    def sample_z(self, image_numbers: Iterable[int], seed: int = 1) -> torch.Tensor:
        return sample_z(image_numbers, self.z_dim, seed)

    # ----------------------------------------------------------------- names
    def check_layer(self, layer: str) -> str:
        if layer not in self.layers:
            raise LayerError(f"unknown layer {layer!r}; this {self.family} model has layers "
                             f"{', '.join(self.layers)}")
        return layer

    def layer_index(self, layer: str) -> int:
        return self.layers.index(self.check_layer(layer))

    def layer_channels(self, layer: str) -> int:
        return self.main_weight(layer).shape[-4]

    # ----------------------------------------------------------------- running
    def run(self, state: LayerState, stop: str | None = None,
            edit: FeatureEdit | None = None, keys: dict | None = None) -> LayerState:
        """Run the layers after ``state.done`` up to and including ``stop`` (default: all).

        ``edit(name, x)`` may replace the features after each layer; ``keys`` (a dict) collects
        each layer's rewriting key when the layer is in it."""
        start = len(state.done)
        end = len(self.layers) if stop is None else self.layer_index(stop) + 1
        if end < start:
            raise LayerError(f"layer {stop!r} was already run")
        for name in self.layers[start:end]:
            state = self.step(name, state, keys=keys)
            if edit is not None:
                state.x = edit(name, state.x)
        return state

    @torch.no_grad()
    def generate(self, z: torch.Tensor, truncation: float = 1.0, noise="buffers",
                 weight_deltas: dict | None = None, edit: FeatureEdit | None = None) -> torch.Tensor:
        state = self.start(z, truncation=truncation, noise=noise, weight_deltas=weight_deltas)
        return self.finish(self.run(state, edit=edit))

    @torch.no_grad()
    def features(self, z: torch.Tensor, layer: str, truncation: float = 1.0, noise="buffers",
                 weight_deltas: dict | None = None) -> torch.Tensor:
        state = self.start(z, truncation=truncation, noise=noise, weight_deltas=weight_deltas)
        return self.run(state, stop=layer).x

    def forward(self, z, truncation: float = 1.0, noise="buffers"):
        return self.finish(self.run(self.start(z, truncation=truncation, noise=noise)))

    def _delta(self, state: LayerState, layer: str):
        return None if not state.weight_deltas else state.weight_deltas.get(layer)


_Z_CHUNK = 1024                     # rows per cached chunk of the latent stream
_Z_STATES: dict[tuple[int, int], list] = {}     # (seed, z_dim) -> RandomState state at each chunk start
_Z_CHUNKS: dict[tuple[int, int, int], np.ndarray] = {}
_Z_MAX_CHUNKS = 64


def _z_chunk(seed: int, z_dim: int, c: int) -> np.ndarray:
    chunk = _Z_CHUNKS.get((seed, z_dim, c))
    if chunk is not None:
        return chunk
    states = _Z_STATES.setdefault((seed, z_dim), [np.random.RandomState(seed).get_state()])
    rng = np.random.RandomState()
    rng.set_state(states[min(c, len(states) - 1)])
    for k in range(len(states) - 1, c):          # advance to chunk c, remembering every start
        rng.standard_normal(_Z_CHUNK * z_dim)
        states.append(rng.get_state())
    chunk = rng.standard_normal(_Z_CHUNK * z_dim).reshape(_Z_CHUNK, z_dim).astype(np.float32)
    if len(_Z_CHUNKS) >= _Z_MAX_CHUNKS:
        _Z_CHUNKS.pop(next(iter(_Z_CHUNKS)))
    _Z_CHUNKS[(seed, z_dim, c)] = chunk
    return chunk


def sample_z(image_numbers: Iterable[int], z_dim: int, seed: int = 1) -> torch.Tensor:
    """Row i of ``RandomState(seed).standard_normal(N*z_dim).reshape(N, z_dim)`` for each i.

    The stream is produced in chunks; only the generator state at each chunk start and a few
    chunks are kept, so image 100,000 costs a fraction of a second, not gigabytes."""
    numbers = [int(i) for i in image_numbers]
    if any(i < 0 for i in numbers):
        raise ValueError("image numbers must be >= 0")
    rows = [_z_chunk(seed, z_dim, i // _Z_CHUNK)[i % _Z_CHUNK] for i in numbers]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, z_dim)
