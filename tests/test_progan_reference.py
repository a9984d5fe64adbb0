"""ProGAN generator vs CSAILVision/gandissect ``netdissect/proggan.py`` (fixtures in tests/data,
made by running the original code; see tools/make_reference_fixtures.md)."""
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.generators.progan import ProGANGenerator, from_state_dict  # noqa: E402

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data"
TOL = 1e-4


def _load(name, prefix):
    t = load_file(DATA / name)
    return t, {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}


def _check_layers(g, ref):
    with torch.no_grad():
        state = g.start(ref["z"])
        for name in g.layers:
            state = g.step(name, state)       # output after LeakyReLU
            assert (state.x - ref[f"value.{name}"]).abs().max().item() < TOL, name
        return g.finish(state)


def test_16px_every_layer_and_output():
    ref, sd = _load("progan_16px.safetensors", "sd.")
    g = from_state_dict(sd)
    assert isinstance(g, ProGANGenerator)
    assert g.sizes == [64, 64, 32, 16] and g.resolution == 16
    assert g.layers == [f"layer{i}" for i in range(1, 7)]
    assert set(g.state_dict()) == set(sd)
    out = _check_layers(g, ref)
    assert (out - ref["output"]).abs().max().item() < TOL
    assert (g.generate(ref["z"]) - ref["output"]).abs().max().item() < TOL
    assert (g.features(ref["z"], "layer4") - ref["value.layer4"]).abs().max().item() < TOL


def test_output_clamp_matches_output_tanh():
    ref, sd = _load("progan_16px.safetensors", "sd.")
    assert (ref["output"].abs() > 1).any()            # the clamp matters for these weights
    g = from_state_dict(sd, output_clamp=True)
    assert g.config() == {"sizes": [64, 64, 32, 16], "output_clamp": True}
    assert (g.generate(ref["z"]) - ref["output_clamped"]).abs().max().item() < TOL


@pytest.mark.parametrize("wrap", [False, True])
def test_8px_old_feature_names(wrap):
    ref, old = _load("progan_8px_old_names.safetensors", "old.")
    assert any(k.startswith("features.") for k in old) and "output.conv.weight" in old
    g = from_state_dict({"state_dict": old} if wrap else old)
    assert g.sizes == [32, 32, 16] and g.resolution == 8
    assert "output_8x8.conv.weight" in g.state_dict()
    out = _check_layers(g, ref)
    assert (out - ref["output"]).abs().max().item() < TOL


def test_z_as_4d_and_keys():
    ref, sd = _load("progan_16px.safetensors", "sd.")
    g = from_state_dict(sd)
    z4 = ref["z"].view(3, 64, 1, 1)
    assert (g.generate(z4) - ref["output"]).abs().max().item() < TOL
    before = g.run(g.start(ref["z"]), stop="layer2")
    key = g.rewrite_key("layer3", before)            # PixelNorm + nearest 2x, at 8x8
    assert key.shape == (3, 64, 8, 8)
