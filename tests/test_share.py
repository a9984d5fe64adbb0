"""core.share: edited models as base id + revision + edit files + card; zip, merge, push.

Offline throughout: the base model sits in a temporary, pre-populated HF cache (see test_hub.py)
and HfApi is replaced by a recorder (FakeApi) that captures what a push would send."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

import core
from core import hub, sources
from core.bundle import save_bundle
from tests.conftest import make_progan
from tests.test_hub import (A, FakeApi, bundle_files, cache, cli, default_bundle,  # noqa: F401
                             fake_api, populate)

from core import share  # noqa: E402
from core.edits import EditStack, Renderer, UnitEdit, WeightEdit  # noqa: E402


def rank_one(g, layer="layer3", seed=0, scale=0.3) -> WeightEdit:
    w = g.main_weight(layer)
    torch.manual_seed(seed)
    lam_shape = list(w.shape)
    lam_shape[-3] = 1
    return WeightEdit(layer, scale * torch.randn(lam_shape), torch.randn(1, w.shape[-3]),
                      label="rank-one rule")


def sample_stack(g) -> EditStack:
    mask = torch.zeros(8, 8)
    mask[2:6, 1:5] = 1
    return EditStack((UnitEdit("layer4", [0, 3], None, mask, 1.0, "remove trees"),
                      rank_one(g),
                      UnitEdit("layer2", [1], [2.5], None, 0.5, "draw")))


def reference(model, stack, numbers=(0, 1, 2)):
    """What the edits must render: the base generator with the stack, no share code involved."""
    g = model.generator
    z = model.sample_z(list(numbers))
    return g.generate(z, weight_deltas=stack.weight_deltas(g) or None, edit=stack.feature_edit())


@pytest.fixture
def base(cache, tmp_path):
    """The tiny ProGAN, loaded from the offline HF cache as org/tiny (commit A)."""
    populate(cache, "org/tiny", bundle_files(tmp_path))
    return sources.load_model_from_hub("org/tiny")


def folder_size(folder, pattern="*") -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file())


# --------------------------------------------------------------------------- round trip
def test_export_then_load_gives_identical_images(base, tmp_path):
    stack = sample_stack(base.generator)
    folder = share.export_edited(base, stack, tmp_path / "edit", previews=[0, 2])
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == ["README.md", "config.json", "edits.json", "edits.safetensors",
                     "previews/0_after.png", "previews/0_before.png",
                     "previews/2_after.png", "previews/2_before.png"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "painting-with-neurons-edited"
    assert cfg["base"] == {"repo_id": "org/tiny", "revision": A}
    assert [e["type"] for e in cfg["edits"]] == ["unit", "weight", "unit"]
    assert cfg["edits"][1]["rank"] == 1 and cfg["edits"][0]["masked"]
    card = (folder / "README.md").read_text()
    assert "base_model: org/tiny" in card and A in card and "previews/2_after.png" in card
    assert "remove units 0, 3 inside a painted mask" in card and "`layer3`" in card

    edited = share.load_edited(folder)                  # base resolved from the cache by id
    assert isinstance(edited, core.Model) and isinstance(edited, share.EditedModel)
    assert edited.base.bundle.path == base.bundle.path
    want = reference(base, stack)
    assert torch.equal(edited.generate(base.sample_z([0, 1, 2])), want)
    assert torch.equal(edited.render([0, 1, 2]), want)
    assert not torch.equal(base.render([0, 1, 2]), want)  # the edits do something
    # features at an edited layer include the unit edits
    z = base.sample_z([0])
    f = edited.features(z, "layer4")
    assert torch.all(f[0, [0, 3], 2:6, 1:5] == 0) and not torch.equal(f, base.features(z, "layer4"))
    # edits renderer (cached) agrees
    assert torch.equal(Renderer(edited.base).render(z, edited.stack),
                       reference(base, stack, [0]))


def test_edited_repo_through_hub_and_load_model(base, cache, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
             if p.is_file()}
    populate(cache, "me/my-edit", files, commit="c" * 40)
    r = hub.resolve("me/my-edit")
    assert r.kind == "edited"
    m = sources.load_model_from_hub("me/my-edit")
    assert isinstance(m, share.EditedModel)
    assert torch.equal(m.render([0]), reference(base, m.stack, [0]))
    # edited share of an edited model stacks the edits
    more = EditStack((UnitEdit("layer6", [0], None),))
    f2 = share.export_edited(m, more, tmp_path / "e2", previews=[])
    m2 = share.load_edited(f2)
    assert len(m2.stack) == 4 and json.loads((f2 / "config.json").read_text())["base"]["repo_id"] \
        == "org/tiny"


def test_export_on_default_and_in_memory_base(cache, default_bundle, tmp_path):
    model = core.load_model("default")
    folder = share.export_edited(model, EditStack((rank_one(model.generator),)), tmp_path / "d",
                                 previews=[0])
    assert json.loads((folder / "config.json").read_text())["base"] == {"local": "default"}
    assert torch.equal(share.load_edited(folder).render([0]),
                       reference(model, share.load_edited(folder).stack, [0]))
    ckpt = tmp_path / "x.pth"
    torch.save(make_progan().state_dict(), ckpt)
    with pytest.raises(share.ShareError, match="exists only in memory"):
        share.export_edited(core.load_model(ckpt), EditStack((rank_one(make_progan()),)),
                            tmp_path / "m")
    with pytest.raises(share.ShareError, match="edit stack is empty"):
        share.export_edited(model, EditStack(), tmp_path / "empty")


# --------------------------------------------------------------------------- wrong base, bad files
def test_edits_for_another_base_are_rejected(base, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    same_arch = core.load_model(save_bundle(make_progan(seed=5), tmp_path / "other", name="other"))
    with pytest.raises(share.ShareError, match=r"sha256 .* but 'other' has .*different model"):
        share.load_edited(folder, base=same_arch)
    assert share.load_edited(folder, base=same_arch, check=False).base is same_arch
    bigger = core.load_model(save_bundle(make_progan(sizes=(8, 16, 16, 4)), tmp_path / "big",
                                         name="big"))
    with pytest.raises(share.ShareError, match=r"different base model: kwargs"):
        share.load_edited(folder, base=bigger)
    with pytest.raises(share.ShareError, match=r"do not fit the base model 'big'.*weight is"):
        share.load_edited(folder, base=bigger, check=False)
    # a config that names another base: the base resolves but its hash differs
    cfg = json.loads((folder / "config.json").read_text())
    cfg["base_model"]["generator_sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(share.ShareError, match="made for base weights with sha256 000000000000"):
        share.load_edited(folder)


def test_nan_in_edit_file_is_rejected(base, tmp_path):
    from safetensors.torch import load_file, save_file
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    t = load_file(str(folder / "edits.safetensors"))
    key = next(k for k in t if k.endswith(".lam"))
    t[key][0, 0, 0, 0] = float("nan")
    save_file(t, str(folder / "edits.safetensors"))
    with pytest.raises(share.ShareError, match="lam holds NaN or inf"):
        share.load_edited(folder)


def test_config_problems(base, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    (folder / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(share.ShareError, match="not an edited model"):
        share.load_edited(folder)
    (folder / "config.json").unlink()
    with pytest.raises(share.ShareError, match="config.json: missing"):
        share.load_edited(folder)
    assert len(share.load_edited(folder, base=base).stack) == 3   # explicit base, no config
    with pytest.raises(share.ShareError, match="not an edited model"):
        share.load_edited(base.bundle.path)


# --------------------------------------------------------------------------- zip
def test_zip_round_trip(base, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[1])
    (folder / "notes.txt").write_text("not part of the share")
    z = share.zip_edited(folder)
    assert z == tmp_path / "e.zip"
    names = zipfile.ZipFile(z).namelist()
    assert "e/edits.json" in names and "e/previews/1_after.png" in names
    assert "e/notes.txt" not in names
    out = share.safe_unzip(z, tmp_path / "unzipped")
    assert (out / "edits.json").is_file() and (out / "previews" / "1_before.png").is_file()
    assert torch.equal(share.load_edited(z).render([0]), share.load_edited(folder).render([0]))


def _zip(tmp_path, entries, name="bad.zip"):
    """entries: [(name, bytes) or (ZipInfo, bytes)]"""
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as z:
        for n, data in entries:
            z.writestr(n, data)
    return p


@pytest.mark.parametrize("entry, pattern", [
    ("../evil.json", r"'\.\./evil\.json'.*outside the folder"),
    ("e/../../evil.json", r"outside the folder"),
    ("/etc/evil.json", r"absolute"),
    ("C:/evil.json", r"absolute or Windows"),
    ("e\\..\\evil.json", r"absolute or Windows"),
    ("symlink", r"symbolic link"),
    ("e/generator.pth", r"pickled files are never loaded"),
])
def test_unsafe_zips_are_rejected(tmp_path, entry, pattern):
    good = [("e/edits.json", b"{}")]
    if entry == "symlink":
        info = zipfile.ZipInfo("e/edits.safetensors")
        info.external_attr = (0o120777 << 16)
        p = _zip(tmp_path, good + [(info, b"/etc/passwd")])
    else:
        p = _zip(tmp_path, good + [(entry, b"x")])
    with pytest.raises(share.ShareError, match=pattern):
        share.safe_unzip(p, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.json").exists()


def test_zip_limits(tmp_path):
    big = _zip(tmp_path, [("edits.json", b"{}"), ("edits.safetensors", b"\0" * 4000)])
    with pytest.raises(share.ShareError, match="MiB uncompressed, more than"):
        share.safe_unzip(big, tmp_path / "o1", max_bytes=1000)
    many = _zip(tmp_path, [("edits.json", b"{}")] + [(f"previews/{i}.png", b"") for i in range(9)],
                "many.zip")
    with pytest.raises(share.ShareError, match="10 entries"):
        share.safe_unzip(many, tmp_path / "o2", max_files=5)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("edits.json", b"{}")
        z.writestr("edits.safetensors", b"\0" * (4 << 20))
    with pytest.raises(share.ShareError, match="zip bomb"):
        share.safe_unzip(bomb, tmp_path / "o3")
    nothing = _zip(tmp_path, [("README.md", b"hi")], "nothing.zip")
    with pytest.raises(share.ShareError, match="no edits.json"):
        share.safe_unzip(nothing, tmp_path / "o4")
    notzip = tmp_path / "x.zip"
    notzip.write_bytes(b"not a zip")
    with pytest.raises(share.ShareError, match="not a readable zip"):
        share.safe_unzip(notzip, tmp_path / "o5")


# --------------------------------------------------------------------------- merge
def test_merge_weight_edits_and_unmasked_ablation(base, tmp_path):
    g = base.generator
    stack = EditStack((rank_one(g), UnitEdit("layer4", [1, 2], None), rank_one(g, "layer5", 1),
                       UnitEdit("layer2", [0, 5], [1.5, -0.5], None, 1.0, "set")))
    folder = share.export_edited(base, stack, tmp_path / "e", previews=[])
    dest = share.merge_edited(folder, tmp_path / "merged")
    merged = core.load_model(dest)
    want = reference(base, stack, [0, 1, 2, 3])
    assert torch.allclose(merged.render([0, 1, 2, 3]), want, atol=1e-5)
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["edited_from"]["base"] == {"repo_id": "org/tiny", "revision": A}
    assert "Edits merged into these weights" in (dest / "README.md").read_text()
    assert torch.equal(g.main_weight("layer3"),                      # base untouched
                       core.load_model(tmp_path / "b0-tiny").generator.main_weight("layer3"))


def test_merge_refuses_feature_edits(base, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    with pytest.raises(share.ShareError, match=r"cannot merge: edit 0 \(unit edit at layer4, "
                                               r"masked\); edit 2 .*opacity 0.5.*change features"):
        share.merge_edited(folder, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


# --------------------------------------------------------------------------- push
def test_push_sends_one_atomic_commit(base, tmp_path, fake_api):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[0])
    (folder / ".DS_Store").write_bytes(b"junk")
    res = share.push(folder, "me/church-edit")
    (c1, rid, kw, token), (c2, rid2, ckw, ops) = fake_api.calls
    assert (c1, c2, rid, rid2) == ("create_repo", "create_commit", "me/church-edit",
                                   "me/church-edit")
    assert kw == {"repo_type": "model", "private": True, "exist_ok": True}
    assert token == "hf_test_token"
    expected = sorted((p.relative_to(folder).as_posix(), p.stat().st_size)
                      for p in folder.rglob("*") if p.is_file() and p.name != ".DS_Store")
    assert sorted(ops) == expected and res.files == expected
    assert ckw["commit_message"].startswith("Edited model")
    assert res.url == "https://huggingface.co/me/church-edit" and res.commit == "c" * 40
    fake_api.calls.clear()
    share.push(folder, "me/x", token="explicit", private=False, commit_message="m")
    assert fake_api.calls[0][2]["private"] is False and fake_api.calls[0][3] == "explicit"
    assert fake_api.calls[1][2]["commit_message"] == "m"


def test_push_refusals(base, tmp_path, monkeypatch):
    import huggingface_hub as hf
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf, "get_token", lambda: None)
    with pytest.raises(share.ShareError, match="no Hugging Face token"):
        share.push(folder, "me/x")
    # the real HfApi, offline: refused by huggingface_hub itself, reported as one HubError
    with pytest.raises(hub.HubError, match="cannot push, the Hub is switched off"):
        share.push(folder, "me/x", token="hf_x")
    with pytest.raises(share.ShareError, match="expected a model repo id"):
        share.push(folder, "me/x@main", token="hf_x")
    (folder / "weights.pth").write_bytes(b"pickle")
    with pytest.raises(share.ShareError, match="refusing to upload a pickled file"):
        share.push(folder, "me/x", token="hf_x")
    local = share.export_edited(base, sample_stack(base.generator), tmp_path / "l", previews=[],
                                base={"local": str(base.bundle.path)})
    with pytest.raises(share.ShareError, match="push the base bundle first"):
        share.push(local, "me/x", token="hf_x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hub.HubError, match="missing file config.json and generator.safetensors"):
        share.push(tmp_path / "empty", "me/x", token="hf_x")


def test_cli_push(base, tmp_path, fake_api, capsys, cli):
    main = cli
    g = base.generator
    folder = share.export_edited(base, EditStack((rank_one(g), UnitEdit("layer4", [1], None))),
                                 tmp_path / "e", previews=[])
    assert main(["push", str(folder), "me/e", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload: 4 files" in out and "edits.safetensors" in out and fake_api.calls == []
    assert main(["push", str(folder), "me/e", "--public", "--token", "t"]) == 0
    assert fake_api.calls[0][2]["private"] is False and fake_api.calls[0][3] == "t"
    fake_api.calls.clear()
    assert main(["push", str(folder), "me/merged", "--merge"]) == 0
    assert "merged the edits" in capsys.readouterr().out
    assert sorted(p for p, _ in fake_api.calls[1][3]) == ["README.md", "config.json",
                                                         "generator.safetensors"]


# --------------------------------------------------------------------------- size
def test_rank_one_share_is_kilobytes(base, tmp_path):
    folder = share.export_edited(base, EditStack((rank_one(base.generator),)), tmp_path / "e",
                                 previews=[0, 1])
    total = folder_size(folder)
    assert total < 64 * 1024, total
    assert folder_size(folder, "edits.*") < 2 * 1024


def test_stylegan2_round_trip_and_merge(tmp_path):
    from tests.conftest import make_stylegan2
    g = make_stylegan2()
    base = core.load_model(save_bundle(g, tmp_path / "sg2", name="sg2"))
    layer = base.layers[2]
    stack = EditStack((rank_one(base.generator, layer, scale=0.2),))
    folder = share.export_edited(base, stack, tmp_path / "e", previews=[])
    assert json.loads((folder / "config.json").read_text())["base"] == {
        "local": str((tmp_path / "sg2").resolve())}
    edited = share.load_edited(folder)
    want = reference(base, stack, [0, 1])
    assert torch.equal(edited.render([0, 1]), want)
    merged = core.load_model(share.merge_edited(edited, tmp_path / "merged"))
    assert torch.allclose(merged.render([0, 1]), want, atol=1e-5)
    masked = EditStack((UnitEdit(layer, [0], None),))      # no unit edits fold on StyleGAN2
    f2 = share.export_edited(base, masked, tmp_path / "e2", previews=[])
    with pytest.raises(share.ShareError, match="cannot merge"):
        share.merge_edited(f2, tmp_path / "m2")


def test_zip_from_finder_with_macosx_folder(base, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    p = tmp_path / "mac.zip"
    with zipfile.ZipFile(p, "w") as z:
        for f in folder.rglob("*"):
            z.write(f, f"my edit/{f.relative_to(folder).as_posix()}")
        z.writestr("__MACOSX/my edit/._edits.json", b"resource fork")
    out = share.safe_unzip(p, tmp_path / "out")
    assert sorted(x.name for x in out.iterdir()) == ["README.md", "config.json", "edits.json",
                                                     "edits.safetensors"]


def test_core_load_model_accepts_hub_ids(base, cache, tmp_path):
    m = core.load_model("org/tiny")
    assert torch.equal(m.render([0]), base.render([0]))
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    populate(cache, "me/edit", {p.relative_to(folder).as_posix(): p.read_bytes()
                                for p in folder.rglob("*") if p.is_file()}, commit="d" * 40)
    assert isinstance(core.load_model("me/edit"), share.EditedModel)
    with pytest.raises(hub.HubError, match="org/nope"):
        core.load_model("org/nope")


def test_core_load_model_opens_local_edited_folders(base, tmp_path):
    folder = share.export_edited(base, sample_stack(base.generator), tmp_path / "e", previews=[])
    model = core.load_model(folder)
    assert isinstance(model, share.EditedModel)
    assert torch.equal(model.render([0]), share.load_edited(folder).render([0]))
