"""core.hub: resolving model sources through a pre-populated, temporary HF cache, offline.

The real huggingface_hub code runs (snapshot_download with local_files_only / offline mode);
nothing contacts the Hub: HF_HUB_OFFLINE is switched on, and the few "online" tests replace
huggingface_hub.snapshot_download / file_exists with fakes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub  # noqa: F401  (imported here so its import time is not one test's)
import huggingface_hub.constants  # noqa: F401
import pytest
import torch
from huggingface_hub import HfApi, snapshot_download  # noqa: F401

import core
from core import hub, known, sources
from core.bundle import save_bundle
from tests.conftest import make_progan

A, B = "a" * 40, "b" * 40


# --------------------------------------------------------------------------- helpers
def populate(cache_dir, repo_id, files: dict, commit=A, ref="main", repo_type="model"):
    """Write ``files`` ({path: bytes}) as one commit of ``repo_id`` in an HF cache, exactly as
    huggingface_hub lays it out (refs/, blobs/, snapshots/<commit>/ symlinks)."""
    repo = Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    if ref:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        dst = repo / "snapshots" / commit / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.path.relpath(blob, dst.parent))
    return repo / "snapshots" / commit


def folder_files(folder) -> dict:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def bundle_files(tmp_path, seed=0, name="tiny") -> dict:
    return folder_files(save_bundle(make_progan(seed=seed), tmp_path / f"b{seed}-{name}", name=name))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty HF cache in tmp, offline mode on (read by huggingface_hub at call time)."""
    import huggingface_hub.constants as c
    d = tmp_path / "hf-cache"
    d.mkdir()
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(d))
    monkeypatch.delenv(known.ORG_ENV, raising=False)
    monkeypatch.setattr(hub, "_DOWN_SINCE", [])       # no "Hub unreachable" memory between tests
    monkeypatch.setattr(known, "_PROBES", {})
    return d


@pytest.fixture
def default_bundle(tmp_path, monkeypatch):
    """Point the embedded default at a tiny bundle (the real one is built by training/)."""
    path = save_bundle(make_progan(seed=7), tmp_path / "toytown", name="toytown")
    monkeypatch.setattr(core.paths, "DEFAULT_BUNDLE", path)
    return path


def first_weight(model) -> torch.Tensor:
    return model.generator.main_weight(model.layers[0])


# --------------------------------------------------------------------------- ids
def test_parse_repo_id():
    assert hub.parse_repo_id("org/name") == ("org/name", None, "model")
    assert hub.parse_repo_id("org/name@v1.0") == ("org/name", "v1.0", "model")
    assert hub.parse_repo_id("org/name@" + A) == ("org/name", A, "model")
    assert hub.parse_repo_id("datasets/org/cats@main") == ("org/cats", "main", "dataset")
    for bad in ("default", "name", "a/b/c", "../x", "org/..", "/abs/path", "org/name@", "x y/z"):
        assert hub.parse_repo_id(bad) is None, bad


# --------------------------------------------------------------------------- cache, offline
def test_resolve_and_load_from_cache_offline(cache, tmp_path):
    files = bundle_files(tmp_path)
    populate(cache, "org/tiny", files)
    r = hub.resolve("org/tiny")
    assert (r.repo_id, r.revision, r.origin, r.kind) == ("org/tiny", A, "cache", "bundle")
    assert r.path.name == A and (r.path / "generator.safetensors").is_file()
    m = sources.load_model_from_hub("org/tiny")
    ref = core.load_model(tmp_path / "b0-tiny")
    assert torch.equal(m.render([0, 1]), ref.render([0, 1]))
    assert hub.origin(m) == {"repo_id": "org/tiny", "revision": A}
    model, notice = sources.load_with_fallback("org/tiny")
    assert model.bundle.path == r.path
    assert notice.startswith("offline (HF_HUB_OFFLINE=1): using the cached copy of org/tiny@main")
    assert hub.resolve(f"org/tiny@{A}").notice is None      # a pinned commit cannot be stale


def test_pinned_revision_honoured(cache, tmp_path):
    populate(cache, "org/tiny", bundle_files(tmp_path, seed=0), commit=A, ref="main")
    populate(cache, "org/tiny", bundle_files(tmp_path, seed=1), commit=B, ref="v2")
    m_main = sources.load_model_from_hub("org/tiny")
    m_a = sources.load_model_from_hub(f"org/tiny@{A}")
    m_b = sources.load_model_from_hub(f"org/tiny@{B}")
    m_tag = sources.load_model_from_hub("org/tiny@v2")
    assert torch.equal(first_weight(m_main), first_weight(m_a))
    assert torch.equal(first_weight(m_b), first_weight(m_tag))
    assert not torch.equal(first_weight(m_a), first_weight(m_b))
    assert torch.equal(first_weight(m_b), first_weight(core.load_model(tmp_path / "b1-tiny")))
    assert hub.resolve("org/tiny@v2").revision == B


def test_missing_file_is_named(cache, tmp_path):
    files = bundle_files(tmp_path)
    del files["generator.safetensors"]
    populate(cache, "org/half", files)
    with pytest.raises(hub.HubError, match=r"org/half.*missing file generator\.safetensors"):
        hub.resolve("org/half")


def test_broken_blob_is_reported(cache, tmp_path):
    snap = populate(cache, "org/broken", bundle_files(tmp_path))
    (snap / "generator.safetensors").resolve().unlink()      # the blob vanished
    with pytest.raises(hub.HubError, match="generator.safetensors.*blob is missing"):
        hub.resolve("org/broken")


def test_incomplete_snapshot_with_tree_listing(cache, tmp_path):
    files = bundle_files(tmp_path)
    snap = populate(cache, "org/part", {"config.json": files["config.json"]})
    trees = snap.parent.parent / "trees"
    trees.mkdir()
    (trees / f"{A}.json").write_text(json.dumps({"format_version": 1, "files": {
        name: {"size": len(data), "blob_id": hashlib.sha1(data).hexdigest()}
        for name, data in files.items()}}))
    with pytest.raises(hub.HubError, match=r"org/part: the cached snapshot is incomplete.*"
                                           r"generator\.safetensors"):
        hub.resolve("org/part")
    assert known.availability({"id": "p", "repo_id": "org/part"}).startswith("unavailable: offline")


def test_unknown_repo_offline_then_fallback(cache, default_bundle):
    with pytest.raises(hub.HubError, match=r"org/nope is not in the local Hugging Face cache.*"
                                           r"HF_HUB_OFFLINE"):
        hub.resolve("org/nope")
    model, notice = sources.load_with_fallback("org/nope")
    assert model.bundle.path == default_bundle
    assert "org/nope" in notice and "embedded default" in notice and "toytown" in notice
    model, notice = sources.load_with_fallback("default")
    assert notice is None and model.name == "toytown"


def test_fallback_when_default_missing_too(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(core.paths, "DEFAULT_BUNDLE", tmp_path / "not-built")
    with pytest.raises(hub.HubError, match="org/nope.*fallback 'default' failed too"):
        sources.load_with_fallback("org/nope")


def test_unknown_revision_lists_cached_refs(cache, tmp_path):
    populate(cache, "org/tiny", bundle_files(tmp_path))
    with pytest.raises(hub.HubError, match=r"revision 'nope' of org/tiny is not in the local "
                                           r"cache.*main=aaaaaaaaaa"):
        hub.resolve("org/tiny@nope")


def test_pickle_only_repo_is_refused(cache, tmp_path):
    files = bundle_files(tmp_path)
    files["generator.pth"] = files.pop("generator.safetensors")
    populate(cache, "org/pickled", files)
    with pytest.raises(hub.HubError, match=r"org/pickled.*pickled checkpoint \(generator\.pth\)"
                                           r".*python -m core convert"):
        hub.resolve("org/pickled")


def test_allow_download_false(cache, monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with pytest.raises(hub.HubError, match="org/nope.*downloads are turned off"):
        hub.resolve("org/nope", allow_download=False)


def test_local_folder_and_default_first(cache, tmp_path, default_bundle, monkeypatch):
    folder = save_bundle(make_progan(), tmp_path / "org" / "tiny", name="t")
    monkeypatch.chdir(tmp_path)                     # "org/tiny" is now also a local folder
    r = hub.resolve("org/tiny")
    assert r.origin == "local" and r.repo_id is None and r.path == Path("org/tiny")
    assert hub.resolve("default") == hub.Resolved(default_bundle, origin="default")
    assert hub.origin(core.load_model("default")) == {"local": "default"}
    assert hub.origin(core.load_model(folder)) == {"local": str(folder.resolve())}
    with pytest.raises(hub.HubError, match="no such folder, and not a Hub id"):
        hub.resolve("no such thing")


# --------------------------------------------------------------------------- online (faked)
def _fake_online(monkeypatch, raise_for_download=None, files=None, cache=None):
    """Online mode with huggingface_hub.snapshot_download faked for downloads only: the cache
    lookup (local_files_only=True) still runs the real code."""
    import huggingface_hub as hf
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    real = hf.snapshot_download
    calls = []

    def fake(repo_id, **kw):
        if kw.get("local_files_only"):
            return real(repo_id, **kw)
        calls.append((repo_id, kw))
        if raise_for_download is not None:
            raise raise_for_download
        return str(populate(kw.get("cache_dir") or cache, repo_id, files, commit=B))

    monkeypatch.setattr(hf, "snapshot_download", fake)
    monkeypatch.setattr(hf.HfApi, "list_repo_files", lambda *a, **k: ["model.pt", "README.md"])
    return calls


def _http_error(cls, status=404):
    import httpx2
    from huggingface_hub import errors
    resp = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/x"))
    return getattr(errors, cls)(f"{cls} (fake)", response=resp)


@pytest.mark.parametrize("error, pattern", [
    (lambda: _http_error("RepositoryNotFoundError"), r"org/x: no such model repo on the Hub"),
    (lambda: _http_error("RevisionNotFoundError"), r"org/x@r1: revision 'r1' not found"),
    (lambda: _http_error("GatedRepoError", 403), r"gated"),
    (lambda: __import__("huggingface_hub").errors.LocalEntryNotFoundError("connection refused"),
     r"not cached and the Hub is unreachable"),
    (lambda: ConnectionError("network down"), r"Hub is unreachable"),
])
def test_download_errors_are_explained(cache, monkeypatch, error, pattern):
    _fake_online(monkeypatch, raise_for_download=error())
    src = "org/x@r1" if "revision" in pattern else "org/x"
    with pytest.raises(hub.HubError, match=pattern):
        hub.resolve(src)


def test_unreachable_hub_is_not_retried_for_every_model(cache, monkeypatch):
    import huggingface_hub as hf
    calls = _fake_online(monkeypatch, raise_for_download=hf.errors.LocalEntryNotFoundError("down"))
    with pytest.raises(hub.HubError, match="Hub is unreachable"):
        hub.resolve("org/a")
    with pytest.raises(hub.HubError, match=r"org/b is not in the local .* and the Hub was "
                                           r"unreachable 0 s ago"):
        hub.resolve("org/b")
    assert len(calls) == 1
    assert known.availability({"id": "b", "repo_id": "org/b"}).startswith(
        "unavailable: not cached and the Hub was unreachable")
    monkeypatch.setattr(hub, "UNREACHABLE_FOR_S", 0.0)
    with pytest.raises(hub.HubError, match="Hub is unreachable"):
        hub.resolve("org/b")
    assert len(calls) == 2


def test_download_then_cached(cache, tmp_path, monkeypatch):
    calls = _fake_online(monkeypatch, files=bundle_files(tmp_path), cache=cache)
    r = hub.resolve("org/new")
    assert r.origin == "download" and r.revision == B
    assert calls[0][1]["allow_patterns"] == hub.BUNDLE_PATTERNS
    assert not any(p.endswith((".pt", ".pth", ".bin", ".pkl")) for p in hub.BUNDLE_PATTERNS)
    assert hub.resolve("org/new").origin == "cache" and len(calls) == 1


def test_downloaded_pickle_repo_names_remote_pickle(cache, tmp_path, monkeypatch):
    files = {"README.md": b"# a pickle"}
    _fake_online(monkeypatch, files=files, cache=cache)
    with pytest.raises(hub.HubError, match=r"org/pk holds a pickled checkpoint \(model\.pt\)"):
        hub.resolve("org/pk")


# --------------------------------------------------------------------------- catalogs
def test_catalog_from_bundle_or_catalog_repo(cache, tmp_path):
    files = bundle_files(tmp_path)
    cfg = json.loads(files["config.json"])
    cfg["catalog_repo"] = "datasets/org/cats"
    files["config.json"] = json.dumps(cfg).encode()
    files["catalog/layer2.json"] = b'{"own": true}'
    populate(cache, "org/tiny", files)
    populate(cache, "org/cats", {"catalog/layer4.json": b'{"repo": true}',
                                 "stats/layer4.safetensors": b"x"}, repo_type="dataset")
    m = sources.load_model_from_hub("org/tiny")
    assert json.loads(hub.find_catalog(m, "layer2").read_text()) == {"own": True}
    assert json.loads(hub.find_catalog(m, "layer4").read_text()) == {"repo": True}
    assert hub.find_stats(m, "layer4").name == "layer4.safetensors"
    assert hub.find_catalog(m, "layer6") is None


# --------------------------------------------------------------------------- convert --push
class FakeApi:
    """Stands in for huggingface_hub.HfApi and records what would be sent."""
    calls: list = []

    def __init__(self, token=None, **kw):
        self.token = token

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", repo_id, kw, self.token))
        return type("RepoUrl", (), {"url": f"https://huggingface.co/{repo_id}",
                                    "repo_id": repo_id})()

    def create_commit(self, repo_id, operations, **kw):
        ops = [(op.path_in_repo, len(op.path_or_fileobj) if isinstance(op.path_or_fileobj, bytes)
                else Path(op.path_or_fileobj).stat().st_size) for op in operations]
        FakeApi.calls.append(("create_commit", repo_id, kw, ops))
        return type("CommitInfo", (), {"oid": "c" * 40})()


@pytest.fixture
def fake_api(monkeypatch):
    import huggingface_hub as hf
    FakeApi.calls = []
    monkeypatch.setattr(hf, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return FakeApi


@pytest.fixture
def cli(monkeypatch):
    """``python -m core`` main() with only the built-in convert and core.cli.push registered
    (the other commands' imports are not this file's business, nor its time budget)."""
    import core.__main__ as cm
    monkeypatch.setattr(cm, "command_modules", lambda: ["core.cli.push"])
    return cm.main


def test_convert_push_verifies_and_publishes(tmp_path, fake_api, monkeypatch, capsys, cli):
    main = cli
    g = make_progan()
    ckpt = tmp_path / "proggan_tiny-00000000.pth"
    torch.save(g.state_dict(), ckpt)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    listing = tmp_path / "known.json"
    listing.write_text(json.dumps({"models": [
        {"id": "tiny", "family": "progan", "resolution": 16, "repo_id": "painting-with-neurons/tiny",
         "file": ckpt.name, "url": "http://example.invalid/" + ckpt.name, "sha256": None,
         "sha256_prefix": digest[:8], "licence": "test licence"},
        {"id": "wrong", "file": "other.pth", "sha256": "0" * 64, "licence": "x"}]}))
    monkeypatch.setattr(known, "KNOWN_MODELS_FILE", listing)
    dest = tmp_path / "mirror"
    assert main(["convert", str(ckpt), str(dest), "--push", "me/tiny"]) == 0
    (_, rid, kw, token), (_, _, ckw, ops) = fake_api.calls
    assert rid == "me/tiny" and kw["private"] is True and token == "hf_test_token"
    assert sorted(p for p, _ in ops) == ["README.md", "config.json", "generator.safetensors"]
    assert "Mirror of proggan_tiny-00000000.pth" in ckw["commit_message"]
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["mirror_of"]["verified"] and cfg["source"]["sha256"] == digest
    assert "test licence" in (dest / "README.md").read_text()
    core.load_model(dest)                        # still a valid bundle
    # a hash mismatch is refused before anything is converted or sent
    fake_api.calls.clear()
    assert main(["convert", str(ckpt), str(tmp_path / "m2"), "--push", "me/x",
                 "--known", "wrong"]) == 2
    assert "does not match 'wrong'" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists() and fake_api.calls == []
    # an unknown file needs --allow-unverified
    other = tmp_path / "mine.pth"
    torch.save(g.state_dict(), other)
    assert main(["convert", str(other), str(tmp_path / "m3"), "--push", "me/x"]) == 2
    assert "not a checkpoint listed" in capsys.readouterr().err
    # convert without --push is unchanged
    assert main(["convert", str(other), str(tmp_path / "m4")]) == 0 and fake_api.calls == []
