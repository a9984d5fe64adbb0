"""Rewrite tab through the app's API (gradio_client against a local server on a tiny bundle)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import close, free_port, make_progan

pytestmark = pytest.mark.slow

LAYER = "layer4"


def _square(t, l, size=6, res=16):
    m = np.zeros((res, res), np.float32)
    m[t:t + size, l:l + size] = 1.0
    return m


class BrightnessSegmenter:
    """Stands in for the bundle's segmenter: sky where bright, tree where dark, spire between."""
    concepts = ["sky", "tree", "spire"]

    def segment(self, images):
        import torch
        m = images.mean(1)
        out = torch.full(m.shape, 2)
        out[m > 0.05], out[m < -0.05] = 0, 1
        return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import core
    from core import rewrite as rw
    from core.bundle import save_bundle
    folder = save_bundle(make_progan(), tmp_path_factory.mktemp("rewrite") / "tiny", name="tiny",
                         extra_config={"paint_layer": LAYER})
    model = core.load_model(folder)
    rw.save_key_stats(rw.collect_key_stats(model, LAYER, range(40)), rw.stats_path(model, LAYER))
    return folder


@pytest.fixture(scope="module")
def rule_file(bundle, tmp_path_factory):
    from core import rules
    rule = rules.Rule(key=[(0, _square(4, 4)), (3, _square(6, 2))], object=(1, _square(2, 8)),
                      paste=(2, _square(8, 4)), model="tiny", layer=LAYER, rank=1)
    path = tmp_path_factory.mktemp("rules") / "rule.json"
    rules.write_rule(rule, path)
    return path


@pytest.fixture(scope="module")
def app(bundle):
    from demos import build_app
    from demos.context import AppContext
    ctx = AppContext(default_source=str(bundle))
    ctx.get().segmenter = BrightnessSegmenter()
    demo = build_app(ctx)
    demo.queue(max_size=16)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(),
                            prevent_thread_lock=True, quiet=True)
    yield url
    close(demo)


def _client(url):
    from gradio_client import Client
    return Client(url, verbose=False, download_files=True)


def _pixels(gallery) -> list[np.ndarray]:
    return [np.asarray(Image.open(item["image"] if isinstance(item, dict) else item[0]).convert("RGB"))
            for item in gallery]


def _show(c, spec="0-3") -> list[np.ndarray]:
    gallery, status = c.predict(spec=spec, api_name="/rewrite_show")
    assert status.startswith("Showing")
    return _pixels(gallery)


def _kept(output) -> bool:
    """Whether an output came back as gr.skip(): the page keeps what it showed."""
    return isinstance(output, dict) and output.get("__type__") == "update"


def _warned(outputs, status: int, match: str) -> None:
    """A problem shows as a warning in the status line; every other output is kept."""
    assert outputs[status].startswith("⚠️") and re.search(match, outputs[status]), outputs[status]
    assert all(_kept(o) for i, o in enumerate(outputs) if i != status)


def test_upload_rule_executes_and_undo_restores(app, rule_file):
    from gradio_client import handle_file
    c = _client(app)
    before = _show(c)
    assert len(before) == 4 and before[0].shape == (256, 256, 3)
    out = c.predict(file=handle_file(str(rule_file)), api_name="/rewrite_rule_upload")
    gallery, history, status = out[0], out[1], out[2]
    after = _pixels(gallery)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "the rewrite changed nothing"
    assert "Applied" in status
    assert history["data"][0][1] == LAYER and history["data"][0][2] == 1
    # toggle original shows the originals, toggling back the edit
    assert all(np.array_equal(a, b) for a, b in zip(before, _pixels(c.predict(api_name="/rewrite_toggle")[0])))
    assert _pixels(c.predict(api_name="/rewrite_toggle")[0])[2].tobytes() == after[2].tobytes()
    # the edited model downloads as a small zip that reopens with the same pixels
    import core
    from demos.context import display
    path, status = c.predict(api_name="/rewrite_download")
    path = path["path"] if isinstance(path, dict) else path
    assert "Saved 1 edit(s) as" in status and os.path.getsize(path) <= 100_000
    again = [np.asarray(display(im, 256)) for im in core.load_model(path).render([0, 1, 2, 3])]
    assert all(np.array_equal(a, b) for a, b in zip(again, after))
    # download: the session's request as a rule JSON naming our model and layer
    path, status = c.predict(api_name="/rewrite_rule_download")
    saved = json.loads(open(path).read())
    assert "Saved the rule" in status
    assert saved["model"] == "tiny" and saved["layer"] == LAYER and len(saved["key"]) == 2
    # execute again from the session's request, then undo twice -> bit-for-bit originals
    c.predict(api_name="/rewrite_execute")
    c.predict(api_name="/rewrite_undo")
    undone = _pixels(c.predict(api_name="/rewrite_undo")[0])
    assert all(np.array_equal(a, b) for a, b in zip(before, undone))


def test_erase_context(app, rule_file, tmp_path):
    from gradio_client import handle_file
    from core import rules
    c = _client(app)
    before = _show(c)
    c.predict(file=handle_file(str(rule_file)), api_name="/rewrite_rule_upload")   # puts a context in the session
    c.predict(api_name="/rewrite_undo")
    gallery, history, status = c.predict(api_name="/rewrite_erase")
    assert "Erased" in status and "erase" in history["data"][0][4]
    assert any(not np.array_equal(a, b) for a, b in zip(before, _pixels(gallery)))
    saved = rules.read_rule(open(c.predict(api_name="/rewrite_rule_download")[0]).read())
    assert saved.erase and saved.object is None and len(saved.key) == 2
    # an erase rule file replays as an erase
    path = tmp_path / "erase.json"
    rules.write_rule(saved, path)
    out = c.predict(file=handle_file(str(path)), api_name="/rewrite_rule_upload")
    assert "erase" in out[1]["data"][-1][4] and len(out[1]["data"]) == 2


def test_execute_before_a_rule_exists_says_what_is_missing_and_keeps_the_gallery(app):
    c = _client(app)
    _show(c)
    # no "Error" badge over the gallery: a warning, a status line naming each missing step
    _warned(c.predict(api_name="/rewrite_execute"), 2,
            "Nothing to rewrite yet: .*'Add to context'.*'Copy'.*'Paste'.*preset")
    _warned(c.predict(api_name="/rewrite_erase"), 2, "Nothing to erase yet: .*'Add to context'")
    _warned(c.predict(spec="0-9", api_name="/rewrite_search"), 1, "[Ee]mpty context")
    _warned(c.predict(api_name="/rewrite_undo"), 2, "[Nn]othing to undo")
    _warned(c.predict(spec="5-x", api_name="/rewrite_show"), 1, "Image numbers")
    _warned(c.predict(api_name="/rewrite_rule_download"), 1, "Nothing to save yet")


def test_bad_rule_files(app, bundle, tmp_path):
    from gradio_client import handle_file
    from core import rules
    c = _client(app)
    before = _show(c)
    bad = tmp_path / "bad.json"
    bad.write_text("{\"key\": [[0, ")
    _warned(c.predict(file=handle_file(str(bad)), api_name="/rewrite_rule_upload"), 2, "malformed JSON")
    url = tmp_path / "url.json"
    url.write_text(json.dumps({"key": [[0, "data:image/png;base64,!!!"]]}))
    _warned(c.predict(file=handle_file(str(url)), api_name="/rewrite_rule_upload"), 2, "base64|PNG")
    other = tmp_path / "other.json"
    rules.write_rule(rules.Rule(key=[(0, _square(4, 4))], object=(1, _square(2, 8)),
                                paste=(2, _square(8, 4)), model="church"), other)
    _warned(c.predict(file=handle_file(str(other)), api_name="/rewrite_rule_upload"), 2, "church")
    # the session is unchanged: still nothing applied
    assert all(np.array_equal(a, b) for a, b in zip(before, _pixels(c.predict(api_name="/rewrite_toggle")[0])))
    _warned(c.predict(api_name="/rewrite_undo"), 2, "[Nn]othing to undo")


def test_clients_are_isolated(app, rule_file):
    from gradio_client import handle_file
    a, b = _client(app), _client(app)
    base = _show(b)
    _show(a)
    edited = _pixels(a.predict(file=handle_file(str(rule_file)), api_name="/rewrite_rule_upload")[0])
    assert any(not np.array_equal(x, y) for x, y in zip(base, edited))
    again = _show(b)
    assert all(np.array_equal(x, y) for x, y in zip(base, again))
    _warned(b.predict(api_name="/rewrite_undo"), 2, "[Nn]othing to undo")


def _strokes(top, left, size=96):
    """The canvas's strokes through the API: a square painted on a 256 px mask."""
    from demos.stroke_canvas import mask_url
    m = np.zeros((256, 256), bool)
    m[top:top + size, left:left + size] = True
    return mask_url(m)


def test_context_copy_paste_flow_through_the_api(app):
    c = _client(app)
    _show(c)
    canvas, caption = c.predict(n=1, api_name="/rewrite_open")
    assert "1" in caption and canvas["image"].startswith("data:image/png;base64,")
    tray, status, canvas = c.predict(strokes=_strokes(32, 32), api_name="/rewrite_add_context")
    assert len(tray) == 1 and "1 region" in status and set(canvas) == {"epoch"}   # strokes taken
    # an empty mask, or something that is not a mask, is refused in plain words
    _warned(c.predict(strokes="", api_name="/rewrite_add_context"), 1, "Empty context mask")
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="not a stroke mask"):
        c.predict(strokes="data:image/png;base64,bm90IGFuIGltYWdl", api_name="/rewrite_add_context")
    gallery, status = c.predict(api_name="/rewrite_matches")
    assert len(gallery) == 4 and "Highlighted" in status
    copied, pasted, status, _ = c.predict(strokes=_strokes(64, 64), api_name="/rewrite_copy")
    assert copied is not None and "Copied" in status
    c.predict(n=2, api_name="/rewrite_open")
    pasted, status, _ = c.predict(strokes=_strokes(128, 96), api_name="/rewrite_paste")
    assert pasted is not None and "Pasted into image #2" in status
    pasted, status = c.predict(x=4, y=5, api_name="/rewrite_paste_at")
    assert "at (4, 5)" in status
    _warned(c.predict(x=99, y=5, api_name="/rewrite_paste_at"), 1, "outside")
    gallery, history, status = c.predict(api_name="/rewrite_execute")
    assert "Rewrote" in status and len(history["data"]) == 1 and len(gallery) == 4
    # what else it changed, measured on held-out samples as the presets are
    assert re.search(r"Measured on 16 held-out samples: .*; mean change elsewhere \d\.\d{3}", status), status
    tray, status = c.predict(api_name="/rewrite_clear_context")
    assert tray == [] and "cleared" in status
    # the tiny bundle ships no presets: a clear message, nothing applied
    _warned(c.predict(name="(no presets for this model)", api_name="/rewrite_preset"), 2, "no presets")


def test_statistics_endpoints(app, bundle):
    from core.bundle import load_bundle
    shipped = {p: p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}
    c = _client(app)
    assert "40 images (shipped with the model)" in c.predict(layer=LAYER, api_name="/rewrite_stats_info")
    assert "no key statistics" in c.predict(layer="layer3", api_name="/rewrite_stats_info")
    out = c.predict(layer="layer3", samples=10, api_name="/rewrite_stats")
    assert "layer3 over 10 images" in out and "cache" in out
    assert "10 images (computed here)" in c.predict(layer="layer3", api_name="/rewrite_stats_info")
    assert "not recomputed" in c.predict(layer=LAYER, samples=10, api_name="/rewrite_stats")
    # the bundle is read-only at run time: the statistics went to the scratch folder
    assert {p: p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()} == shipped
    assert load_bundle(bundle).scratch("stats/layer3.safetensors").is_file()


def test_default_layer_and_rank_come_from_the_bundle():
    from types import SimpleNamespace

    from core.settings import MAX_RANK, model_settings

    def model(cfg):
        return SimpleNamespace(bundle=SimpleNamespace(config=cfg),
                               layers=[f"layer{i}" for i in range(1, 9)])
    s = model_settings(model({"rewrite_layer": "layer8", "rewrite_rank": 4}))
    assert (s.rewrite_layer, s.rewrite_rank) == ("layer8", 4)
    assert model_settings(model({"paint_layer": "layer6"})).rewrite_layer == "layer6"
    assert model_settings(model({})).rewrite_rank == 1
    assert model_settings(model({"rewrite_rank": MAX_RANK + 1})).rewrite_rank == 1


def test_a_context_only_rule_file_erases_as_in_the_original_app(app, tmp_path):
    """The rewriting paper's multikey files (a context, nothing to copy and paste) were its
    erase rules: uploaded, they erase."""
    from gradio_client import handle_file
    from core import rules
    c = _client(app)
    path = tmp_path / "multikey.json"
    rules.write_rule(rules.Rule(key=[(0, _square(4, 4)), (3, _square(6, 2))], layer=LAYER), path)
    out = c.predict(file=handle_file(str(path)), api_name="/rewrite_rule_upload")
    history, status = out[1], out[2]
    assert "Applied" in status and "erase" in str(history["data"][0]).lower(), (status, history)
