"""Progressive GAN generator in the gandissect layout (Karras et al. 2018; Bau et al. 2019).

State-dict keys: ``layer{i}.conv.weight``, ``layer{i}.wscale.b`` (i = 1..L) and
``output_{R}x{R}.conv.weight``, ``output_{R}x{R}.wscale.b``. Each block is
PixelNorm -> [nearest 2x upsample on odd layers >= 3] -> conv (no bias) -> x*s + b -> LeakyReLU(0.2)
with the equalised-learning-rate scale ``s = sqrt(2)/k/sqrt(C_in)`` computed at run time (not stored).
The output block is PixelNorm -> 1x1 conv -> x/sqrt(C_in) + b, optionally clamped to [-1, 1].
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .base import Family, Generator, LayerState


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class WScale(nn.Module):
    """Holds the per-channel bias ``b``; the scale is a runtime constant."""

    def __init__(self, channels: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(channels))


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int, upsample: bool,
                 gain: float = math.sqrt(2), activate: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)
        nn.init.normal_(self.conv.weight)
        self.wscale = WScale(c_out)
        self.upsample, self.padding, self.activate = upsample, padding, activate
        self.scale = gain / kernel / math.sqrt(c_in)

    def key(self, x: torch.Tensor) -> torch.Tensor:
        """The conv's input: what a rewrite treats as the memory's key."""
        x = pixel_norm(x)
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def value(self, key: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        """The conv's raw (linear) output for a key, before scale, bias and activation."""
        w = self.conv.weight if delta is None else self.conv.weight + delta
        return F.conv2d(key, w, padding=self.padding)

    def activation(self, value: torch.Tensor) -> torch.Tensor:
        x = value * self.scale + self.wscale.b.view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) if self.activate else x

    def forward(self, x, delta=None):
        return self.activation(self.value(self.key(x), delta))


def _layer_count(state_dict) -> int:
    nums = [int(m.group(1)) for k in state_dict if (m := re.fullmatch(r"layer(\d+)\.conv\.weight", k))]
    return max(nums, default=0)


def sizes_from_state_dict(state_dict) -> list[int]:
    """[z_dim, channels at 4x4, 8x8, ...] read off the conv weights."""
    n = _layer_count(state_dict)
    if n < 2 or n % 2:
        raise ValueError(f"a ProGAN state dict needs an even number of layers >= 2, found {n}")
    first = state_dict["layer1.conv.weight"]
    return [first.shape[1]] + [state_dict[f"layer{i}.conv.weight"].shape[0] for i in range(1, n, 2)]


class ProGANGenerator(Generator):
    family = "progan"
    value_linear_in_weight = True       # a plain conv: value = conv(key, W)
    can_fold_constant_units = True      # a constant unit is a zero conv row plus a bias

    def __init__(self, sizes: list[int], output_clamp: bool = False):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError("sizes must list z_dim and at least the 4x4 channel count")
        self.sizes = [int(s) for s in sizes]
        self.z_dim = self.sizes[0]
        self.output_clamp = bool(output_clamp)
        n_layers = 2 * (len(sizes) - 1)
        self.resolution = 4 * 2 ** (len(sizes) - 2)
        if not 4 <= self.resolution <= 1024:
            raise ValueError(f"resolution {self.resolution} is outside 4..1024")
        self.blocks = nn.ModuleDict()
        c_in = self.z_dim
        for i in range(1, n_layers + 1):
            c_out = self.sizes[(i + 1) // 2]
            if i == 1:
                block = ConvBlock(c_in, c_out, 4, 3, upsample=False)
            else:
                block = ConvBlock(c_in, c_out, 3, 1, upsample=(i % 2 == 1))
            self.blocks[f"layer{i}"] = block
            c_in = c_out
        self.output_name = f"output_{self.resolution}x{self.resolution}"
        self.output = ConvBlock(c_in, 3, 1, 0, upsample=False, gain=1.0, activate=False)
        self.layers = list(self.blocks.keys())

    # Keys stay exactly the gandissect names (no "blocks." prefix).
    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        out = type(sd)()
        for k, v in sd.items():
            if k.startswith("blocks."):
                k = k[len("blocks."):]
            elif k.startswith("output."):
                k = self.output_name + k[len("output"):]
            out[k] = v
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        renamed = {}
        for k, v in state_dict.items():
            if k.startswith(self.output_name + "."):
                renamed["output" + k[len(self.output_name):]] = v
            else:
                renamed["blocks." + k] = v
        return super().load_state_dict(renamed, strict=strict, assign=assign)

    def config(self) -> dict:
        return {"sizes": self.sizes, "output_clamp": self.output_clamp}

    # ----------------------------------------------------------------- interface
    def layer_resolution(self, layer: str) -> int:
        return 4 * 2 ** ((self.layer_index(layer)) // 2)

    def main_weight(self, layer: str) -> torch.Tensor:
        return self.blocks[self.check_layer(layer)].conv.weight

    def start(self, z, truncation: float = 1.0, noise="buffers", weight_deltas=None) -> LayerState:
        # ProGAN has no truncation trick or noise inputs; the arguments exist for the shared API.
        z = torch.as_tensor(z, dtype=torch.float32)
        return LayerState(z.reshape(z.shape[0], self.z_dim, 1, 1), (), weight_deltas)

    def step(self, name: str, state: LayerState, keys: dict | None = None) -> LayerState:
        block = self.blocks[name]
        k = block.key(state.x)
        if keys is not None and name in keys:
            keys[name] = k
        x = block.activation(block.value(k, self._delta(state, name)))
        return LayerState(x, state.done + (name,), state.weight_deltas, state.extras)

    def rewrite_key(self, layer: str, state: LayerState) -> torch.Tensor:
        """Key at ``layer`` given the state *before* it."""
        return self.blocks[self.check_layer(layer)].key(state.x)

    def layer_value(self, layer: str, key: torch.Tensor, weight: torch.Tensor | None = None,
                    state: LayerState | None = None, offset: tuple[int, int] | None = None):
        """Pre-activation value of ``layer`` for a key (optionally with a replacement weight); a
        ProGAN layer needs no state or offset."""
        block = self.blocks[self.check_layer(layer)]
        w = block.conv.weight if weight is None else weight
        return F.conv2d(key, w, padding=block.padding)

    def conv_padding(self, layer: str) -> int:
        return self.blocks[self.check_layer(layer)].padding

    def value_to_features(self, layer: str, value: torch.Tensor) -> torch.Tensor:
        return self.blocks[self.check_layer(layer)].activation(value)

    def finish(self, state: LayerState) -> torch.Tensor:
        x = self.output(state.x)
        return x.clamp(-1, 1) if self.output_clamp else x

    def unclamped_output(self, state: LayerState) -> torch.Tensor:
        return self.output(state.x)

    @torch.no_grad()
    def fold_constant_units(self, layer: str, units, values) -> None:
        block = self.blocks[self.check_layer(layer)]
        for u, v in zip(units, values):
            block.conv.weight[u] = 0
            block.wscale.b[u] = v if v >= 0 else v / 0.2   # leaky_relu(b) == v

    # ----------------------------------------------------------------- local re-rendering
    @torch.no_grad()
    def trace_after(self, state: LayerState) -> dict:
        """Outputs of every remaining layer (and ``"image"``) from ``state``: the cache that
        :meth:`rerun_region` patches."""
        outs = {}
        for name in self.layers[len(state.done):]:
            state = self.step(name, state)
            outs[name] = state.x
        outs["image"] = self.finish(state)
        return outs

    @torch.no_grad()
    def rerun_region(self, trace: dict, layer: str, x: torch.Tensor, box, weight_deltas=None) -> torch.Tensor:
        """The image after replacing ``layer``'s output by ``x``, which differs from
        ``trace[layer]`` only inside ``box = (r0, r1, c0, c1)`` (feature-grid cells).

        Every block is per-pixel except its conv, so a change spreads by the kernel radius per
        conv and doubles with each upsampling: only that growing window is recomputed and pasted
        into the cached outputs of the unedited image. Equal to a full run up to float rounding
        (about 1e-5: convolutions over a crop may sum in another order)."""
        r0, r1, c0, c1 = box
        prev = x
        for name in self.layers[self.layer_index(layer) + 1:]:
            block = self.blocks[name]
            delta = None if not weight_deltas else weight_deltas.get(name)
            up, pad = (2 if block.upsample else 1), block.padding
            size = prev.shape[-1] * up
            r0, r1, c0, c1 = (max(r0 * up - pad, 0), min(r1 * up + pad, size),
                              max(c0 * up - pad, 0), min(c1 * up + pad, size))
            crop = self._input_window(prev, up, pad, (r0, r1, c0, c1), size)
            out = trace[name].clone()
            out[:, :, r0:r1, c0:c1] = block.activation(F.conv2d(
                crop, block.conv.weight if delta is None else block.conv.weight + delta))
            prev = out
        image = trace["image"].clone()
        patch = self.output.activation(self.output.value(self.output.key(prev[:, :, r0:r1, c0:c1])))
        image[:, :, r0:r1, c0:c1] = patch.clamp(-1, 1) if self.output_clamp else patch
        return image

    @staticmethod
    def _input_window(prev, up, pad, box, size):
        """PixelNorm + upsampling of the part of ``prev`` a conv needs to produce ``box``,
        zero-padded where the window leaves the image (as the conv's own padding would)."""
        r0, r1, c0, c1 = box
        i0, i1, j0, j1 = r0 - pad, r1 + pad, c0 - pad, c1 + pad
        a0, a1, b0, b1 = max(i0, 0), min(i1, size), max(j0, 0), min(j1, size)
        src = pixel_norm(prev[:, :, a0 // up:-(-a1 // up), b0 // up:-(-b1 // up)])
        if up > 1:
            src = F.interpolate(src, scale_factor=up, mode="nearest")
        src = src[:, :, a0 - (a0 // up) * up:, b0 - (b0 // up) * up:][:, :, :a1 - a0, :b1 - b0]
        return F.pad(src, (b0 - j0, j1 - b1, a0 - i0, i1 - a1))


def normalize_state_dict(state_dict) -> dict:
    """Accept a plain dict, ``{'state_dict': ...}``, and old ``features.N`` / ``output`` names."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not any(k.startswith("features.") for k in state_dict):
        return dict(state_dict)
    n = 0
    out = {}
    for k, v in state_dict.items():
        m = re.fullmatch(r"features\.(\d+)\.(.*)", k)
        if m:
            out[f"layer{int(m.group(1)) + 1}.{m.group(2)}"] = v
            n = max(n, int(m.group(1)) + 1)
    res = 4 * 2 ** (n // 2 - 1)
    for k, v in state_dict.items():
        if k.startswith("output."):
            out[f"output_{res}x{res}." + k[len("output."):]] = v
        elif not k.startswith("features."):
            out[k] = v
    return out


_CHECKPOINT_KEY = re.compile(r"(layer\d+|features\.\d+)\.conv\.weight")


def detect_checkpoint(obj) -> bool:
    """A gandissect state dict, plain or ``{'state_dict': ...}``, new or old key names."""
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    return any(isinstance(k, str) and _CHECKPOINT_KEY.fullmatch(k) for k in sd)


def empty_from_checkpoint(obj) -> tuple[ProGANGenerator, dict]:
    sd = normalize_state_dict(obj)
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"ProGAN state dict has entries that are not tensors: {', '.join(bad[:5])}")
    try:
        return ProGANGenerator(sizes_from_state_dict(sd)), sd
    except KeyError as e:
        raise ValueError(f"weights do not match the progan architecture: missing keys {e.args[0]}") from None
    except (ValueError, IndexError, AttributeError) as e:
        raise ValueError(f"not a usable ProGAN checkpoint: {e}") from None


FAMILY = Family("progan", "Progressive GAN (gandissect layout)", ProGANGenerator,
                detect_checkpoint, empty_from_checkpoint)


def from_state_dict(state_dict, output_clamp: bool = False) -> ProGANGenerator:
    sd = normalize_state_dict(state_dict)
    g = ProGANGenerator(sizes_from_state_dict(sd), output_clamp=output_clamp)
    g.load_state_dict(sd, strict=True)
    return g.eval()
