"""StyleGAN2 generator: agreement with rosinality/stylegan2-pytorch and the layer interface.

Reference fixtures in tests/data were produced by running the original code
(see tools/make_reference_fixtures.md)."""
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.generators import LayerError, build  # noqa: E402
from core.generators.stylegan2 import (StyleGAN2Generator, channel_table,  # noqa: E402
                                       config_from_state_dict, from_checkpoint)

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return load_file(DATA / "stylegan2_s32.safetensors")


def _ckpt(ref):
    return {"g_ema": {k[len("g_ema."):]: v for k, v in ref.items() if k.startswith("g_ema.")},
            "latent_avg": ref["latent_avg"]}


@pytest.fixture(scope="module")
def g(ref):
    return from_checkpoint(_ckpt(ref))


def _maxdiff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ------------------------------------------------------------------ reference agreement
def test_config_read_from_weights(g):
    assert g.config() == {"size": 32, "style_dim": 64, "n_mlp": 2,
                          "channels": {"4": 32, "8": 24, "16": 16, "32": 8},
                          "lr_mlp": 0.01, "blur_kernel": [1, 3, 3, 1]}
    assert g.layers == [f"layer{k}" for k in range(1, 9)]
    assert g.z_dim == 64 and g.resolution == 32


def test_state_dict_keys_are_rosinality_plus_latent_avg(ref, g):
    theirs = _ckpt(ref)["g_ema"]
    ours = g.state_dict()
    assert set(ours) == set(theirs) | {"latent_avg"}
    assert all(ours[k].shape == v.shape for k, v in theirs.items())


def test_matches_rosinality_every_layer(ref, g):
    """psi 0.7 with the stored latent_avg, noise = stored buffers."""
    z = ref["z"]
    with torch.no_grad():
        assert _maxdiff(g.mapping(z), ref["a.w"]) < TOL
        keys = dict.fromkeys(g.layers)
        state = g.start(z, truncation=0.7, noise="buffers")
        for name in g.layers:
            state = g.step(name, state, keys=keys)
            assert _maxdiff(state.x, ref[f"a.{name}"]) < TOL, name
            if name != "layer1":
                assert _maxdiff(keys[name], ref[f"a.key.{name}"]) < TOL, name
        assert _maxdiff(g.finish(state), ref["a.image"]) < TOL


def test_matches_rosinality_zero_noise_no_truncation(ref, g):
    image = g.generate(ref["z"], truncation=1.0, noise="zero")
    assert _maxdiff(image, ref["b.image"]) < TOL
    assert (image - g.generate(ref["z"], truncation=1.0)).abs().max() > 1e-3   # noise matters


def test_full_256_layout_builds_and_runs():
    layout = json.loads((DATA / "stylegan2_256_cm2_keys.json").read_text())["keys"]
    assert len(layout) == 135
    g = StyleGAN2Generator(256, 512, 8, channels=channel_table(256, 2))
    sd = g.state_dict()
    assert sd["latent_avg"].shape == (512,) and len(sd) == 136
    assert [[k, list(v.shape)] for k, v in sd.items() if k != "latent_avg"] == layout  # same order
    loaded = from_checkpoint({"g_ema": {k: v for k, v in sd.items() if k != "latent_avg"},
                              "latent_avg": torch.randn(512)})
    assert loaded.config()["channels"] == {str(r): c for r, c in channel_table(256).items()}
    assert len(loaded.layers) == 14
    image = loaded.generate(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)),
                            truncation=0.5)
    assert image.shape == (1, 3, 256, 256) and torch.isfinite(image).all()


# ------------------------------------------------------------------ construction and loading
@pytest.mark.parametrize("size,channels", [(8, {4: 16, 8: 8}),
                                           (64, {4: 8, 8: 16, 16: 12, 32: 8, 64: 4})])
def test_from_checkpoint_any_size_and_table(size, channels):
    torch.manual_seed(0)
    g = StyleGAN2Generator(size, 16, 3, channels=channels)
    sd = g.state_dict()
    cfg = config_from_state_dict(sd)
    assert cfg == {"size": size, "style_dim": 16, "n_mlp": 3, "channels": channels,
                   "blur_kernel": [1, 3, 3, 1]}
    g2 = from_checkpoint(sd)                       # flat state dict carrying latent_avg
    z = torch.randn(2, 16)
    assert torch.equal(g.generate(z, 0.7), g2.generate(z, 0.7))


def test_config_is_json_and_rebuilds(g):
    cfg = json.loads(json.dumps(g.config()))
    g2 = build("stylegan2", cfg)
    g2.load_state_dict(g.state_dict(), strict=True)
    pairs = [[int(r), c] for r, c in cfg["channels"].items()]
    assert StyleGAN2Generator(**{**cfg, "channels": pairs}).config() == g.config()
    with pytest.raises(ValueError, match="lacks resolutions"):
        StyleGAN2Generator(32, 64, 2, channels={4: 8, 8: 8})
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(48, 64, 2)


def test_from_checkpoint_errors(ref):
    ckpt = _ckpt(ref)
    missing = dict(ckpt["g_ema"])
    del missing["convs.3.noise.weight"]
    with pytest.raises(ValueError, match=r"missing keys \[convs\.3\.noise\.weight\]"):
        from_checkpoint({"g_ema": missing, "latent_avg": ckpt["latent_avg"]})
    extra = {**ckpt["g_ema"], "convs.3.bogus": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected keys \[convs\.3\.bogus\]"):
        from_checkpoint({"g_ema": extra, "latent_avg": ckpt["latent_avg"]})
    bad = {**ckpt["g_ema"], "conv1.activate.bias": torch.zeros(5)}
    with pytest.raises(ValueError, match="conv1.activate.bias"):
        from_checkpoint({"g_ema": bad, "latent_avg": ckpt["latent_avg"]})
    with pytest.raises(ValueError, match="latent_avg"):
        from_checkpoint({"g_ema": ckpt["g_ema"]})
    with pytest.raises(ValueError, match="not a rosinality StyleGAN2"):
        from_checkpoint({"g_ema": {"layer1.conv.weight": torch.zeros(1)}, "latent_avg": torch.zeros(4)})
    est = from_checkpoint({"g_ema": ckpt["g_ema"]}, latent_avg="estimate")
    assert est.latent_avg.shape == (64,) and est.latent_avg.abs().sum() > 0


# ------------------------------------------------------------------ noise
def test_noise_seeds_are_batch_position_independent(g):
    z = torch.randn(3, 64, generator=torch.Generator().manual_seed(5))
    batch = g.generate(z, noise=[11, 12, 13])
    for n, seed in enumerate([11, 12, 13]):
        alone = g.generate(z[n:n + 1], noise=[seed])
        assert _maxdiff(batch[n:n + 1], alone) < 1e-5
    shared = g.generate(z, noise=7)
    for n in range(3):                      # one int seed: the same noise for every image
        assert _maxdiff(shared[n:n + 1], g.generate(z[n:n + 1], noise=7)) < 1e-5
    assert torch.equal(shared, g.generate(z, noise=7))                 # deterministic
    assert (shared - g.generate(z, noise=8)).abs().max() > 1e-3
    with pytest.raises(ValueError):
        g.generate(z, noise=[1, 2])
    with pytest.raises(ValueError):
        g.generate(z, noise="random")


# ------------------------------------------------------------------ layer interface
def test_resume_from_cloned_mid_state_equals_full_run(ref, g):
    z = ref["z"]
    full = g.generate(z, truncation=0.7, noise=3)
    with torch.no_grad():
        mid = g.run(g.start(z, truncation=0.7, noise=3), stop="layer5")
        for _ in range(2):                  # the cached state is not changed by resuming
            assert torch.equal(g.finish(g.run(mid.clone())), full)

        def edit(name, x):
            return x * 0 if name == "layer6" else x
        edited_full = g.generate(z, truncation=0.7, noise=3, edit=edit)
        resumed = g.finish(g.run(mid.clone(), edit=edit))
    assert torch.equal(resumed, edited_full)
    assert (edited_full - full).abs().max() > 1e-3
    with pytest.raises(LayerError):
        g.run(mid.clone(), stop="layer3")


def test_edit_of_last_layer_reaches_rgb(g):
    """The ToRGB after a layer sees that layer's edited features."""
    z = torch.randn(1, 64, generator=torch.Generator().manual_seed(1))
    plain = g.generate(z)
    edited = g.generate(z, edit=lambda name, x: x * 0 if name == "layer8" else x)
    assert (edited - plain).abs().max() > 1e-3


def test_weight_deltas(ref, g):
    z = ref["z"]

    def layer_outputs(deltas):
        with torch.no_grad():
            state = g.start(z, 0.7, noise="buffers", weight_deltas=deltas)
            outs = []
            for name in g.layers:
                state = g.step(name, state)
                outs.append(state.x)
            return outs, g.finish(state)

    base, image = layer_outputs(None)
    zero, image0 = layer_outputs({"layer5": torch.zeros_like(g.main_weight("layer5"))})
    assert all(torch.equal(a, b) for a, b in zip(base, zero)) and torch.equal(image, image0)
    delta = 0.5 * torch.randn(g.main_weight("layer5").shape, generator=torch.Generator().manual_seed(2))
    changed, image1 = layer_outputs({"layer5": delta})
    for k, (a, b) in enumerate(zip(base, changed), start=1):
        if k < 5:
            assert torch.equal(a, b), k
        else:
            assert (a - b).abs().max() > 1e-4, k
    assert (image - image1).abs().max() > 1e-4
    with pytest.raises(ValueError, match="shape"):
        g.start(z, weight_deltas={"layer5": torch.zeros(3)})
    with pytest.raises(LayerError):
        g.start(z, weight_deltas={"layer1": torch.zeros(3)})


def test_keys_values_and_weights(ref, g):
    z = ref["z"]
    assert g.main_weight("layer2") is g.conv1.conv.weight
    assert g.main_weight("layer7") is g.convs[4].conv.weight
    with pytest.raises(LayerError):
        g.main_weight("layer1")
    with pytest.raises(LayerError):
        g.main_weight("layer99")
    assert [g.layer_channels(n) for n in g.layers] == [32, 32, 24, 24, 16, 16, 8, 8]
    assert [g.layer_resolution(n) for n in g.layers] == [4, 4, 8, 8, 16, 16, 32, 32]
    with torch.no_grad():
        state = g.start(z, 0.7, noise="buffers")
        keys = dict.fromkeys(g.layers)
        for name in g.layers:
            if name != "layer1":
                c_in = g.main_weight(name).shape[2]
                side = g.layer_resolution(name) // (2 if name in ("layer3", "layer5", "layer7") else 1)
                key = g.rewrite_key(name, state)
                assert key.shape == (2, c_in, side, side), name
                value = g.layer_value(name, key, state=state)
            nxt = g.step(name, state, keys=keys)
            if name != "layer1":
                assert torch.equal(keys[name], key)
                assert _maxdiff(value, nxt.x) < 1e-6
            state = nxt
        assert keys["layer1"] is None

        # a replacement weight in layer_value == running with the matching weight delta
        before = g.run(g.start(z, 0.7), stop="layer6")
        w = g.main_weight("layer7")
        delta = 0.3 * torch.randn(w.shape, generator=torch.Generator().manual_seed(4))
        key = g.rewrite_key("layer7", before)
        via_value = g.layer_value("layer7", key, w + delta, state=before)
        via_step = g.step("layer7", g.run(g.start(z, 0.7, weight_deltas={"layer7": delta}),
                                          stop="layer6")).x
        assert _maxdiff(via_value, via_step) < 1e-5

        # cropped keys need the noise offset
        crop = key[:, :, 4:10, 2:8]
        with pytest.raises(ValueError, match="offset"):
            g.layer_value("layer7", crop, state=before)
        part = g.layer_value("layer7", crop, state=before, offset=(8, 4))
        assert part.shape == (2, 8, 12, 12)
        full = g.layer_value("layer7", key, state=before)
        assert _maxdiff(part[..., 2:-2, 2:-2], full[..., 10:18, 6:14]) < 1e-5   # away from the crop border
    with pytest.raises(ValueError, match="state"):
        g.layer_value("layer7", key)
    with pytest.raises(LayerError):
        g.rewrite_key("layer5", before)          # state is after layer6, not before layer5


def test_layer_value_is_differentiable_in_the_weight(ref, g):
    before = g.run(g.start(ref["z"], 0.7), stop="layer3")
    key = g.rewrite_key("layer4", before).detach()
    weight = g.main_weight("layer4").detach().clone().requires_grad_(True)
    g.layer_value("layer4", key, weight, state=before).abs().mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_layer_and_finish_order_errors(g):
    state = g.start(torch.zeros(1, 64))
    with pytest.raises(LayerError):
        g.step("layer3", state)
    with pytest.raises(LayerError):
        g.finish(g.run(state, stop="layer4"))
    with pytest.raises(ValueError, match="latent"):
        g.start_from_latent(torch.zeros(1, 3, 64))


def test_w_plus_start(ref, g):
    w = g.mapping(ref["z"]).detach()
    a = g.finish(g.run(g.start_from_latent(w)))
    b = g.finish(g.run(g.start_from_latent(w[:, None].expand(-1, g.n_latent, -1))))
    assert torch.equal(a, b) and torch.equal(a, g.generate(ref["z"]))
