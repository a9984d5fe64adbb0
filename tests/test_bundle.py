"""Bundles: save/load, legacy conversion for both families, load_model, and every bad input."""
from __future__ import annotations

import builtins
import hashlib
import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import core
from core.bundle import Bundle, BundleError, convert_checkpoint, load_bundle, save_bundle
from core.generators import LayerError

from conftest import make_progan, make_stylegan2


# ----------------------------------------------------------------------------- helpers
def all_outputs(g, z, **kw):
    """Features after every layer, then the image."""
    state = g.start(z, **kw)
    outs = []
    with torch.no_grad():
        for name in g.layers:
            state = g.step(name, state)
            outs.append(state.x.clone())
        outs.append(g.finish(state))
    return outs


def assert_same_outputs(g1, g2, **kw):
    z = g1.sample_z(range(3))
    a, b = all_outputs(g1, z, **kw), all_outputs(g2, z, **kw)
    assert len(a) == len(b) == len(g1.layers) + 1
    for name, x, y in zip(g1.layers + ["image"], a, b):
        assert torch.equal(x, y), name


def old_names(sd, resolution):
    """gandissect's older layout: features.{i-1}.* and output.*."""
    out = {}
    for k, v in sd.items():
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            out[f"features.{int(i) - 1}.{rest}"] = v
        else:
            out["output." + k.split(".", 1)[1]] = v
    assert any(k.startswith(f"output_{resolution}x{resolution}.") for k in sd)
    return out


def one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert type(excinfo.value) is BundleError and isinstance(excinfo.value, ValueError)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- ProGAN round trips
@pytest.mark.parametrize("container", ["plain", "state_dict", "old_names"])
def test_progan_convert_round_trip(tmp_path, tiny_progan, container):
    sd = tiny_progan.state_dict()
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 7},
           "old_names": old_names(sd, 16)}[container]
    src = tmp_path / "church.pth"
    torch.save(obj, src)
    dest = convert_checkpoint(src, tmp_path / "bundle")
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "config.json", "generator.safetensors"]
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["format"] == "painting-with-neurons-bundle" and cfg["version"] == 1
    assert cfg["architecture"] == "progan" and cfg["kwargs"]["sizes"] == [8, 8, 8, 4]
    assert cfg["resolution"] == 16 and cfg["z_dim"] == 8 and cfg["name"] == "bundle"
    assert cfg["source"] == {"file": "church.pth", "sha256": sha256(src)}
    assert cfg["defaults"] == {"truncation": 1.0, "noise": "buffers"}
    # original key names, contiguous tensors, nothing else
    assert set(load_file(dest / "generator.safetensors")) == set(sd)
    b = load_bundle(dest)
    assert_same_outputs(tiny_progan, b.generator)
    card = (dest / "README.md").read_text()
    for text in ("progan", "layer4", "8x8", sha256(src), "Licence", "| channels | resolution |"):
        assert text in card


def test_full_256_progan_layout_converts_and_runs(tmp_path):
    # gandissect's 256 px layout (14 layers), stored with the old features.N names.
    sizes = [512, 512, 512, 512, 512, 256, 128, 64]   # z, then 4x4 ... 256x256
    g = make_progan(sizes)
    src = tmp_path / "churchoutdoor_lsun.pth"
    sd = g.state_dict()
    assert len(sd) == 30 and "layer14.conv.weight" in sd and "output_256x256.wscale.b" in sd
    torch.save(old_names(sd, 256), src)
    dest = convert_checkpoint(src, tmp_path / "church")
    m = core.load_model(dest)
    assert m.resolution == 256 and m.layers == [f"layer{i}" for i in range(1, 15)]
    z = m.sample_z([0])
    img = m.generate(z)
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()
    f4 = m.features(z, "layer4")
    assert f4.shape == (1, 512, 8, 8) and torch.equal(f4, g.features(z, "layer4"))


# ----------------------------------------------------------------------------- StyleGAN2 round trips
def test_stylegan2_convert_round_trip(tmp_path):
    g = make_stylegan2()
    sd = g.state_dict()
    g_ema = {k: v for k, v in sd.items() if k != "latent_avg"}
    src = tmp_path / "stylegan2-church-config-f.pt"
    torch.save({"g_ema": g_ema, "latent_avg": sd["latent_avg"]}, src)
    dest = convert_checkpoint(src, tmp_path / "sg2", name="church")
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["architecture"] == "stylegan2" and cfg["name"] == "church"
    assert cfg["resolution"] == 16 and cfg["z_dim"] == 8
    assert cfg["source"]["sha256"] == sha256(src)
    assert set(load_file(dest / "generator.safetensors")) == set(sd)
    b = load_bundle(dest)
    assert torch.equal(b.generator.latent_avg, sd["latent_avg"])
    assert_same_outputs(g, b.generator, noise="buffers")
    assert_same_outputs(g, b.generator, truncation=0.5, noise="zero")
    assert_same_outputs(g, b.generator, truncation=0.7, noise=3)
    assert "stylegan2" in (dest / "README.md").read_text()


def test_stylegan2_load_model_defaults_and_legacy_path(tmp_path):
    g = make_stylegan2(seed=1)
    sd = g.state_dict()
    src = tmp_path / "sg2.pt"
    torch.save({"g_ema": {k: v for k, v in sd.items() if k != "latent_avg"},
                "latent_avg": sd["latent_avg"]}, src)
    m = core.load_model(src)
    assert m.bundle.path is None and m.bundle.architecture == "stylegan2"
    z = m.sample_z("0-1")
    assert torch.equal(m.generate(z), g.generate(z, truncation=1.0, noise="buffers"))
    assert torch.equal(m.generate(z, truncation=0.5, noise="zero"),
                       g.generate(z, truncation=0.5, noise="zero"))
    # bundle defaults are what None means
    dest = save_bundle(m.generator, tmp_path / "b", extra_config={"defaults": {"truncation": 0.6,
                                                                              "noise": "zero"}})
    m2 = core.load_model(dest)
    assert m2.defaults == {"truncation": 0.6, "noise": "zero"}
    assert torch.equal(m2.generate(z), g.generate(z, truncation=0.6, noise="zero"))


# ----------------------------------------------------------------------------- save/load + Bundle
def test_save_load_bundle_and_helpers(progan_bundle, tiny_progan):
    b = load_bundle(progan_bundle)
    assert isinstance(b, Bundle) and b.path == progan_bundle and b.name == "tiny-progan"
    assert b.architecture == "progan" and b.resolution == 16 and b.z_dim == 8
    assert not b.generator.training
    assert not any(p.requires_grad for p in b.generator.parameters())
    assert_same_outputs(tiny_progan, b.generator)
    assert b.catalog_path("layer4") == progan_bundle / "catalog" / "layer4.json"
    assert b.stats_path("layer4") == progan_bundle / "stats" / "layer4.safetensors"
    assert not b.has_catalog("layer4") and not b.has_stats("layer4")
    (progan_bundle / "catalog").mkdir()
    (progan_bundle / "catalog" / "layer4.json").write_text("{}")
    (progan_bundle / "segmenter.json").write_text("{}")      # extra files are tolerated
    assert load_bundle(progan_bundle).has_catalog("layer4")
    with pytest.raises(LayerError, match="layer1, layer2"):
        b.catalog_path("layer99")


def test_save_refuses_to_replace_a_bundle_unless_asked(progan_bundle):
    g = make_progan(seed=5)
    with pytest.raises(BundleError) as e:
        save_bundle(g, progan_bundle)
    one_line_error(e, "already holds a bundle", "overwrite")
    save_bundle(g, progan_bundle, overwrite=True)
    assert_same_outputs(g, load_bundle(progan_bundle).generator)


def test_save_bundle_extra_config(tmp_path, tiny_progan):
    d = save_bundle(tiny_progan, tmp_path / "x", extra_config={"license": "mit", "description": "hi"})
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["license"] == "mit" and cfg["description"] == "hi" and "source" not in cfg
    assert "license: mit" in (d / "README.md").read_text()
    with pytest.raises(BundleError, match="architecture"):
        save_bundle(tiny_progan, tmp_path / "y", extra_config={"architecture": "stylegan2"})
    with pytest.raises(BundleError, match="defaults.noise"):
        save_bundle(tiny_progan, tmp_path / "z", extra_config={"defaults": {"noise": "loud"}})


# ----------------------------------------------------------------------------- load_model / Model
def test_load_model_bundle_dir_and_legacy_path(tmp_path, progan_bundle, tiny_progan):
    src = tmp_path / "legacy" / "g.pth"
    src.parent.mkdir()
    torch.save(tiny_progan.state_dict(), src)
    from_dir = core.load_model(progan_bundle)
    from_pth = core.load_model(str(src))
    assert sorted(p.name for p in src.parent.iterdir()) == ["g.pth"]     # nothing written
    assert from_pth.bundle.path is None and from_pth.name == "g"
    assert from_pth.bundle.config["source"]["sha256"] == sha256(src)
    assert core.load_model(from_dir.bundle).bundle is from_dir.bundle
    z = from_dir.sample_z([0, 5, 2000])
    assert torch.equal(from_dir.generate(z), from_pth.generate(z))
    assert torch.equal(from_dir.generate(z), tiny_progan.generate(z))
    with pytest.raises(BundleError, match="only in memory"):
        from_pth.bundle.catalog_path("layer4")
    assert not from_pth.bundle.has_catalog("layer4")


def test_model_api(progan_bundle, tiny_progan):
    m = core.load_model(progan_bundle)
    assert m.layers == ["layer1", "layer2", "layer3", "layer4", "layer5", "layer6"]
    assert (m.resolution, m.z_dim) == (16, 8) and "tiny-progan" in repr(m)
    z = m.sample_z([3, 1])
    assert z.dtype == torch.float32 and z.shape == (2, 8)
    assert torch.equal(z, core.generators.sample_z([3, 1], 8, seed=1))
    assert torch.equal(m.sample_z("1,3"), m.sample_z([1, 3]))
    img = m.generate(z)
    assert img.shape == (2, 3, 16, 16)
    assert torch.equal(m.generate(z.reshape(2, 8, 1, 1)), img)
    assert torch.equal(m.generate(z, truncation=0.5, noise=4), img)    # ProGAN ignores both
    assert m.features(z, "layer3").shape == (2, 8, 8, 8)
    with pytest.raises(LayerError) as e:
        m.features(z, "layer7")
    assert "layer7" in str(e.value) and "layer1, layer2, layer3" in str(e.value)
    rendered = m.render("0-4", batch_size=2)
    assert torch.allclose(rendered, m.generate(m.sample_z(range(5))), atol=1e-4)  # batching may
    assert torch.equal(m.render("0-4", batch_size=5), m.generate(m.sample_z(range(5))))  # reorder sums
    with pytest.raises(ValueError, match=r"z must be \[N, 8\]"):
        m.generate(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="noise"):
        m.generate(z, noise="loud")


def test_load_model_default_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(core.paths, "DEFAULT_BUNDLE", tmp_path / "models" / "toytown")
    with pytest.raises(BundleError) as e:
        core.load_model("default")
    one_line_error(e, "toytown", "default bundle is not there yet")


def test_load_model_default_present(tmp_path, monkeypatch, tiny_progan):
    monkeypatch.setattr(core.paths, "DEFAULT_BUNDLE", save_bundle(tiny_progan, tmp_path / "toytown"))
    assert core.load_model("default").name == "toytown"


def test_load_model_bad_sources(tmp_path):
    with pytest.raises(BundleError) as e:
        core.load_model(tmp_path / "nope")
    one_line_error(e, "nope", "no such bundle folder, checkpoint file or known model id")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BundleError) as e:
        core.load_model(tmp_path / "notes.txt")
    one_line_error(e, "notes.txt", "not a bundle folder")


# ----------------------------------------------------------------------------- bad bundles
def _write_json(path, obj):
    path.write_text(json.dumps(obj))


def _edit_config(**changes):
    def edit(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        _write_json(d / "config.json", cfg)
    return edit


def _edit_weights(fn):
    def edit(d):
        sd = load_file(d / "generator.safetensors")
        fn(sd)
        save_file(sd, d / "generator.safetensors")
    return edit


def _nan(sd):
    sd["layer3.conv.weight"][0, 0, 0, 0] = float("nan")


BAD_BUNDLES = {
    "missing config": (lambda d: (d / "config.json").unlink(), ["config.json", "missing"]),
    "missing weights": (lambda d: (d / "generator.safetensors").unlink(),
                        ["generator.safetensors", "missing"]),
    "malformed json": (lambda d: (d / "config.json").write_text('{"format": '),
                       ["config.json", "malformed JSON"]),
    "config not an object": (lambda d: _write_json(d / "config.json", [1, 2]),
                             ["config.json", "expected a JSON object"]),
    "wrong format": (_edit_config(format="something-else"), ["config.json", "'format'"]),
    "bad version": (_edit_config(version="one"), ["config.json", "'version'"]),
    "newer version": (_edit_config(version=99), ["config.json", "newer"]),
    "unknown architecture": (_edit_config(architecture="biggan"),
                             ["config.json", "unknown architecture 'biggan'", "progan"]),
    "kwargs not a dict": (_edit_config(kwargs=[8, 8]), ["config.json", "'kwargs'"]),
    "kwargs do not fit": (_edit_config(kwargs={"channels": 3}), ["config.json", "kwargs"]),
    "resolution mismatch": (_edit_config(resolution=256), ["config.json", "'resolution'"]),
    "bad defaults": (_edit_config(defaults={"truncation": "high"}),
                     ["config.json", "defaults.truncation"]),
    "missing key": (_edit_weights(lambda sd: sd.pop("layer2.wscale.b")),
                    ["generator.safetensors", "missing keys layer2.wscale.b"]),
    "extra key": (_edit_weights(lambda sd: sd.update({"bogus.weight": torch.zeros(2)})),
                  ["generator.safetensors", "unexpected keys bogus.weight"]),
    "wrong shape": (_edit_weights(lambda sd: sd.update({"layer3.wscale.b": torch.zeros(5)})),
                    ["generator.safetensors", "wrong tensor shapes", "layer3.wscale.b is (5,), expected (8,)"]),
    "non-finite": (_edit_weights(_nan), ["generator.safetensors", "non-finite", "layer3.conv.weight"]),
    "corrupt weights": (lambda d: (d / "generator.safetensors").write_bytes(b"\x10\x00garbage"),
                        ["generator.safetensors", "not a readable safetensors file"]),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_bad_bundle_gives_one_clear_error(progan_bundle, case):
    mutate, needles = BAD_BUNDLES[case]
    mutate(progan_bundle)
    with pytest.raises(BundleError) as e:
        load_bundle(progan_bundle)
    one_line_error(e, *needles)
    with pytest.raises(BundleError):          # the public entry point says the same
        core.load_model(progan_bundle)


def test_bundle_path_errors(tmp_path, tiny_progan):
    with pytest.raises(BundleError) as e:
        load_bundle(tmp_path / "missing")
    one_line_error(e, "missing", "no such bundle folder")
    f = tmp_path / "g.pth"
    torch.save(tiny_progan.state_dict(), f)
    with pytest.raises(BundleError) as e:
        load_bundle(f)
    one_line_error(e, "g.pth", "is a file, not a bundle folder", "convert")


def test_bundle_loader_never_unpickles(progan_bundle, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("load_bundle must not use torch.load / pickle")
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    load_bundle(progan_bundle)


# ----------------------------------------------------------------------------- bad checkpoints
class Payload:
    """Unpickling this would create a marker file (it must never happen)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle-p2", "pickle-p4"])
def test_checkpoint_with_code_is_refused_without_running_it(tmp_path, tiny_progan, how):
    marker = tmp_path / "PWNED"
    obj = {"state_dict": {**tiny_progan.state_dict(), "evil": Payload(marker)}}
    src = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save(obj, src)
    elif how == "torch.save-legacy":
        torch.save(obj, src, _use_new_zipfile_serialization=False)
    else:
        with open(src, "wb") as f:
            pickle.dump({"evil": Payload(marker)}, f, protocol=int(how[-1]))
    assert not marker.exists()
    for call in (lambda: convert_checkpoint(src, tmp_path / "out"), lambda: core.load_model(src)):
        with pytest.raises(BundleError) as e:
            call()
        one_line_error(e, "evil.pth", "refusing to load", "code/objects")
    assert not marker.exists(), "the pickle payload ran"
    assert not (tmp_path / "out").exists()


def _truncated(tmp_path, sd, legacy):
    full = tmp_path / "full.pth"
    torch.save(sd, full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    src = tmp_path / "cut.pth"
    src.write_bytes(data[: len(data) * 2 // 3])
    return src


def _sg2_ckpt(drop_avg=False, drop_key=None):
    g = make_stylegan2()
    sd = g.state_dict()
    g_ema = {k: v for k, v in sd.items() if k not in ("latent_avg", drop_key)}
    return g_ema if drop_avg else {"g_ema": g_ema, "latent_avg": sd["latent_avg"]}


def _progan_sd(edit):
    sd = make_progan().state_dict()
    edit(sd)
    return sd


BAD_CHECKPOINTS = {
    "truncated zip": (lambda p: _truncated(p, make_progan().state_dict(), legacy=False),
                      ["cut.pth", "corrupt or truncated"]),
    "truncated legacy": (lambda p: _truncated(p, make_progan().state_dict(), legacy=True),
                         ["cut.pth", "corrupt or truncated"]),
    "empty file": (lambda p: _write(p / "empty.pth", b""),
                   ["empty.pth", "corrupt"]),
    "text file": (lambda p: _write(p / "notes.pt", b"hello, not a checkpoint"),
                  ["notes.pt", "corrupt"]),
    "missing key": (lambda p: _save(p, _progan_sd(lambda sd: sd.pop("layer4.wscale.b"))),
                    ["ckpt.pth", "missing keys layer4.wscale.b"]),
    "missing first layer": (lambda p: _save(p, _progan_sd(lambda sd: sd.pop("layer1.conv.weight"))),
                            ["ckpt.pth", "layer1.conv.weight"]),
    "extra key": (lambda p: _save(p, _progan_sd(lambda sd: sd.update({"extra.weight": torch.ones(1)}))),
                  ["ckpt.pth", "unexpected keys extra.weight"]),
    "wrong shape": (lambda p: _save(p, _progan_sd(lambda sd: sd.update({"layer2.wscale.b": torch.ones(3)}))),
                    ["ckpt.pth", "wrong tensor shapes", "layer2.wscale.b"]),
    "non-finite": (lambda p: _save(p, _progan_sd(lambda sd: sd["layer6.wscale.b"].fill_(float("inf")))),
                   ["ckpt.pth", "non-finite", "layer6.wscale.b"]),
    "not a tensor": (lambda p: _save(p, _progan_sd(lambda sd: sd.update({"layer2.wscale.b": [1.0]}))),
                     ["ckpt.pth", "not tensors", "layer2.wscale.b"]),
    "neither family": (lambda p: _save(p, {"encoder.weight": torch.ones(2), "step": 5}),
                       ["ckpt.pth", "neither a ProGAN", "StyleGAN2", "encoder.weight"]),
    "not a dict": (lambda p: _save(p, [torch.ones(2)]), ["ckpt.pth", "neither", "list"]),
    "stylegan2 without latent_avg": (lambda p: _save(p, {"g_ema": _sg2_ckpt()["g_ema"]}),
                                     ["ckpt.pth", "latent_avg"]),
    "bare stylegan2 without latent_avg": (lambda p: _save(p, _sg2_ckpt(drop_avg=True)),
                                          ["ckpt.pth", "latent_avg"]),
    "stylegan2 missing key": (lambda p: _save(p, _sg2_ckpt(drop_key="convs.1.activate.bias")),
                              ["ckpt.pth", "missing keys convs.1.activate.bias"]),
    "stylegan2 extra key": (lambda p: _save(p, {**_sg2_ckpt(),
                                                "g_ema": {**_sg2_ckpt()["g_ema"], "x.weight": torch.ones(1)}}),
                            ["ckpt.pth", "unexpected keys x.weight"]),
    "no such file": (lambda p: p / "absent.pth", ["absent.pth", "no such checkpoint"]),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _save(tmp_path, obj):
    torch.save(obj, tmp_path / "ckpt.pth")
    return tmp_path / "ckpt.pth"


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_gives_one_clear_error(tmp_path, case):
    make, needles = BAD_CHECKPOINTS[case]
    src = make(tmp_path)
    with pytest.raises(BundleError) as e:
        convert_checkpoint(src, tmp_path / "out")
    one_line_error(e, *needles)
    assert not (tmp_path / "out").exists()


def test_convert_refuses_existing_bundle(tmp_path, progan_bundle, tiny_progan):
    src = tmp_path / "g.pth"
    torch.save(tiny_progan.state_dict(), src)
    before = (progan_bundle / "config.json").read_text()
    with pytest.raises(BundleError, match="already holds a bundle"):
        convert_checkpoint(src, progan_bundle)
    assert (progan_bundle / "config.json").read_text() == before
    convert_checkpoint(src, progan_bundle, overwrite=True)
    assert "sha256" in (progan_bundle / "config.json").read_text()


def test_save_handles_shared_and_noncontiguous_tensors(tmp_path):
    g = make_progan()
    with torch.no_grad():        # a transposed view: non-contiguous parameter storage
        w = g.blocks["layer3"].conv.weight
        g.blocks["layer3"].conv.weight = torch.nn.Parameter(w.detach().transpose(0, 1).contiguous()
                                                            .transpose(0, 1))
    assert not g.blocks["layer3"].conv.weight.is_contiguous()
    g.blocks["layer4"].wscale.b = g.blocks["layer3"].wscale.b      # tied: one storage, two keys
    d = save_bundle(g, tmp_path / "nc")
    assert_same_outputs(g, load_bundle(d).generator)
    shutil.rmtree(d)
