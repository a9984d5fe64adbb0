"""Paint tab through the app's API (gradio_client against a local server on a tiny bundle)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import close, launch, make_progan

pytestmark = pytest.mark.slow

CONCEPTS = ["sky", "cloud", "grass", "tree", "wall", "window", "door", "roof", "spire", "dome",
            "watermark"]
SIZE = 512                      # masks are sent, and outputs compared, at 512 px (32x the 16-px images)


def fake_catalog() -> dict:
    """layer4 of the tiny ProGAN has 8 units at 8x8: tree 0-2, grass 3, dome 4, watermark 5-7;
    'sky' has units but none interpretable (IoU 0.01), so it is not offered."""
    units = [{"unit": u, "label": lab, "iou": 0.2, "quantile_99": 3.0 + 0.1 * u}
             for u, lab in enumerate(["tree", "tree", "tree", "grass", "dome", "watermark",
                                      "watermark", "watermark"])]
    return {"layer": "layer4", "units": units, "concept_list": CONCEPTS,
            "concepts": {"tree": [{"unit": 1, "iou": 0.2}, {"unit": 0, "iou": 0.3},
                                  {"unit": 2, "iou": 0.1}],
                         "grass": [{"unit": 3, "iou": 0.2}],
                         "dome": [{"unit": 4, "iou": 0.2}],
                         "sky": [{"unit": 3, "iou": 0.01}],
                         "watermark": [{"unit": 5, "iou": 0.2}, {"unit": 6, "iou": 0.1},
                                       {"unit": 7, "iou": 0.05}]},
            "causal": {"watermark": [{"unit": 6, "effect": 0.05}, {"unit": 5, "effect": 0.03},
                                     {"unit": 7, "effect": 0.01}]}}


def make_app_bundle(folder):
    """A tiny ProGAN bundle (16 px, paint layer layer4) + a random 11-class ToySegNet + catalog."""
    import torch

    from core.bundle import save_bundle
    from core.segmenter import Segmenter, ToySegNet, save_segmenter
    folder = save_bundle(make_progan(), folder, name="tiny", extra_config={"paint_layer": "layer4"})
    torch.manual_seed(0)
    palette = [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(len(CONCEPTS))]
    cfg = {"architecture": "toyseg", "concepts": CONCEPTS, "kwargs": {"width": 4},
           "palette": palette}
    save_segmenter(Segmenter(ToySegNet(len(CONCEPTS), width=4), CONCEPTS, palette, cfg), folder)
    (folder / "catalog").mkdir()
    (folder / "catalog" / "layer4.json").write_text(json.dumps(fake_catalog()))
    return folder


@pytest.fixture(scope="module")
def app_bundle(tmp_path_factory):
    return make_app_bundle(tmp_path_factory.mktemp("paint") / "tiny")


@pytest.fixture(scope="module")
def app(app_bundle):
    from demos import build_app
    from demos.context import AppContext
    demo = build_app(AppContext(default_source=str(app_bundle)))
    yield launch(demo)
    close(demo)


def _client(url):
    """A client that does not download outputs: the server runs in this process, so output
    files are read from their local paths (much faster on a busy machine)."""
    from gradio_client import Client
    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})


@pytest.fixture(scope="module")
def client(app):
    return _client(app)


def _mask(stroke=None) -> str:
    """A brush canvas's value: an opaque rectangle ``stroke = (y0, y1, x0, x1)`` at SIZE px as
    a PNG data URL ("" = nothing painted)."""
    from demos.stroke_canvas import mask_url
    if stroke is None:
        return ""
    m = np.zeros((SIZE, SIZE), bool)
    y0, y1, x0, x1 = stroke
    m[y0:y1, x0:x1] = True
    return mask_url(m)


def _img(out) -> np.ndarray:
    """An output image (a file, or the canvas's data URL) scaled to SIZE: results come at the
    model's size."""
    import base64
    import io
    if isinstance(out, str) and out.startswith("data:"):
        out = io.BytesIO(base64.b64decode(out.split(",", 1)[1]))
    elif isinstance(out, dict):
        out = out["path"]
    im = Image.open(out).convert("RGB")
    return np.asarray(im.resize((SIZE, SIZE), Image.NEAREST)).astype(np.int16)


def _shown(canvas) -> str:
    """The image a canvas update shows (a data URL)."""
    return canvas["image"]


def _rows(table) -> list:
    return table["data"] if isinstance(table, dict) else table


def test_concepts_offered_are_those_with_units(app_bundle):
    from demos.brush import paintable_concepts
    assert paintable_concepts(fake_catalog()) == ["tree", "grass", "dome"]
    assert paintable_concepts(None)[:2] == ["tree", "grass"]      # no catalog yet: fallback list


def test_endpoints_are_named(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/paint_load", "/paint_apply", "/paint_stroke", "/paint_undo", "/paint_reset",
            "/paint_random", "/paint_pick", "/paint_init", "/paint_concept"} <= names


def test_paint_stroke_changes_inside_only_and_undo_restores(client, app_bundle):
    mid = str(app_bundle)
    number, editor, compare, original, table, info = client.predict(mid, 3, api_name="/paint_load")
    assert number == 3 and _rows(table) == [] and "Image #3" in info
    assert _shown(editor).startswith("data:image/png;base64,")
    base = _img(original)
    # the result comes at the model's own size (the browser scales it up, pixelated)
    assert Image.open(original["path"] if isinstance(original, dict) else original).size == (16, 16)

    # a 'tree' stroke covering feature cells (0..1, 0..1)
    out = client.predict(_mask((40, 100, 40, 100)), "tree", "Draw", 10,
                         api_name="/paint_apply")
    number, editor, compare, result, table, info = out
    painted = _img(result)
    diff = np.abs(painted - base).sum(-1)
    assert diff[40:100, 40:100].mean() > 1.0                 # the stroke region changed
    # a change at the 8x8 layer reaches at most ~2 cells further: the far half is untouched
    assert diff[256:, :].max() == 0 and diff[:, 256:].max() == 0
    rows = _rows(table)
    assert len(rows) == 1
    assert rows[0][2:4] == ["tree", "draw"] and rows[0][4] == "0, 1, 2" and rows[0][5] == 4
    assert "draw tree" in info and "0, 1, 2" in info
    assert np.array_equal(_img(compare[0]), base) and np.array_equal(_img(compare[1]), painted)
    assert np.array_equal(_img(_shown(editor)), painted)   # strokes land on the result

    # a second stroke (remove dome) then undo twice: bit-for-bit the original
    out = client.predict(_mask((300, 400, 300, 400)), "dome", "Remove", 5,
                         api_name="/paint_apply")
    assert len(_rows(out[4])) == 2 and _rows(out[4])[1][2:4] == ["dome", "remove"]
    out = client.predict(api_name="/paint_undo")
    assert len(_rows(out[4])) == 1 and np.array_equal(_img(out[3]), painted)
    out = client.predict(api_name="/paint_undo")
    assert _rows(out[4]) == [] and np.array_equal(_img(out[3]), base)


def test_empty_mask_changes_nothing_and_no_error(client, app_bundle):
    mid = str(app_bundle)
    out = client.predict(mid, 5, api_name="/paint_load")
    base = _img(out[3])
    out = client.predict(_mask((10, 60, 10, 60)), "tree", "Draw", 10, api_name="/paint_apply")
    painted = _img(out[3])
    assert not np.array_equal(painted, base)
    out = client.predict(_mask(None), "tree", "Draw", 10, api_name="/paint_apply")
    assert len(_rows(out[4])) == 1 and np.array_equal(_img(out[3]), painted)
    # the live per-stroke endpoint stays silent on an empty mask, but answers the canvas (a
    # fresh epoch), which waits for that answer before it sends the next strokes
    out = client.predict(_mask(None), "tree", "Draw", 10, True, api_name="/paint_stroke")
    assert out[1]["epoch"] > 0 and "image" not in out[1]
    out = client.predict(api_name="/paint_reset")
    assert _rows(out[4]) == [] and np.array_equal(_img(out[3]), base)


def test_live_stroke_endpoint_applies(client, app_bundle):
    client.predict(str(app_bundle), 6, api_name="/paint_load")
    out = client.predict(_mask((0, 30, 0, 30)), "grass", "Draw", 3, True,
                         api_name="/paint_stroke")
    assert _rows(out[4])[0][2] == "grass" and _rows(out[4])[0][4] == "3"   # grass has 1 unit
    assert "only 1 unit" in out[5]
    # a live stroke answers the canvas at once; the before/after and the result wait until the
    # painter pauses (the canvas's "settled" event), then show what the canvas shows
    assert out[2] == {"__type__": "update"} and out[3] == {"__type__": "update"}
    compare, result = client.predict(api_name="/paint_settled")
    assert np.array_equal(_img(result), _img(_shown(out[1])))
    assert np.array_equal(_img(compare[1]), _img(result))
    out = client.predict(api_name="/paint_undo")
    assert _rows(out[4]) == []
    out = client.predict(_mask((0, 30, 0, 30)), "tree", "Draw", 3, False,
                         api_name="/paint_stroke")                          # live off: skipped
    assert out[1]["epoch"] > 0                                              # but answered
    assert _rows(client.predict(api_name="/paint_undo")[4]) == []



def test_a_fresh_session_paints_on_the_image_the_tab_opens_on(app):
    """The tab is built showing its first suggestion (no event needed to show it): a stroke from
    a fresh session lands on that image."""
    from demos.paint import SUGGESTIONS
    out = _client(app).predict(_mask((0, 30, 0, 30)), "tree", "Draw", 3, True,
                               api_name="/paint_stroke")
    assert out[0] == SUGGESTIONS[0] and out[1]["image"].startswith("data:image/png")
    assert [r[2:4] for r in _rows(out[4])] == [["tree", "draw"]]


def test_concept_switch_applies_waiting_strokes_with_their_concept(client, app_bundle):
    """Strokes drawn with "apply after every stroke" off wait in the editor; picking another
    concept applies them with the concept they were drawn with, and only then switches."""
    client.predict(str(app_bundle), 8, api_name="/paint_load")
    # nothing waiting: only the brush changes, no edit is added
    client.predict(_mask(None), "tree", "Draw", 10, api_name="/paint_concept")
    out = client.predict(_mask((0, 30, 0, 30)), "dome", "Draw", 10,
                         api_name="/paint_concept")
    assert [r[2:4] for r in _rows(out[4])] == [["tree", "draw"]]
    out = client.predict(_mask((300, 400, 300, 400)), "grass", "Remove", 10,
                         api_name="/paint_concept")
    assert [r[2:4] for r in _rows(out[4])] == [["tree", "draw"], ["dome", "remove"]]
    client.predict(api_name="/paint_reset")


def test_unknown_concept_and_unreadable_masks_are_refused_plainly(client, app_bundle):
    import base64

    from gradio_client.exceptions import AppError
    client.predict(str(app_bundle), 8, api_name="/paint_load")
    with pytest.raises(AppError, match="unicorn"):
        client.predict(_mask((0, 30, 0, 30)), "unicorn", "Draw", 10, api_name="/paint_apply")
    png = base64.b64decode(_mask((0, 30, 0, 30)).split(",", 1)[1])
    for bad in ("not a mask at all", "data:image/png;base64,!!!!",
                "data:image/png;base64," + base64.b64encode(png[:40]).decode(),
                "data:image/png;base64," + base64.b64encode(b"GIF89a nonsense").decode()):
        with pytest.raises(AppError, match="not a stroke mask"):
            client.predict(bad, "tree", "Draw", 10, api_name="/paint_apply")
    client.predict(api_name="/paint_reset")


def test_download_edited_model_reopens_bit_identical(client, app_bundle, tmp_path):
    """The Paint session's edits download as one small zip that core.load_model reopens and
    renders exactly as the app showed them."""
    from pathlib import Path

    import core
    from demos.context import display
    client.predict(str(app_bundle), 4, api_name="/paint_load")
    path, status = client.predict(api_name="/paint_download")
    assert status.startswith("⚠️") and "No edits yet" in status
    client.predict(_mask((40, 100, 40, 100)), "tree", "Draw", 10, api_name="/paint_apply")
    out = client.predict(_mask((300, 400, 300, 400)), "dome", "Remove", 5,
                         api_name="/paint_apply")
    painted = _img(out[3])
    path, status = client.predict(api_name="/paint_download")
    path = Path(path["path"] if isinstance(path, dict) else path)
    assert path.suffix == ".zip" and path.stat().st_size <= 100_000
    assert status.startswith("Saved 2 edit(s) as **")
    edited = core.load_model(path)
    again = np.asarray(display(edited.render([4])[0])).astype(np.int16)
    assert np.array_equal(again, painted)
    # pushing: the visitor's own token only (never the server's HF_TOKEN), private by default
    from tests.test_hub import FakeApi
    import huggingface_hub as hf
    with pytest.MonkeyPatch.context() as mp:
        FakeApi.calls = []
        mp.setattr(hf, "HfApi", FakeApi)
        mp.setenv("HF_TOKEN", "hf_server_token")
        mp.setattr(core.paths, "DEFAULT_BUNDLE", Path(app_bundle))   # a base others have too
        status = client.predict("me/painted", "", True, api_name="/paint_push")
        assert "nothing was sent" in status and FakeApi.calls == []
        status = client.predict("not a repo", "hf_visitor", True, api_name="/paint_push")
        assert status.startswith("⚠️ Not pushed") and FakeApi.calls == []
        status = client.predict("me/painted", "hf_visitor", True, api_name="/paint_push")
        assert status.startswith("Pushed 2 edit(s) to **[me/painted]"), status
        (_, rid, kw, token), (_, _, ckw, ops) = FakeApi.calls
        assert rid == "me/painted" and kw["private"] is True and token == "hf_visitor"
        names = {p for p, _ in ops}
        assert {"config.json", "edits.json", "README.md"} <= names and sum(n for _, n in ops) <= 100_000
    client.predict(api_name="/paint_reset")


def test_strength_out_of_range_is_refused_clearly(client, app_bundle):
    """Gradio's slider refuses values outside 1..30 before our function runs (which would
    otherwise clamp them); the message says why and the session is unchanged."""
    from gradio_client.exceptions import AppError
    client.predict(str(app_bundle), 7, api_name="/paint_load")
    with pytest.raises(AppError, match="greater than maximum value 30"):
        client.predict(_mask((0, 64, 0, 64)), "tree", "Draw", 500, api_name="/paint_apply")
    out = client.predict(_mask((0, 64, 0, 64)), "tree", "Draw", 30, api_name="/paint_apply")
    assert [r[4] for r in _rows(out[4])] == ["0, 1, 2"]         # tree has only 3 units
    assert "only 3 unit" in out[5]
    client.predict(api_name="/paint_reset")


def test_errors_are_clear(app, app_bundle):
    from gradio_client.exceptions import AppError
    fresh = _client(app)
    with pytest.raises(AppError, match="Image numbers go from 0"):
        fresh.predict(str(app_bundle), 10**8, api_name="/paint_load")


def test_sessions_are_isolated(app, app_bundle):
    a, b = _client(app), _client(app)
    mid = str(app_bundle)
    base_a = _img(a.predict(mid, 9, api_name="/paint_load")[3])
    base_b = _img(b.predict(mid, 9, api_name="/paint_load")[3])
    assert np.array_equal(base_a, base_b)
    out_a = a.predict(_mask((0, 128, 0, 128)), "tree", "Draw", 10, api_name="/paint_apply")
    assert len(_rows(out_a[4])) == 1
    # b's stack is still empty: undo says so and b's image is unchanged
    out_b = b.predict(api_name="/paint_undo")
    assert _rows(out_b[4]) == [] and np.array_equal(_img(out_b[3]), base_b)
    out_b = b.predict(_mask((300, 400, 300, 400)), "dome", "Remove", 10,
                      api_name="/paint_apply")
    assert len(_rows(out_b[4])) == 1 and _rows(out_b[4])[0][2] == "dome"
    out_a = a.predict(api_name="/paint_undo")
    assert _rows(out_a[4]) == [] and np.array_equal(_img(out_a[3]), base_a)


def test_init_and_suggestions(client):
    out = client.predict(0, api_name="/paint_init")    # the model: the page's (a State)
    number, gallery, problem = out[0], out[6], out[7]
    assert number == 0 and problem == ""
    assert [g["caption"] for g in gallery][:3] == ["#0", "#1", "#2"]


def test_painting_note_reports_the_measured_rises_best_first():
    from types import SimpleNamespace

    from demos.paint import painting_note
    metrics = {"interventions": {"n_images": 200, "insertion_rise": {"door": 0.02, "tree": 0.39,
                                                                     "dome": None}}}
    model = SimpleNamespace(bundle=SimpleNamespace(config={"metrics": metrics}))
    note = painting_note(model)
    assert "200 held-out samples" in note and note.endswith("tree +0.39, door +0.02.")
    assert painting_note(SimpleNamespace(bundle=SimpleNamespace(config={}))) == ""
    assert painting_note(SimpleNamespace()) == ""
