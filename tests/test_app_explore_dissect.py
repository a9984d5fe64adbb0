"""Explore and Dissect tabs through the app's API (gradio_client against a local server)."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from conftest import close, free_port, make_progan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_bundle(tmp_path_factory):
    """A tiny ProGAN bundle with a (random) segmenter and a catalog for layer2."""
    import core
    from core.bundle import save_bundle
    from core.dissect import dissect, save_catalog
    from core.segmenter import Segmenter, ToySegNet, save_segmenter
    import torch

    folder = save_bundle(make_progan(), tmp_path_factory.mktemp("b") / "tiny", name="tiny",
                         extra_config={"paint_layer": "layer2"})
    torch.manual_seed(0)
    concepts = ["sky", "tree", "wall"]
    seg = Segmenter(ToySegNet(len(concepts), width=4), concepts, [[0, 0, 255], [0, 255, 0], [200, 100, 0]],
                    {"architecture": "toyseg", "concepts": concepts, "kwargs": {"width": 4},
                     "palette": [[0, 0, 255], [0, 255, 0], [200, 100, 0]]})
    save_segmenter(seg, folder)
    model = core.load_model(folder)
    save_catalog(dissect(model, seg, "layer2", range(40), batch_size=20), model.bundle.catalog_path("layer2"))
    return folder


@pytest.fixture(scope="module")
def served(app_bundle):
    """(demo, url): the app on the tiny bundle, launched as app.py launches it."""
    from demos import build_app
    from demos.context import AppContext
    from demos.settings import launch_options
    demo = build_app(AppContext(default_source=str(app_bundle)))
    demo.queue(max_size=16)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, **launch_options())
    yield demo, url
    close(demo)


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client
    return Client(served[1], verbose=False, download_files=True)


def test_explore_show_renders_requested_images(client, app_bundle):
    gallery, status = client.predict(str(app_bundle), "3-5", api_name="/explore_show")  # State is not returned
    assert [item["caption"] for item in gallery] == ["#3", "#4", "#5"] and status == ""
    first = np.asarray(Image.open(gallery[0]["image"]))
    import core
    size = core.load_model(app_bundle).resolution        # sent at the model's size: the browser scales
    assert first.shape[:2] == (size, size)


def test_explore_bad_numbers_are_a_clear_message_and_keep_the_gallery(client, app_bundle):
    gallery, status = client.predict(str(app_bundle), "5-x", api_name="/explore_show")
    assert status.startswith("⚠️") and "Image numbers" in status and _kept(gallery)
    gallery, status = client.predict(str(app_bundle), " ", api_name="/explore_show")
    assert "no image numbers given" in status and _kept(gallery)


def _units(client, app_bundle, layer="layer2"):
    gallery, summary, _, _ = client.predict(str(app_bundle), layer, "all", api_name="/dissect_units")
    return gallery, [int(item["caption"].split(" ")[1]) for item in gallery], summary


def _kept(output) -> bool:
    """Whether an output came back as gr.skip(): the page keeps what it showed."""
    return isinstance(output, dict) and output.get("__type__") == "update"


def _files(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dissect_units_gallery_and_unit_details(client, app_bundle):
    gallery, units, summary = _units(client, app_bundle)
    assert sorted(units) == list(range(8))
    ious = [float(item["caption"].rsplit(" ", 1)[1]) for item in gallery]
    assert ious == sorted(ious, reverse=True)
    assert "shipped with the model, 40 samples" in summary and "I(" not in summary
    strip, bars, info, unit, note = client.predict(str(app_bundle), "layer2", units[0],
                                                   api_name="/dissect_unit")
    assert unit == units[0] and strip and f"unit {units[0]}" in info and note == ""
    assert "The label is the concept" in bars


def test_dissect_layer_without_catalog_says_so(client, app_bundle):
    gallery, units, summary = _units(client, app_bundle, "layer4")
    assert gallery == [] and "no catalog" in summary


def test_dissect_preview_switches_unit_off_and_on(client, app_bundle):
    _, units, _ = _units(client, app_bundle)
    orig, off, on, note = client.predict(str(app_bundle), "layer2", units[0], 7,
                                         api_name="/dissect_preview")
    a, b, c = (np.asarray(Image.open(p)).astype(int) for p in (orig, off, on))
    assert a.shape == b.shape == c.shape and note == ""
    assert np.abs(a - b).sum() > 0 or np.abs(a - c).sum() > 0


@pytest.mark.parametrize("unit, image, message", [
    (5000, 7, "Unit 5000 does not exist: layer2 has units 0-7"),
    (-2, 7, "Unit -2 does not exist"),
    (None, 7, "Type a unit number (0-7)"),
    (0, None, "Type an image number"),
])
def test_dissect_preview_bad_input_is_a_clear_message_and_keeps_the_images(client, app_bundle,
                                                                         unit, image, message):
    *images, note = client.predict(str(app_bundle), "layer2", unit, image, api_name="/dissect_preview")
    assert message in note and all(_kept(im) for im in images)


def test_dissect_unknown_unit_is_a_clear_message(client, app_bundle):
    *details, note = client.predict(str(app_bundle), "layer2", 999, api_name="/dissect_unit")
    assert "does not exist" in note and all(_kept(d) for d in details)


def test_dissect_run_from_the_ui_keeps_its_catalog_outside_the_bundle(client, app_bundle):
    from core.bundle import load_bundle
    gallery, _, summary = _units(client, app_bundle, "layer3")
    assert gallery == [] and "no catalog" in summary
    shipped = _files(app_bundle)
    out = client.predict(str(app_bundle), "layer3", 100, api_name="/dissect_run")
    assert "Dissected `layer3` over 100 images" in out and "computed here" in out
    gallery, _, summary = _units(client, app_bundle, "layer3")
    assert len(gallery) > 0 and "computed here, 100 samples" in summary
    assert _files(app_bundle) == shipped                       # the bundle is read-only
    assert load_bundle(app_bundle).scratch("catalog/layer3.json").is_file()
    # a shipped catalog is never replaced
    out = client.predict(str(app_bundle), "layer2", 100, api_name="/dissect_run")
    assert "never replaced" in out and _files(app_bundle) == shipped


def test_dissect_stop_says_it_stopped(client, app_bundle, monkeypatch):
    import time

    import demos.dissect as dissect_tab
    real = dissect_tab.dissect

    def slow(*args, progress, **kwargs):           # a dissection that takes its time
        def tick(done, total):
            time.sleep(0.3)
            progress(done, total)
        return real(*args, progress=tick, batch_size=4, **kwargs)
    monkeypatch.setattr(dissect_tab, "dissect", slow)
    job = client.submit(str(app_bundle), "layer5", 2000, api_name="/dissect_run")
    t0 = time.time()
    while not any("Dissecting" in o for o in job.outputs()) and time.time() - t0 < 60:
        time.sleep(0.2)
    client.predict(api_name="/dissect_stop")
    out = job.result(timeout=60)
    assert "Stopped" in out and "keeps nothing" in out
    _, _, summary = _units(client, app_bundle, "layer5")
    assert "no catalog" in summary


def test_explore_random_shows_16_numbered_images(client, app_bundle):
    spec, gallery, status = client.predict(str(app_bundle), api_name="/explore_random")
    start, end = map(int, spec.split("-"))
    assert end - start == 15 and len(gallery) == 16


def _page(url: str) -> tuple[dict, dict, str]:
    """(the page's config, elem_id -> props, the selected tab) of the page at ``url``."""
    import json
    import re

    import httpx
    html = httpx.get(url, timeout=120).text
    config = json.loads(re.search(r"window.gradio_config = (\{.*?\});\s*</script>", html, re.S).group(1))
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"]}
    tabs = next(c for c in config["components"] if c["type"] == "tabs")
    return config, props, tabs["props"].get("selected")


def test_a_link_page_arrives_built_on_its_view(served, app_bundle):
    """The page of a link comes with the view in it (tab, values, images): no event has to run
    before it shows. Its restoring event then sends the session values only, as copies."""
    import time
    import urllib.parse

    import httpx

    from demos.dissect import TOP_SHOWN
    demo, url = served
    config, props, tab = _page(url + "?tab=dissect&layer=layer2&unit=1")
    assert config["deep_link_state"] == "valid" and tab == "dissect"
    assert props["dissect_unit"]["value"] == 1 and props["dissect_layer"]["value"] == "layer2"
    top = props["dissect_top"]["value"]
    assert len(top) == TOP_SHOWN
    image = httpx.get(urllib.parse.urljoin(url, top[0]["image"]["url"]), timeout=60)
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    # its files are Gradio's to delete with the others (delete_cache), not kept forever
    strip = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "dissect_top")
    assert top[0]["image"]["path"] in strip.temp_files
    assert any(f.endswith("state.json") for f in demo.link_pages.files)
    # a bad parameter: the page says so and shows the rest of the view
    _, props, tab = _page(url + "?tab=explore&images=3-4&unit=x")
    assert tab == "explore" and "unit='x' ignored" in props["link_notice"]["value"]
    assert [item["caption"] for item in props["explore_gallery"]["value"]] == ["#3", "#4"]
    # no view, or another model: the page as built (the restoring event does the rest); every
    # page is sent compressed
    assert _page(url)[0]["deep_link_state"] == "none"
    assert httpx.get(url, timeout=60).headers.get("content-encoding") == "gzip"
    assert _page(url + "?tab=dissect&model=no-such/model")[0]["deep_link_state"] == "none"
    named = urllib.parse.urlencode({"tab": "dissect", "model": str(app_bundle), "layer": "layer2",
                                    "unit": 1})                    # the default model, named
    config, props, tab = _page(url + "?" + named)
    assert config["deep_link_state"] == "valid" and tab == "dissect" and props["dissect_unit"]["value"] == 1
    # Copy link prepares its link's page before anyone opens it
    ready = {"tab": "dissect", "layer": "layer2", "unit": "2"}
    demo.link_pages.prepare(ready)
    deadline = time.time() + 60
    while demo.link_pages.served(ready) is None and time.time() < deadline:
        time.sleep(0.1)
    assert demo.link_pages.served(ready) is not None
    # the session values of a served view: equal for two visitors, never the same objects
    params = {"tab": "explore", "images": "3-4", "unit": "x"}
    first, second = demo.link_pages.served(params), demo.link_pages.served(params)
    numbers = next(v for v in first.values() if isinstance(v, list))       # Explore's shown numbers
    assert list(numbers) == [3, 4] and first.keys() == second.keys()
    assert any(v == numbers and v is not numbers for v in second.values())


def test_images_just_rendered_are_served_from_memory_and_nothing_else_is(served):
    """A rendered image's request is answered from memory with the file's bytes (and may be
    kept by the browser); any other path still goes through Gradio's checks."""
    import urllib.parse
    from pathlib import Path

    import httpx
    _, url = served
    _, props, _ = _page(url)
    item = props["explore_gallery"]["value"][0]["image"]
    answer = httpx.get(urllib.parse.urljoin(url, item["url"]), timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content == Path(item["path"]).read_bytes() and "immutable" in answer.headers["cache-control"]
    for path in ("/etc/passwd", item["path"] + "/../../../etc/passwd"):
        assert httpx.get(urllib.parse.urljoin(url, "gradio_api/file=" + path), timeout=60).status_code >= 400


def test_the_frontend_files_are_compressed_once_and_kept_by_browsers(served):
    """Gradio's script and style files come from memory, compressed as the browser accepts, with a
    year's cache lifetime (their names carry a hash of their content); no other path is served so."""
    import re

    import httpx

    from demos.cache import FRONTEND
    _, url = served
    with httpx.Client(base_url=url, timeout=60) as client:
        name = re.search(r'src="\./assets/([^"]+\.js)"', client.get("/").text).group(1)
        for accepted, encoding in (("br, gzip", "br"), ("gzip", "gzip"), ("identity", None)):
            answer = client.get("/assets/" + name, headers={"accept-encoding": accepted})
            assert answer.status_code == 200 and answer.headers.get("content-encoding") == encoding
            assert answer.content == (FRONTEND / name).read_bytes()         # decoded by httpx
            assert "javascript" in answer.headers["content-type"]
            assert "immutable" in answer.headers["cache-control"]
        for path in ("/assets/no-such-file.js", "/assets/../../routes.py", "/assets/%2e%2e/index.html"):
            answer = client.get(path)
            assert answer.status_code in (403, 404) and "immutable" not in answer.headers.get("cache-control", "")
