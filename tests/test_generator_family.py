"""A new generator family needs a Generator subclass and one registry entry, nothing else: a tiny
test family ("toyconv") is registered here and goes through bundles, legacy checkpoints, unit
edits and rewriting (closed form, since its value is linear in the weight)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import core
from core import rewrite as rw
from core.edits import EditStack, Renderer, UnitEdit
from core.generators import FAMILIES, Family, Generator, LayerState, detect_family, register_family


class ToyConvGenerator(Generator):
    """z -> 4x4 map -> conv, 2x upsample + conv -> 1x1 RGB conv. Each layer: value = conv(key, W)
    (pre-activation), features = tanh(value)."""

    family = "toyconv"
    value_linear_in_weight = True

    def __init__(self, z_dim: int = 8, channels: int = 6):
        super().__init__()
        self.z_dim, self.channels, self.resolution = z_dim, channels, 8
        self.inp = nn.Linear(z_dim, channels * 16)
        self.convs = nn.ParameterDict({f"layer{i}": nn.Parameter(torch.randn(channels, channels, 3, 3) * 0.3)
                                       for i in (1, 2)})
        self.rgb = nn.Conv2d(channels, 3, 1)
        self.layers = ["layer1", "layer2"]

    def config(self):
        return {"z_dim": self.z_dim, "channels": self.channels}

    def layer_resolution(self, layer):
        return 4 * 2 ** self.layer_index(layer)

    def main_weight(self, layer):
        return self.convs[self.check_layer(layer)]

    def conv_padding(self, layer):
        return 1

    def start(self, z, truncation=1.0, noise="buffers", weight_deltas=None):
        z = torch.as_tensor(z, dtype=torch.float32)
        return LayerState(self.inp(z).reshape(-1, self.channels, 4, 4), (), weight_deltas)

    def rewrite_key(self, layer, state):
        return F.interpolate(state.x, scale_factor=2) if layer == "layer2" else state.x

    def layer_value(self, layer, key, weight=None, state=None, offset=None):
        w = self.main_weight(layer) if weight is None else weight
        return F.conv2d(key, w, padding=1)

    def value_to_features(self, layer, value):
        return torch.tanh(value)

    def step(self, name, state, keys=None):
        key = self.rewrite_key(name, state)
        if keys is not None and name in keys:
            keys[name] = key
        delta = self._delta(state, name)
        w = self.main_weight(name) if delta is None else self.main_weight(name) + delta
        x = self.value_to_features(name, self.layer_value(name, key, w))
        return LayerState(x, state.done + (name,), state.weight_deltas, state.extras)

    def finish(self, state):
        return self.rgb(state.x)


def _detect(obj):
    return "toyconv_marker" in obj


def _from_checkpoint(obj):
    sd = {k: v for k, v in obj.items() if k != "toyconv_marker"}
    return ToyConvGenerator(channels=int(sd["inp.weight"].shape[0]) // 16), sd


@pytest.fixture(scope="module")
def toy_family():
    register_family(Family("toyconv", "Toy conv net (test family)", ToyConvGenerator, _detect, _from_checkpoint))
    yield FAMILIES["toyconv"]
    del FAMILIES["toyconv"]


def _toy():
    torch.manual_seed(0)
    return ToyConvGenerator().eval().requires_grad_(False)


def test_bundle_roundtrip_and_legacy_checkpoint(toy_family, tmp_path):
    g = _toy()
    dest = core.save_bundle(g, tmp_path / "toy", name="toy")
    model = core.load_model(dest)
    assert model.bundle.config["architecture"] == "toyconv"
    assert "Toy conv net (test family)" in (dest / "README.md").read_text()
    assert torch.equal(model.render([0, 1]), g(g.sample_z([0, 1])))
    # a legacy checkpoint of the family is detected and converted through the same entry
    ckpt = {**g.state_dict(), "toyconv_marker": torch.zeros(1)}
    assert detect_family(ckpt) == "toyconv"
    torch.save(ckpt, tmp_path / "toy.pt")
    assert torch.equal(core.load_model(tmp_path / "toy.pt").render([3]), g(g.sample_z([3])))


def test_unit_edit_and_closed_form_rewrite(toy_family):
    g = _toy()
    renderer = Renderer(g)
    before = renderer.render_numbers([0])
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    after = renderer.render_numbers([0], EditStack((UnitEdit("layer2", (0, 1), (1.0, 1.0), mask=mask),)))
    assert float((after - before).abs().max()) > 1e-3
    # rewriting takes the closed form (the family says its value is linear in the weight)
    st = rw.collect_key_stats(g, "layer2", range(8))
    D = rw.context_direction(g, "layer2", [(0, mask)], st, rank=1)
    key = rw.layer_keys(g, "layer2", [5])[0]
    target = g.layer_value("layer2", key, g.main_weight("layer2") + rw.low_rank_delta(torch.randn(6, 1, 3, 3), D))[0]
    info = {}
    edit = rw.rewrite(g, "layer2", D, 5, target, mask, st, info=info)
    assert info["method"] == "closed_form"
    assert rw.region_loss(g, "layer2", 5, target, mask, edit) < 1e-6 * info["loss_before"]
    # the value pasted back through the family's own activation is the unedited image
    value = rw.layer_values(g, "layer2", [5])[0]
    assert torch.allclose(rw.render_with_value(g, "layer2", 5, value), g(g.sample_z([5]))[0], atol=1e-5)
