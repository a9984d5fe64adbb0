"""StyleGAN2 generator in the rosinality/stylegan2-pytorch layout (Karras et al. 2020).

State-dict keys are exactly those of rosinality's ``Generator`` (``style.{1..n_mlp}.*``,
``input.input``, ``conv1.*``, ``to_rgb1.*``, ``convs.N.*``, ``to_rgbs.N.*``, ``noises.noise_i``) plus
one buffer ``latent_avg`` [style_dim], the mean w used by the truncation trick. A converted NVIDIA
checkpoint ``{'g_ema': state_dict, 'latent_avg': tensor}`` loads with :func:`from_checkpoint`.

Pure torch: the up-sample/blur (``upfirdn2d``) and the fused bias + leaky ReLU are written here in
plain torch, so the model runs on any device without compiled extensions.

Named layers (the numbering of davidbau/rewriting's sequential port, so rule files match)::

    layer1        the constant input, 4x4 (no weight)
    layer2        conv1            (noise_0, style slot 0), followed by to_rgb1 (slot 1)
    layer{K}      convs.{K-3}      (noise_{K-2}, slot K-2); odd K >= 3 up-sample 2x;
                  even K >= 4 are followed by to_rgbs.{(K-4)//2} (slot K-1)

Each conv layer is split the way rewriting needs it: the *key* is the per-pixel input after style
modulation, ``k = x * s`` with ``s = modulation(w)`` ([N, C_in, h, w]; at the input resolution for
up-sampling layers); the *value* is the layer output after demodulated conv, blur, noise, bias and
leaky ReLU; the rewritten weight is the raw ``conv.weight`` [1, C_out, C_in, 3, 3]. Demodulation is
recomputed from the (edited) weight, so the map key -> value is not linear in the weight.

Sampling conventions: truncation is ``latent_avg + psi * (w - latent_avg)`` on every style slot
(the stored buffer); noise is explicit, see :meth:`StyleGAN2Generator.make_noise` (stored buffers,
zero, or seeded so that an image gets the same noise alone or at any batch position).

ToRGB timing: ``step(layerK)`` leaves the ToRGB that follows layer K pending and applies it, to the
layer's possibly *edited* output, when the next layer runs or in ``finish``. So a feature edit at a
layer reaches the RGB skip as well as the later layers, as in the sequential port where each ToRGB
is a module after the layer's activation. Without edits the result equals rosinality's forward.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Family, Generator, LayerError, LayerState

DEFAULT_BLUR_KERNEL = (1, 3, 3, 1)


def channel_table(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's default channels per resolution (NVIDIA config-f has channel_multiplier 2)."""
    full = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
            128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
            512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {r: c for r, c in full.items() if r <= size}


# --------------------------------------------------------------------------------- plain-torch ops
def make_kernel(k) -> torch.Tensor:
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop) both axes by ``pad``, then convolve every
    channel with ``kernel`` (true convolution, as NVIDIA's upfirdn2d with down=1)."""
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    weight = kernel.flip([0, 1]).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = math.sqrt(2)) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope) * scale


# --------------------------------------------------------------------------------- modules
class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight * lr_mul/sqrt(in), bias * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x):
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x up-sampling of the RGB skip with the blur kernel."""

    def __init__(self, kernel, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated conv, split into ``key`` (x * s) and ``value`` (conv of the key with the
    scaled weight, then demodulation); for ``upsample`` a stride-2 transposed conv plus blur."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel=DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.upsample = upsample
        if upsample:   # (created first so state-dict order matches rosinality's)
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.demodulate = demodulate

    def key(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x * s[:, :, None, None]

    def value(self, key: torch.Tensor, s: torch.Tensor, weight: torch.Tensor | None = None):
        weight = (self.weight if weight is None else weight)[0] * self.scale   # [Cout, Cin, k, k]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(key, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(key, weight, padding=self.padding)
        if self.demodulate:   # rsqrt(sum_{i,y,x} (scale * W[o,i,y,x] * s[n,i])^2 + 1e-8)
            demod = torch.rsqrt(s.pow(2) @ weight.pow(2).sum((2, 3)).t() + 1e-8)
            out = out * demod[:, :, None, None]
        return out

    def forward(self, x, w, weight=None):
        s = self.modulation(w)
        return self.value(self.key(x, s), s, weight)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise: torch.Tensor | None):
        return x if noise is None else x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x):
        return fused_leaky_relu(x, self.bias)


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int):
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> bias + leaky ReLU * sqrt(2)."""

    def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False,
                 blur_kernel=DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def value(self, key, s, noise, weight=None):
        return self.activate(self.noise(self.conv.value(key, s, weight), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=DEFAULT_BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, w, skip=None):
        out = self.conv(x, w) + self.bias
        return out if skip is None else out + self.upsample(skip)


# --------------------------------------------------------------------------------- generator
def _channel_dict(channels, size: int) -> dict[int, int]:
    if channels is None:
        return channel_table(size)
    pairs = channels.items() if isinstance(channels, Mapping) else channels
    table = {int(r): int(c) for r, c in pairs}
    needed = [2 ** i for i in range(2, int(math.log2(size)) + 1)]
    missing = [r for r in needed if r not in table]
    if missing:
        raise ValueError(f"channels table lacks resolutions {missing}; it needs {needed}")
    return {r: table[r] for r in needed}


class StyleGAN2Generator(Generator):
    family = "stylegan2"

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, channels=None,
                 lr_mlp: float = 0.01, blur_kernel=DEFAULT_BLUR_KERNEL):
        """``channels``: resolution -> channel count for 4..size, as a dict (int or str keys) or a
        list of [resolution, channels] pairs; None = rosinality's table with channel_multiplier 2."""
        super().__init__()
        size = int(size)
        if size < 8 or size > 1024 or size & (size - 1):
            raise ValueError(f"size must be a power of two in 8..1024, got {size}")
        self.size = self.resolution = size
        self.style_dim = self.z_dim = int(style_dim)
        self.n_mlp = int(n_mlp)
        self.lr_mlp = float(lr_mlp)
        self.blur_kernel = [float(v) if float(v) != int(v) else int(v) for v in blur_kernel]
        self.channels = _channel_dict(channels, size)
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1        # styled convs = noise maps
        self.n_latent = self.log_size * 2 - 2                # style slots (w broadcast to these)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)])
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        c_in = c4
        for i in range(3, self.log_size + 1):
            c_out = self.channels[2 ** i]
            self.convs.append(StyledConv(c_in, c_out, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(c_out, c_out, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(c_out, style_dim, blur_kernel=blur_kernel))
            c_in = c_out
        self.register_buffer("latent_avg", torch.zeros(style_dim))
        self.layers = [f"layer{k}" for k in range(1, self.num_layers + 2)]

    def config(self) -> dict:
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channels": {str(r): c for r, c in self.channels.items()},
                "lr_mlp": self.lr_mlp, "blur_kernel": list(self.blur_kernel)}

    # ----------------------------------------------------------------- layer bookkeeping
    def _styled_conv(self, layer: str) -> StyledConv:
        k = self.layer_index(layer) + 1
        if k == 1:
            raise LayerError(f"{layer} is StyleGAN2's constant input; it has no conv weight")
        return self.conv1 if k == 2 else self.convs[k - 3]

    def _to_rgb_after(self, k: int):
        """(ToRGB module, style slot) that follows layer k in rosinality's order, or None."""
        if k == 2:
            return self.to_rgb1, 1
        if k >= 4 and k % 2 == 0:
            return self.to_rgbs[(k - 4) // 2], k - 1
        return None

    def layer_resolution(self, layer: str) -> int:
        """Side of the layer's output feature map (its key is half of it on up-sampling layers)."""
        k = self.layer_index(layer) + 1
        return 4 if k <= 2 else 2 ** ((k + 3) // 2)

    def layer_channels(self, layer: str) -> int:
        if self.layer_index(layer) == 0:
            return self.channels[4]
        return self.main_weight(layer).shape[1]

    def main_weight(self, layer: str) -> torch.Tensor:
        """The raw conv weight [1, C_out, C_in, 3, 3] (what rewriting edits)."""
        return self._styled_conv(layer).conv.weight

    # ----------------------------------------------------------------- latents and noise
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, style_dim] -> w [N, style_dim]."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean w over ``n`` seeded z (for checkpoints that carry no latent_avg)."""
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed))
        return self.mapping(z.to(self.latent_avg.device)).mean(0)

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [tuple(getattr(self.noises, f"noise_{i}").shape) for i in range(self.num_layers)]

    def make_noise(self, noise, batch: int) -> list[torch.Tensor | None]:
        """One noise map per styled conv (index i feeds layer i+2).

        ``"buffers"``: the stored ``noises.noise_i``; ``"zero"`` (or None): no noise; an int seed:
        a ``torch.Generator`` seeded with it draws every map in order, shared by all images; a
        sequence of N ints: image n draws its own maps from its seed, so an image gets the same noise
        alone or at any batch position; a sequence of ``num_layers`` tensors: used as given."""
        device = self.latent_avg.device
        if isinstance(noise, str):
            if noise == "buffers":
                return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
            if noise == "zero":
                return [None] * self.num_layers
            raise ValueError(f"noise must be 'buffers', 'zero', a seed or seeds, got {noise!r}")
        if noise is None:
            return [None] * self.num_layers
        if isinstance(noise, bool):
            raise ValueError("noise must be 'buffers', 'zero', a seed or seeds, not a bool")

        def seeded(seed: int):
            g = torch.Generator().manual_seed(int(seed))
            return [torch.randn(shape, generator=g) for shape in self.noise_shapes()]

        if isinstance(noise, numbers.Integral):
            return [n.to(device) for n in seeded(noise)]
        if isinstance(noise, Sequence) and noise and all(isinstance(s, numbers.Integral) for s in noise):
            if len(noise) != batch:
                raise ValueError(f"{len(noise)} noise seeds for a batch of {batch}")
            per_image = [seeded(s) for s in noise]
            return [torch.cat(maps).to(device) for maps in zip(*per_image)]
        if isinstance(noise, Sequence) and len(noise) == self.num_layers:
            return [None if n is None else torch.as_tensor(n).to(device) for n in noise]
        raise ValueError(f"noise must be 'buffers', 'zero', an int seed, {batch} seeds or "
                         f"{self.num_layers} tensors")

    # ----------------------------------------------------------------- running
    def start(self, z, truncation: float = 1.0, noise="buffers", weight_deltas=None) -> LayerState:
        """Map z [N, style_dim] to w, truncate ``avg + psi * (w - avg)``, prepare the noise."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.latent_avg.device)
        w = self.mapping(z.reshape(z.shape[0], self.style_dim))
        if truncation != 1:
            w = self.latent_avg + truncation * (w - self.latent_avg)
        return self.start_from_latent(w, noise=noise, weight_deltas=weight_deltas)

    def start_from_latent(self, latent, noise="buffers", weight_deltas=None) -> LayerState:
        """Start from w [N, style_dim] or one w per style slot [N, n_latent, style_dim] (W+).

        The state's ``x`` is that latent; ``extras``: ``latent`` [N, n_latent, style_dim],
        ``noise`` (list per styled conv), ``skip`` (the RGB so far, None before layer2) and
        ``pending_rgb`` (the layer number whose ToRGB is still to be applied, or None)."""
        latent = torch.as_tensor(latent, dtype=torch.float32, device=self.latent_avg.device)
        if latent.ndim == 2:
            latent = latent[:, None, :].expand(-1, self.n_latent, -1)
        if latent.ndim != 3 or latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"latent must be [N, {self.style_dim}] or [N, {self.n_latent}, "
                             f"{self.style_dim}], got {list(latent.shape)}")
        self._check_deltas(weight_deltas)
        extras = {"latent": latent, "noise": self.make_noise(noise, latent.shape[0]),
                  "skip": None, "pending_rgb": None}
        return LayerState(latent, (), weight_deltas, extras)

    def _check_deltas(self, weight_deltas):
        for layer, delta in (weight_deltas or {}).items():
            weight = self.main_weight(layer)
            if delta is not None and tuple(delta.shape) != tuple(weight.shape):
                raise ValueError(f"weight delta for {layer} has shape {list(delta.shape)}, the "
                                 f"weight has {list(weight.shape)}")

    def _check_position(self, layer: str, state: LayerState) -> int:
        i = self.layer_index(layer)
        if len(state.done) != i:
            after = state.done[-1] if state.done else "start"
            raise LayerError(f"{layer} cannot run on the state after {after}; it needs the state "
                             f"after {self.layers[i - 1] if i else 'start'}")
        return i + 1

    def _flush_rgb(self, x: torch.Tensor, extras: dict) -> None:
        """Apply the pending ToRGB (to the possibly edited features ``x``); updates ``extras``."""
        k = extras.get("pending_rgb")
        if k is None:
            return
        to_rgb, slot = self._to_rgb_after(k)
        extras["skip"] = to_rgb(x, extras["latent"][:, slot], extras["skip"])
        extras["pending_rgb"] = None

    def _style(self, k: int, state: LayerState) -> torch.Tensor:
        return self._styled_conv(f"layer{k}").conv.modulation(state.extras["latent"][:, k - 2])

    def _weight(self, k: int, state: LayerState):
        delta = self._delta(state, f"layer{k}")
        weight = self._styled_conv(f"layer{k}").conv.weight
        return weight if delta is None else weight + delta

    def step(self, name: str, state: LayerState, keys: dict | None = None) -> LayerState:
        k = self._check_position(name, state)
        extras = dict(state.extras)
        self._flush_rgb(state.x, extras)
        if k == 1:
            x = self.input(state.x.shape[0])
        else:
            layer = self._styled_conv(name)
            s = self._style(k, state)
            key = layer.conv.key(state.x, s)
            if keys is not None and name in keys:
                keys[name] = key
            x = layer.value(key, s, extras["noise"][k - 2], self._weight(k, state))
        if self._to_rgb_after(k) is not None:
            extras["pending_rgb"] = k
        return LayerState(x, state.done + (name,), state.weight_deltas, extras)

    def finish(self, state: LayerState) -> torch.Tensor:
        """The RGB image [N, 3, size, size] (raw, unclamped) after all layers have run."""
        if len(state.done) != len(self.layers):
            raise LayerError(f"finish needs all {len(self.layers)} layers run, "
                             f"got {len(state.done)}")
        extras = dict(state.extras)
        self._flush_rgb(state.x, extras)
        return extras["skip"]

    # ----------------------------------------------------------------- rewriting split
    def rewrite_key(self, layer: str, state: LayerState) -> torch.Tensor:
        """Key at ``layer`` given the state *before* it: x * s, [N, C_in, h, w]."""
        k = self._check_position(layer, state)
        return self._styled_conv(layer).conv.key(state.x, self._style(k, state))

    def layer_value(self, layer: str, key: torch.Tensor, weight: torch.Tensor | None = None,
                    state: LayerState | None = None, offset: tuple[int, int] | None = None):
        """The layer's value (output after activation) for ``key``.

        ``weight``: a replacement raw weight [1, C_out, C_in, 3, 3] (default: the model's weight
        plus the state's delta for this layer, i.e. what ``step`` uses). ``state`` (required): the
        state *before* the layer; it supplies the style s (modulation already in the key; s is
        needed again for demodulation) and the noise. When ``key`` is a crop of the full key map,
        ``offset`` = (top, left) of the output crop inside the layer's output places the noise;
        a full-size key needs no offset. Differentiable in ``weight`` (for rewriting)."""
        if state is None:
            raise ValueError("layer_value needs the state before the layer (style and noise)")
        k = self._check_position(layer, state)
        conv = self._styled_conv(layer)
        s = self._style(k, state)
        out = conv.conv.value(key, s, self._weight(k, state) if weight is None else weight)
        noise = state.extras["noise"][k - 2]
        if noise is not None:
            h, w = out.shape[-2:]
            if offset is None:
                if noise.shape[-2:] != (h, w):
                    raise ValueError(f"key gives a {h}x{w} output but {layer}'s noise is "
                                     f"{noise.shape[-2]}x{noise.shape[-1]}: pass offset=(top, left)")
                offset = (0, 0)
            noise = noise[..., offset[0]:offset[0] + h, offset[1]:offset[1] + w]
        return conv.activate(conv.noise(out, noise))


# --------------------------------------------------------------------------------- checkpoints
def _count(sd, pattern: str) -> int:
    nums = [int(m.group(1)) for key in sd if (m := re.fullmatch(pattern, key))]
    return max(nums, default=-1) + 1


def config_from_state_dict(sd: Mapping) -> dict:
    """Constructor kwargs (size, style_dim, n_mlp, channels, blur_kernel) read off the weights."""
    for need in ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgbs.0.upsample.kernel"):
        if need not in sd:
            raise ValueError(f"not a rosinality StyleGAN2 generator state dict: no {need!r}")
    n_mlp = _count(sd, r"style\.(\d+)\.weight") - 1
    n_rgbs = _count(sd, r"to_rgbs\.(\d+)\.conv\.weight")
    size = 2 ** (n_rgbs + 2)
    channels = {4: int(sd["input.input"].shape[1])}
    for j in range(n_rgbs):
        key = f"convs.{2 * j}.conv.weight"
        if key not in sd:
            raise ValueError(f"state dict has {n_rgbs} to_rgbs but no {key!r}")
        channels[2 ** (j + 3)] = int(sd[key].shape[1])
    row = sd["to_rgbs.0.upsample.kernel"][0].tolist()
    blur = [v / row[0] for v in row]
    blur = [int(round(v)) if abs(v - round(v)) < 1e-6 else v for v in blur]
    return {"size": size, "style_dim": int(sd["style.1.weight"].shape[1]), "n_mlp": n_mlp,
            "channels": channels, "blur_kernel": blur}


def load_checked(g: StyleGAN2Generator, sd: Mapping) -> StyleGAN2Generator:
    """``load_state_dict(strict=True)`` with a ValueError that names missing/extra keys."""
    expected, given = set(g.state_dict().keys()), set(sd.keys())
    missing, extra = sorted(expected - given), sorted(given - expected)
    if missing or extra:
        def show(keys):
            return ", ".join(keys[:12]) + (f" ... ({len(keys)} in all)" if len(keys) > 12 else "")
        raise ValueError(f"StyleGAN2 state dict does not fit size {g.size}: "
                         f"missing keys [{show(missing)}]; unexpected keys [{show(extra)}]")
    try:
        g.load_state_dict(dict(sd), strict=True)
    except RuntimeError as e:          # shape mismatches
        raise ValueError(f"StyleGAN2 state dict does not fit: {e}") from None
    return g


def from_checkpoint(ckpt: Mapping, latent_avg=None, lr_mlp: float = 0.01) -> StyleGAN2Generator:
    """Build and load a generator from ``{'g_ema': state_dict, 'latent_avg': [style_dim]}`` (as
    written by rosinality's convert_weight.py) or from a flat state dict holding ``latent_avg``.

    Size, style_dim, n_mlp, channels and blur kernel come from the weights; ``lr_mlp`` cannot and
    is 0.01 unless given. ``latent_avg`` overrides the stored one; ``"estimate"`` computes it from
    4096 seeded z when the checkpoint has none (rosinality training checkpoints)."""
    if "g_ema" in ckpt:
        sd = dict(ckpt["g_ema"])
        stored = ckpt.get("latent_avg", sd.pop("latent_avg", None))
        sd.pop("latent_avg", None)
    else:
        sd = dict(ckpt)
        stored = sd.pop("latent_avg", None)
    avg = stored if latent_avg is None else latent_avg
    if avg is None:
        raise ValueError("checkpoint has no latent_avg (needed for truncation): pass "
                         "latent_avg=<tensor> or latent_avg='estimate'")
    estimate = isinstance(avg, str)
    if estimate and avg != "estimate":
        raise ValueError(f"latent_avg must be a tensor or 'estimate', got {avg!r}")
    config = config_from_state_dict(sd)
    sd["latent_avg"] = (torch.zeros(config["style_dim"]) if estimate
                        else torch.as_tensor(avg).reshape(-1))
    g = StyleGAN2Generator(**config, lr_mlp=lr_mlp)
    load_checked(g, sd)
    if estimate:
        g.latent_avg.copy_(g.mean_latent())
    return g.eval()


_CHECKPOINT_KEYS = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.bias")


def detect_checkpoint(obj) -> bool:
    """rosinality's ``{'g_ema': ..., 'latent_avg': ...}`` or a bare generator state dict."""
    return "g_ema" in obj or any(k in _CHECKPOINT_KEYS for k in obj if isinstance(k, str))


def empty_from_checkpoint(obj) -> tuple[StyleGAN2Generator, dict]:
    if "g_ema" in obj:
        g_ema = obj["g_ema"]
        if not isinstance(g_ema, dict):
            raise ValueError(f"'g_ema' is a {type(g_ema).__name__}, expected a state dict")
        latent_avg = obj.get("latent_avg", g_ema.get("latent_avg"))
    else:  # a bare generator state dict, as this project saves it (rosinality keys + latent_avg)
        g_ema, latent_avg = obj, obj.get("latent_avg")
    g_ema = {k: v for k, v in g_ema.items() if k != "latent_avg"}
    if latent_avg is None:
        raise ValueError("StyleGAN2 checkpoint has no 'latent_avg' (the mean w, needed for "
                         "truncation); expected {'g_ema': ..., 'latent_avg': ...} as written by "
                         "rosinality's convert_weight.py / train.py")
    if not isinstance(latent_avg, torch.Tensor):
        raise ValueError(f"'latent_avg' is a {type(latent_avg).__name__}, expected a tensor")
    bad = [str(k) for k, v in g_ema.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"StyleGAN2 state dict has entries that are not tensors: {', '.join(bad[:5])}")
    try:
        g = StyleGAN2Generator(**config_from_state_dict(g_ema))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"not a usable StyleGAN2 checkpoint: {first}") from None
    if latent_avg.numel() == g.style_dim:
        latent_avg = latent_avg.reshape(-1)
    return g, {**g_ema, "latent_avg": latent_avg}


FAMILY = Family("stylegan2", "StyleGAN2 (rosinality layout)", StyleGAN2Generator,
                detect_checkpoint, empty_from_checkpoint)
