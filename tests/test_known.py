"""core.known: the known models, fetched offline from a temporary HF cache or from a local HTTP
server (127.0.0.1), converted once, their digests pinned; the shipped rule library."""
from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import json
import re
import threading

import pytest
import torch

import core
from core import hub, known, rewrite as rw, rules
from core.bundle import CACHE_ENV
from core.settings import model_settings
from tests.conftest import make_progan, make_stylegan2
from tests.test_hub import bundle_files, cache, default_bundle, populate  # noqa: F401 (fixtures)


# --------------------------------------------------------------------------- helpers
def rosinality_bytes(tmp_path, seed=0) -> bytes:
    """A tiny StyleGAN2 saved as rosinality's convert_weight.py does: {'g_ema', 'latent_avg'}."""
    sd = make_stylegan2(seed=seed).state_dict()
    f = tmp_path / f"sg2-{seed}.pt"
    torch.save({"g_ema": {k: v for k, v in sd.items() if k != "latent_avg"},
                "latent_avg": sd["latent_avg"]}, f)
    return f.read_bytes()


class Smuggled:
    """Any class in a pickle: torch.load(weights_only=True) must refuse to build it."""


@pytest.fixture
def listing(tmp_path, monkeypatch):
    """Write a known-models list (and use a scratch cache of this test's own)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "scratch"))
    path = tmp_path / "known_models.json"

    def write(*entries):
        path.write_text(json.dumps({"format": "painting-with-neurons-known-models", "version": 2,
                                    "models": list(entries)}))
        monkeypatch.setattr(known, "KNOWN_MODELS_FILE", path)
    return write


SG2 = {"id": "tiny-sg2", "label": "tiny", "family": "stylegan2", "resolution": 16,
       "repo_id": "org/sg2", "file": "tiny-config-f.pt",
       "config": {"rewrite_layer": "layer4", "defaults": {"truncation": 0.5}}}


def offline_with_a_known_stylegan2(mp, tmp) -> None:
    """With ``mp`` (a MonkeyPatch): the Hub switched off, an HF cache, a scratch cache and a
    known-models list (the default and ``SG2``) in ``tmp``, SG2's checkpoint in that cache."""
    import huggingface_hub.constants as c
    mp.setattr(c, "HF_HUB_OFFLINE", True)
    mp.setattr(c, "HF_HUB_CACHE", str(tmp / "hf"))
    mp.setattr(hub, "_DOWN_SINCE", [])
    mp.setenv(CACHE_ENV, str(tmp / "scratch"))
    listing = tmp / "known.json"
    listing.write_text(json.dumps({"models": [{"id": "default", "label": "Toytown (embedded default)",
                                               "local": "default"}, SG2]}))
    mp.setattr(known, "KNOWN_MODELS_FILE", listing)
    populate(tmp / "hf", "org/sg2", {"tiny-config-f.pt": rosinality_bytes(tmp)})


@pytest.fixture
def http_server(tmp_path):
    """A static file server on 127.0.0.1 over ``tmp_path / 'www'``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


# --------------------------------------------------------------------------- the shipped list
def test_known_models_list():
    entries = known.known_models()
    ids = [e["id"] for e in entries]
    assert ids[0] == "default" and entries[0]["local"] == "default"
    for s in ("churchoutdoor", "kitchen", "bedroom", "conferenceroom", "diningroom",
              "livingroom", "restaurant", "celebhq"):
        assert f"proggan-{s}" in ids
    for s in ("church", "horse", "faces", "kitchen", "bedroom", "car", "cat"):
        assert f"stylegan2-{s}" in ids
    by_id = {e["id"]: e for e in entries}
    for s in ("church", "horse", "cat"):           # original checkpoints in a real Hub repo
        e = by_id[f"stylegan2-{s}"]
        assert (e["repo_id"], e["file"]) == ("aaronb/StyleGAN2", f"stylegan2-{s}-config-f.pt")
    assert by_id["stylegan2-faces"]["file"] == "stylegan2-ffhq-config-f.pt"
    assert by_id["proggan-churchoutdoor"]["repo_id"] == "painting-with-neurons/proggan-churchoutdoor"
    assert by_id["proggan-churchoutdoor"]["placeholder"] and not by_id["proggan-churchoutdoor"]["file"]
    for e in entries[1:]:
        assert e["family"] in ("progan", "stylegan2") and e["resolution"] in (256, 512, 1024)
        name = e["url"].rsplit("/", 1)[1]
        assert re.search(r"-([0-9a-f]{8})\.", name).group(1) == e["sha256_prefix"]
        assert e["sha256"] is None and e["licence"]
    assert known.entry_for_file("/x/stylegan2_cat-d8dc98b2.pt")["id"] == "stylegan2-cat"
    assert known.entry_for_file("stylegan2-cat-config-f.pt")["id"] == "stylegan2-cat"
    assert known.known_model("church")["id"] == "proggan-churchoutdoor"        # an alias
    assert known.is_known_id("stylegan2-horse") and not known.is_known_id("org/stylegan2-horse")


def test_known_models_org_override(monkeypatch):
    monkeypatch.setenv(known.ORG_ENV, "my-org")
    e = known.known_model("stylegan2-kitchen")
    assert e["repo_id"] == "my-org/stylegan2-kitchen" and not e["placeholder"]
    assert known.entry_source(e) == "my-org/stylegan2-kitchen"


def test_availability(cache, tmp_path, default_bundle, monkeypatch):
    populate(cache, "org/tiny", bundle_files(tmp_path))
    populate(cache, "org/sg2", {"tiny-config-f.pt": b"x"})
    assert known.availability({"id": "default", "local": "default"}) == "available"
    assert known.availability({"id": "t", "repo_id": "org/tiny"}) == "cached"
    assert known.availability(SG2) == "cached"
    off = known.availability({"id": "n", "repo_id": "org/nope"})
    assert off.startswith("unavailable: offline")
    assert known.availability({"id": "u", "url": "http://example.invalid/x.pth"}).startswith(
        "unavailable: offline")
    import huggingface_hub as hf
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "file_exists", lambda repo_id, filename, **kw: repo_id == "org/up")
    assert known.availability({"id": "u", "repo_id": "org/up"}) == "available"
    assert known.availability({"id": "d", "repo_id": "org/down"}).startswith(
        "unavailable: no generator.safetensors in org/down")
    assert known.availability({"id": "f", "repo_id": "org/down", "file": "a.pt"}).startswith(
        "unavailable: no a.pt in org/down")
    monkeypatch.setattr(core.paths, "DEFAULT_BUNDLE", tmp_path / "missing")
    assert known.availability({"id": "default", "local": "default"}).startswith("unavailable:")


def test_verify_checkpoint(tmp_path):
    f = tmp_path / "stylegan2_x-00000000.pt"
    f.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    ok = known.verify_checkpoint(f, {"id": "x", "sha256": None, "sha256_prefix": digest[:8]})
    assert ok == {"file": f.name, "sha256": digest, "checked": "sha256_prefix", "verified": True}
    assert known.verify_checkpoint(f, {"sha256": digest})["checked"] == "sha256"
    assert known.verify_checkpoint(f, {"sha256": None, "sha256_prefix": None})["verified"] is False
    with pytest.raises(hub.HubError, match="does not match 'x'"):
        known.verify_checkpoint(f, {"id": "x", "url": f"http://h/{f.name}", "sha256_prefix": "00000000"})
    # the prefix belongs to the original host's file, not to a Hub copy of another name
    assert known.verify_checkpoint(f, {"url": "http://h/y-00000000.pt",
                                       "sha256_prefix": "00000000"})["verified"] is False


# --------------------------------------------------------------------------- fetching
def test_hub_checkpoint_is_converted_once_and_opens_offline(cache, tmp_path, listing):
    listing(SG2)
    data = rosinality_bytes(tmp_path)
    populate(cache, "org/sg2", {"tiny-config-f.pt": data})
    m = core.load_model("tiny-sg2")                      # as a notebook would
    folder = known.converted_folder(SG2)
    assert m.bundle.path == folder and (folder / "generator.safetensors").is_file()
    source = m.bundle.config["source"]
    assert source == {"repo_id": "org/sg2", "revision": "a" * 40, "file": "tiny-config-f.pt",
                      "sha256": hashlib.sha256(data).hexdigest(), "known_id": "tiny-sg2"}
    assert model_settings(m).rewrite_layer == "layer4" and m.bundle.defaults["truncation"] == 0.5
    g = make_stylegan2()
    z = m.sample_z([0, 1])
    assert torch.allclose(m.generate(z, truncation=1.0), g.generate(z), atol=1e-5)
    recorded = json.loads((tmp_path / "scratch" / "known_sha256.json").read_text())
    assert recorded == {"org/sg2/tiny-config-f.pt": source["sha256"]}
    assert known.availability(SG2) == "cached"
    # the second open reads the converted copy (the HF cache could be gone)
    for p in sorted(cache.rglob("*"), reverse=True):
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    assert core.load_model("tiny-sg2").bundle.path == folder


def test_a_changed_file_is_refused(cache, tmp_path, listing):
    listing(SG2)
    populate(cache, "org/sg2", {"tiny-config-f.pt": rosinality_bytes(tmp_path)})
    core.load_model("tiny-sg2")
    import shutil
    shutil.rmtree(known.converted_folder(SG2))
    populate(cache, "org/sg2", {"tiny-config-f.pt": rosinality_bytes(tmp_path, seed=1)}, commit="b" * 40)
    with pytest.raises(hub.HubError, match="differs from the .* recorded when it was first downloaded"):
        core.load_model("tiny-sg2")


@pytest.mark.parametrize("case", ["code", "not cached", "wrong family", "unknown id"])
def test_bad_sources_give_one_line(cache, tmp_path, listing, case):
    listing(SG2)
    if case == "code":
        f = tmp_path / "evil.pt"
        torch.save({"g_ema": collections.OrderedDict(), "x": Smuggled()}, f)
        populate(cache, "org/sg2", {"tiny-config-f.pt": f.read_bytes()})
        match = "refusing to load: the file contains code"
    elif case == "not cached":
        match = "tiny-config-f.pt is not in the local cache and the Hub is switched off"
    elif case == "wrong family":
        f = tmp_path / "progan.pth"
        torch.save(make_progan().state_dict(), f)
        populate(cache, "org/sg2", {"tiny-config-f.pt": f.read_bytes()})
        match = "not a stylegan2 checkpoint"
    with pytest.raises(ValueError, match=match if case != "unknown id" else "no such bundle folder") as e:
        core.load_model("tiny-sg2" if case != "unknown id" else "no-such-model")
    assert "\n" not in str(e.value)
    assert not known.converted_folder(SG2).exists()


def test_original_url_with_hash_check_and_fallback(tmp_path, listing, http_server, monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    base, www = http_server
    f = tmp_path / "p.pth"
    torch.save(make_progan(seed=3).state_dict(), f)
    prefix = hashlib.sha256(f.read_bytes()).hexdigest()[:8]
    (www / f"tiny_progan-{prefix}.pth").write_bytes(f.read_bytes())
    (www / f"tiny_other-{prefix}.pth").write_bytes(b"not the file")
    entry = {"id": "tiny-pg", "family": "progan", "resolution": 16,
             "url": f"{base}/tiny_other-{prefix}.pth",           # wrong bytes: refused
             "alt_urls": [f"{base}/missing-{prefix}.pth", f"{base}/tiny_progan-{prefix}.pth"],
             "sha256_prefix": prefix}
    listing(entry)
    seen = []
    m = known.open_known("tiny-pg", progress=lambda done, total, stage: seen.append((stage, done, total)))
    assert m.bundle.config["source"]["url"].endswith(f"/tiny_progan-{prefix}.pth")
    assert ("download", f.stat().st_size, f.stat().st_size) in seen and seen[-1][0] == "convert"
    z = m.sample_z([0])
    assert torch.allclose(m.generate(z), make_progan(seed=3).generate(z), atol=1e-6)
    assert not (tmp_path / "scratch" / "downloads" / f"tiny_other-{prefix}.pth").exists()
    # every source failing: one line naming each
    listing({**entry, "url": f"{base}/gone-{prefix}.pth", "alt_urls": []})
    import shutil
    shutil.rmtree(known.converted_folder(entry))
    with pytest.raises(hub.HubError, match=r"tiny-pg: could not be opened: .*gone-.*404"):
        known.open_known("tiny-pg")


def test_download_url_refuses_oversize_and_other_schemes(tmp_path, http_server):
    base, www = http_server
    (www / "big.pt").write_bytes(b"x" * 5000)
    with pytest.raises(hub.HubError, match="more than the"):
        known.download_url(f"{base}/big.pt", tmp_path / "big.pt", max_bytes=1000)
    assert not list(tmp_path.glob("big.pt*"))
    with pytest.raises(hub.HubError, match="only http"):
        known.download_url("file:///etc/passwd", tmp_path / "x")


# --------------------------------------------------------------------------- the rule library
def _tiny_of(entry):
    if entry["family"] == "stylegan2":
        from core.generators.stylegan2 import StyleGAN2Generator
        chans = {4 * 2 ** i: 2 for i in range(9) if 4 * 2 ** i <= entry["resolution"]}
        torch.manual_seed(0)
        return StyleGAN2Generator(size=entry["resolution"], style_dim=4, n_mlp=1, channels=chans).eval()
    return make_progan(sizes=(4,) * 8)


def test_every_shipped_rule_parses_and_applies():
    folders = sorted(p for p in known.RULES_DIR.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["proggan-churchoutdoor", "stylegan2-church",
                                         "stylegan2-faces", "stylegan2-horse", "stylegan2-kitchen"]
    assert "MIT" in (known.RULES_DIR / "LICENSE").read_text()
    total = 0
    for folder in folders:
        entry = known.known_model(folder.name)
        g = _tiny_of(entry)
        layer = entry["config"]["rewrite_layer"]
        C = rw.collect_key_stats(g, layer, range(4))
        for path in sorted(folder.glob("*.json")):
            rule = rules.read_rule(path)
            context_only = rule.object is None or rule.paste is None    # the paper erased with these
            edit = rules.apply_rule(g, rule, layer=layer, C=C, erase=context_only or None)
            assert torch.isfinite(edit.lam).all(), path
            total += 1
    assert total == 77


def test_rule_files_follow_the_known_id(tmp_path):
    from core.bundle import save_bundle
    b = save_bundle(make_progan(), tmp_path / "b", name="x", source={"known_id": "stylegan2-horse"})
    assert "recorded_horse_hat" in known.rule_files(core.load_model(b))
    assert known.rule_files(core.load_model(save_bundle(make_progan(), tmp_path / "c"))) == {}
