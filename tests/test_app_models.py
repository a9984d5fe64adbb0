"""The model picker through the app's API: a known StyleGAN2 from a pre-populated HF cache with
the Hub switched off opens in every tab; bad sources are one-line warnings and the app stays up."""
from __future__ import annotations

import pytest

from conftest import close, launch, make_progan
from tests.test_hub import folder_files, populate
from tests.test_hub_segmenter import tiny_segformer
from tests.test_known import offline_with_a_known_stylegan2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from core.bundle import save_bundle
    tmp = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        offline_with_a_known_stylegan2(mp, tmp)
        other = save_bundle(make_progan(seed=5), tmp / "other", name="other")
        populate(tmp / "hf", "org/other", {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()})
        default = save_bundle(make_progan(), tmp / "tiny", name="tiny")
        tiny_segformer(tmp / "seg")
        populate(tmp / "hf", "org/seg", folder_files(tmp / "seg"))
        mp.setenv("PWN_SEGMENTER", "org/seg")
        yield tmp, default


@pytest.fixture(scope="module")
def client(setup):
    from gradio_client import Client

    from demos import build_app, models
    from demos.context import AppContext
    tmp, default = setup
    ctx = AppContext(default_source=str(default))
    labels = dict((v, k) for k, v in models.choices(ctx))
    assert labels["tiny-sg2"] == "tiny — cached" and labels["org/other"] == "org/other — cached"
    assert labels[str(default)] == "tiny (open)"
    demo = build_app(ctx)
    yield Client(launch(demo), verbose=False, download_files=True)
    close(demo)


def test_a_known_model_opens_offline_and_renders_in_explore(client):
    status, picker, *tab_ids = client.predict("tiny-sg2", api_name="/model_load")
    assert status.startswith("✅ **tiny-sg2** (stylegan2, 16 px) is open in every tab")
    assert "no segmenter" in status
    gallery, status = client.predict("tiny-sg2", "0-2", api_name="/explore_show")
    assert [item["caption"] for item in gallery] == ["#0", "#1", "#2"] and status == ""


def test_a_cached_hub_bundle_opens_by_its_id(client):
    status, *_ = client.predict("org/other", api_name="/model_load")
    assert status.startswith("✅ **other** (progan, 16 px)")


@pytest.mark.parametrize("source, reason", [
    ("org/nope", "org/nope is not in the local Hugging Face cache"),
    ("not a model", "is not a model this app opens"),
    ("/etc", "is not a model this app opens"),
    ("", "Pick a model"),
])
def test_bad_sources_are_one_line_warnings(client, source, reason):
    status, picker, *tab_ids = client.predict(source, api_name="/model_load")
    assert status.startswith("⚠️") and reason in status and "\n" not in status
    assert all(isinstance(t, dict) and t.get("__type__") == "update" for t in tab_ids)
    gallery, status = client.predict("tiny-sg2", "0", api_name="/explore_show")   # still up
    assert status == ""


def test_a_model_without_segmenter_is_dissected_with_the_scene_segmenter(client, setup):
    import core
    client.predict("tiny-sg2", api_name="/model_load")
    status = client.predict("tiny-sg2", "layer4", 100, api_name="/dissect_run")
    assert status.startswith("Dissected `layer4` over 100 images"), status
    gallery, summary, *_ = client.predict("tiny-sg2", "layer4", "all", api_name="/dissect_units")
    assert "computed here, 100 samples, segmenter org/seg" in summary and gallery
    model = core.load_model("tiny-sg2")
    assert (model.bundle.scratch("catalog-org--seg") / "layer4.json").is_file()


def _edited_zip(default, tmp_path) -> str:
    import core
    from core.edits import EditStack, UnitEdit
    from demos.sharing import edited_model_zip
    model = core.load_model(default)
    stack = EditStack().push(UnitEdit("layer2", [0, 1], label="units 0,1 off"))
    return edited_model_zip(model, stack, [0], "test")


def test_an_uploaded_edited_model_opens_with_its_edits(client, setup, tmp_path):
    import numpy as np
    from gradio_client import handle_file
    from PIL import Image

    import core
    _, default = setup
    path = _edited_zip(default, tmp_path)
    status, picker, *tab_ids = client.predict(handle_file(path), api_name="/model_upload")
    assert "with 1 edit(s): units 0,1 off" in status, status
    source = tab_ids[0]["value"] if isinstance(tab_ids[0], dict) else tab_ids[0]
    gallery, _ = client.predict(source, "0", api_name="/explore_show")
    shown = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    want = np.asarray(core.images.to_pil(core.load_model(path).render([0])[0]).convert("RGB"))
    assert np.array_equal(shown[::shown.shape[0] // want.shape[0], ::shown.shape[1] // want.shape[1]], want)


@pytest.mark.parametrize("kind, reason", [
    ("empty", "is empty (0 bytes)"),
    ("not zip", "Invalid file type"),       # refused by Gradio before our handler
    ("garbage", "not a readable zip file"),
    ("traversal", "refusing entry '../evil.json'"),
    ("pickle", "pickled files are never loaded"),
    ("bomb", "compressed"),
])
def test_hostile_uploads_are_refused_plainly(client, tmp_path, kind, reason):
    import zipfile

    from gradio_client import handle_file
    f = tmp_path / ("x.txt" if kind == "not zip" else "x.zip")
    if kind == "empty":
        f.write_bytes(b"")
    elif kind in ("not zip", "garbage"):
        f.write_bytes(b"not a zip at all")
    else:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            if kind == "traversal":
                z.writestr("../evil.json", "{}")
            elif kind == "pickle":
                z.writestr("edits.pt", b"\x80\x04K\x01.")
            else:
                z.writestr("config.json", "{}")
                z.writestr("edits.safetensors", b"\0" * 20_000_000)
    if kind == "not zip":
        from gradio_client.exceptions import AppError
        with pytest.raises(AppError, match=reason):
            client.predict(handle_file(str(f)), api_name="/model_upload")
    else:
        status, picker, *tab_ids = client.predict(handle_file(str(f)), api_name="/model_upload")
        assert status.startswith("⚠️") and reason in status and "\n" not in status, status
        assert "/" not in status.split(":", 1)[1].replace("../", ""), status    # no server path
    gallery, status = client.predict("tiny-sg2", "0", api_name="/explore_show")   # still up
    assert status == ""
