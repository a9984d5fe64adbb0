"""Watermark tab through the app's API (gradio_client against a local server on a tiny bundle)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import close, launch, make_progan

pytestmark = pytest.mark.slow

CONCEPTS = ["sky", "cloud", "grass", "tree", "wall", "window", "door", "roof", "spire", "dome",
            "watermark"]


def fake_catalog(causal: bool = True) -> dict:
    """layer4 of the tiny ProGAN (8 units at 8x8): watermark units 5-7 (causal order 6, 5, 7)."""
    units = [{"unit": u, "label": lab, "iou": 0.2, "quantile_99": 1.0 + u}
             for u, lab in enumerate(["tree", "tree", "tree", "grass", "dome", "watermark",
                                      "watermark", "watermark"])]
    cat = {"layer": "layer4", "units": units, "concept_list": CONCEPTS,
           "concepts": {"tree": [{"unit": 0, "iou": 0.3}], "grass": [{"unit": 3, "iou": 0.2}],
                        "watermark": [{"unit": 5, "iou": 0.2}, {"unit": 6, "iou": 0.1},
                                      {"unit": 7, "iou": 0.05}]}}
    if causal:
        cat["causal"] = {"watermark": [{"unit": 6, "effect": 0.05}, {"unit": 5, "effect": 0.03},
                                       {"unit": 7, "effect": 0.01}]}
    return cat


class BrightSegmenter:
    """A fake segmenter: pixels brighter than ``threshold`` are 'watermark', the rest 'sky'
    (a random ToySegNet labels nearly every pixel alike, which makes no useful test)."""
    concepts = CONCEPTS
    palette = [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(len(CONCEPTS))]

    def __init__(self, threshold: float):
        self.threshold = threshold

    def concept_index(self, concept):
        return CONCEPTS.index(concept)

    def segment(self, images):
        import torch
        bright = images.float().mean(1)
        return torch.where(bright > self.threshold, CONCEPTS.index("watermark"), 0)


@pytest.fixture(scope="module")
def app_bundle(tmp_path_factory):
    """A tiny ProGAN (16 px, paint layer layer4) with a catalog (no segmenter file: the app
    context below injects BrightSegmenter)."""
    from core.bundle import save_bundle
    folder = save_bundle(make_progan(), tmp_path_factory.mktemp("wm") / "tiny", name="tiny",
                         extra_config={"paint_layer": "layer4"})
    (folder / "catalog").mkdir()
    (folder / "catalog" / "layer4.json").write_text(json.dumps(fake_catalog()))
    return folder


@pytest.fixture(scope="module")
def segmenter(app_bundle):
    """Threshold chosen so that about 40% of samples 0-399 have >= 2 bright pixels (>= 0.5%)."""
    import core
    images = core.load_model(app_bundle).render("0-399", batch_size=100)
    second = images.float().mean(1).flatten(1).sort(dim=1, descending=True).values[:, 1]
    return BrightSegmenter(float(second.quantile(0.6)))


def make_context(app_bundle, segmenter):
    from demos.context import AppContext

    class Context(AppContext):
        def get(self, model_id=None):
            loaded = super().get(model_id)
            loaded.segmenter = segmenter
            return loaded
    return Context(default_source=str(app_bundle))


@pytest.fixture(scope="module")
def app(app_bundle, segmenter):
    from demos import build_app
    demo = build_app(make_context(app_bundle, segmenter))
    yield launch(demo)
    close(demo)


def _client(url):
    from gradio_client import Client
    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})


@pytest.fixture(scope="module")
def client(app):
    return _client(app)


def _img(out) -> np.ndarray:
    path = out["path"] if isinstance(out, dict) else out
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _rows(table) -> list:
    return table["data"] if isinstance(table, dict) else table


def test_ranking_table_prefers_causal_and_falls_back_to_iou():
    from demos.watermark import ranking_table
    table, which = ranking_table(fake_catalog())
    assert which.startswith("causal effect") and table["unit"].tolist() == [6, 5, 7]
    table, which = ranking_table(fake_catalog(causal=False))
    assert which == "IoU" and table["unit"].tolist() == [5, 6, 7]


def test_ranking_table_shows_the_score_it_is_ranked_by():
    """With collaterals the units go by effect per collateral, and that is the score shown."""
    from demos.watermark import ranking_table
    cat = fake_catalog()
    cat["causal"]["watermark"] = [{"unit": 6, "effect": 0.05, "collateral": 0.09},
                                  {"unit": 5, "effect": 0.03, "collateral": 0.01},
                                  {"unit": 7, "effect": 0.01, "collateral": 0.04}]
    table, which = ranking_table(cat)
    assert which == "causal effect per collateral" and table["unit"].tolist() == [5, 6, 7]
    assert table["score"].tolist() == sorted(table["score"].tolist(), reverse=True)


def test_units_find_and_remove(client, app_bundle):
    mid = str(app_bundle)
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/watermark_find", "/watermark_remove", "/watermark_init",
            "/watermark_mark_load", "/watermark_mark_pick"} <= names

    table, note, n_units = client.predict(api_name="/watermark_init")
    assert [r[1] for r in _rows(table)] == [6, 5, 7] and "causal effect" in note
    assert n_units["maximum"] == 3             # the slider offers the 3 units listed

    gallery, text, first = client.predict(mid, api_name="/watermark_find")
    numbers = [int(g["caption"].split(" ")[0][1:]) for g in gallery]
    assert numbers and first == numbers[0] and "samples (0-399) have a watermark" in text
    assert all(0 <= n < 400 for n in numbers)
    # watermark pixels are outlined by default; the checkbox turns that off (same samples)
    plain, _, _ = client.predict(mid, False, api_name="/watermark_find")
    assert [g["caption"] for g in plain] == [g["caption"] for g in gallery]
    outlined, bare = _img(gallery[0]["image"]), _img(plain[0]["image"])
    drawn = (outlined != bare).any(-1)
    assert drawn.any() and (outlined[drawn] == (255, 0, 255)).all()

    compare, before, after, text = client.predict(mid, 2, "catalog ranking",
                                                  api_name="/watermark_remove")
    assert all(0 <= float(r.rstrip("%")) <= 100 for r in (before, after))
    assert "6, 5" in text and "→" in text and "100000-100199" in text
    assert ("worse" in text) == (float(after.rstrip("%")) > float(before.rstrip("%")))
    edited = _img(compare)
    path, share = client.predict(api_name="/watermark_download")
    path = path["path"] if isinstance(path, dict) else path
    import core
    assert "Saved 1 edit(s)" in share and list(core.load_model(path).stack[0].units) == [6, 5]

    # no units: nothing changes, and the rate is the same
    compare, before0, after0, text = client.predict(mid, 0, "catalog ranking",
                                                    api_name="/watermark_remove")
    assert before0 == before == after0
    unchanged = _img(compare)
    assert unchanged.shape == edited.shape and not np.array_equal(unchanged, edited)


def test_rate_matches_core(app_bundle, segmenter):
    """The tab's live rate is core.paint.watermark_rate over the held-out samples."""
    import core
    from core.edits import EditStack
    from core.paint import remove_units_edit, watermark_rate
    from demos.watermark import RATE_NUMBERS, rate
    ctx = make_context(app_bundle, segmenter)
    model, seg = ctx.model(), segmenter
    wm = seg.concepts.index("watermark")
    stack = EditStack().push(remove_units_edit("layer4", [6, 5]))
    images = core.edits.Renderer(model).render_numbers(RATE_NUMBERS, stack)
    expected = watermark_rate(seg.segment(images), wm)
    assert rate(ctx.get().memo, model, ctx.renderer(), seg, wm, stack, (6, 5)) == pytest.approx(expected)


def _canvas_img(value) -> np.ndarray:
    """The image a canvas answer shows (a PNG data URL)."""
    import base64
    import io
    data = base64.b64decode(value["image"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_marked_region_units(app, app_bundle, segmenter):
    from gradio_client.exceptions import AppError
    from demos.stroke_canvas import mask_url
    mid = str(app_bundle)
    c = _client(app)
    compare, before, after, text = c.predict(mid, 3, "marked region", api_name="/watermark_remove")
    assert "No marked units yet" in text and compare == {"__type__": "update"}
    bg = _canvas_img(c.predict(mid, 7, False, api_name="/watermark_mark_load"))
    assert bg.shape == (512, 512, 3)
    # with outlines on, the sample's watermark pixels are outlined: there is something to mark
    import core
    from core.images import outline
    from demos.watermark import OUTLINE
    image = core.load_model(app_bundle).render([7])
    marked = segmenter.segment(image)[0].numpy() == CONCEPTS.index("watermark")
    assert marked.any()
    outlined = _canvas_img(c.predict(mid, 7, True, api_name="/watermark_mark_load"))
    expected = np.asarray(outline(Image.fromarray(bg.astype(np.uint8)), marked, OUTLINE)).astype(np.int16)
    assert np.array_equal(outlined, expected) and not np.array_equal(outlined, bg)
    strokes = np.zeros((256, 256), bool)
    strokes[224:, 224:] = True                  # bottom-right corner
    with pytest.raises(AppError, match="not a stroke mask"):
        c.predict(mid, 7, "data:image/png;base64,bm90IGFuIGltYWdl", api_name="/watermark_mark_pick")
    table, note, source, n_units = c.predict(mid, 7, mask_url(strokes), api_name="/watermark_mark_pick")
    units = [r[1] for r in _rows(table)]
    assert sorted(units) == list(range(8)) and source == "marked region" and "#7" in note
    assert n_units["maximum"] == 8
    # the scores are the mean activation in the marked cells relative to quantile_99
    from demos.watermark import marked_units
    from core.paint import load_catalog
    model = core.load_model(app_bundle)
    mask = np.zeros((512, 512), bool)
    mask[448:, 448:] = True
    expect_units, scores = marked_units(model, load_catalog(model, "layer4"), "layer4", 7, mask)
    assert units == expect_units
    feats = model.features(model.sample_z([7]), "layer4")[0]
    u = expect_units[0]
    assert scores[0] == pytest.approx(float(feats[u, 7, 7]) / (1.0 + u), rel=1e-5)
    compare, before, after, text = c.predict(mid, 2, "marked region",
                                             api_name="/watermark_remove")
    assert f"{units[0]}, {units[1]}" in text and "marked region" in text
    # the slider now offers the 8 marked units; the catalog ranking lists 3, and says so
    _, _, _, text = c.predict(mid, 5, "catalog ranking", api_name="/watermark_remove")
    assert "asked for 5; only 3 are listed" in text


def test_before_after_puts_each_sample_above_itself():
    """Rows of up to 6 samples, each followed by the same samples after the edit (same columns)."""
    from demos.watermark import _before_after
    before = [np.full((128, 128, 3), 10 * i, np.uint8) for i in range(8)]
    after = [np.full((128, 128, 3), 10 * i + 5, np.uint8) for i in range(8)]
    img = _before_after(before, after, list(range(100, 108)))
    tile_tops = [2 + k * (img.shape[0] - 2) // 4 for k in range(4)]          # 4 rows: b, a, b, a
    centre = [[int(img[t + 64, 2 + c * 130 + 64, 0]) for c in range(6)] for t in tile_tops]
    assert centre[0] == [0, 10, 20, 30, 40, 50] and centre[1] == [5, 15, 25, 35, 45, 55]
    assert centre[2][:2] == [60, 70] and centre[3][:2] == [65, 75] and centre[2][2:] == [255] * 4
