"""The one generator interface both families implement.

A generator is a sequence of *named layers*. Rendering is split into three calls so that an edit at
layer L can cache the state after L and re-run only the layers that follow:

    state = g.start(z, truncation=1.0, noise="buffers", weight_deltas=None)
    for name in g.layers:
        state = g.step(name, state)          # state.x is that layer's output features
    image = g.finish(state)                  # [N,3,H,W], about [-1, 1]

``weight_deltas`` maps a layer name to ΔW for that layer's main conv weight (same shape), added on
the fly: the shared module is never modified, so many sessions can use one base model at once.

Everything that differs between families lives in the family's subclass: the methods marked
"every family" below, and the class attributes that say what its maths allows. Code outside
``core/generators/`` asks the generator, never which family it is. A family is made known to
bundles and checkpoints by one :class:`Family` entry in ``core/generators/__init__.py``.
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
    """Base class of every family: a subclass sets ``family``, ``layers``, ``z_dim`` and
    ``resolution`` and implements the methods marked "every family". ``layer_resolution(layer)``
    is optional (without it, layer sizes are measured with one forward pass)."""

    family: str = ""
    layers: list[str]
    z_dim: int
    resolution: int
    #: a layer's value is linear in its main weight for a fixed key (a plain conv, not a
    #: demodulated one), so a rewrite has a closed-form least-squares solution
    value_linear_in_weight: bool = False
    #: a unit held at a constant everywhere can be written into the weights exactly
    #: (:meth:`fold_constant_units`)
    can_fold_constant_units: bool = False

    # ----------------------------------------------------------------- every family
    def config(self) -> dict:
        """The constructor kwargs that rebuild this generator (saved in a bundle's config)."""
        raise NotImplementedError

    def main_weight(self, layer: str) -> torch.Tensor:
        """The weight that rewriting edits and ``weight_deltas`` add to (shape ``[..., C_out,
        C_in, k, k]``)."""
        raise NotImplementedError

    def start(self, z, truncation: float = 1.0, noise="buffers", weight_deltas=None) -> "LayerState":
        raise NotImplementedError

    def step(self, name: str, state: "LayerState", keys: dict | None = None) -> "LayerState":
        raise NotImplementedError

    def finish(self, state: "LayerState") -> torch.Tensor:
        raise NotImplementedError

    def rewrite_key(self, layer: str, state: "LayerState") -> torch.Tensor:
        """The rewriting key of ``layer`` given the state *before* it: [N, C_in, h, w]."""
        raise NotImplementedError

    def layer_value(self, layer: str, key: torch.Tensor, weight: torch.Tensor | None = None,
                    state: "LayerState | None" = None, offset: tuple[int, int] | None = None):
        """The layer's rewriting value for ``key``, differentiable in ``weight`` (a replacement
        main weight). ``state`` is the state before the layer and ``offset`` (top, left) places a
        cropped key's output inside the layer's output; families that need neither ignore them."""
        raise NotImplementedError

    def conv_padding(self, layer: str) -> int:
        """Families with ``value_linear_in_weight``: the value is ``F.conv2d(key, W, padding=...)``
        with this padding."""
        raise NotImplementedError(f"the {self.family} family's value is not a plain conv")

    # ----------------------------------------------------------------- defaults a family may override
    def value_to_features(self, layer: str, value: torch.Tensor) -> torch.Tensor:
        """The layer's output features given its rewriting value (identity when the value is
        already the output)."""
        return value

    def unclamped_output(self, state: "LayerState") -> torch.Tensor:
        """The image without any output clamp, so that gradients flow (for optimising latents)."""
        return self.finish(state)

    def fold_constant_units(self, layer: str, units, values) -> None:
        """Write units held at constant ``values`` everywhere into the weights (in place)."""
        raise NotImplementedError(f"the {self.family} family cannot fold unit edits into weights")

    @property
    def device(self) -> torch.device:
        """Where the weights live (CPU for a generator without parameters)."""
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

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


@dataclasses.dataclass(frozen=True)
class Family:
    """What bundles and checkpoint conversion need to know about a family."""
    name: str                       # the bundle config's "architecture"
    title: str                      # for model cards
    generator: type                 # the Generator subclass, built from a config's kwargs
    #: does a loaded legacy checkpoint object (a dict of tensors) belong to this family?
    detect: Callable[[object], bool]
    #: (empty generator shaped like the checkpoint, the state dict to load into it); ValueError
    #: with a plain message when the object is not usable
    from_checkpoint: Callable[[object], tuple["Generator", dict]]


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
