"""Photo tab through the app's API (gradio_client against a local server on a tiny bundle)."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from PIL import Image

from conftest import close, free_port, make_progan

pytestmark = pytest.mark.slow

CONCEPTS = ["sky", "cloud", "grass", "tree", "wall", "window", "door", "roof", "spire", "dome",
            "watermark"]
SIZE = 512                      # the tab shows photos at 512 px; masks are sent at that size


def tiny_catalog() -> dict:
    """layer4 of the tiny ProGAN (8 units at 8x8): tree 0-2, grass 3, dome 4."""
    units = [{"unit": u, "label": lab, "iou": 0.2, "quantile_99": 4.0 + 0.2 * u}
             for u, lab in enumerate(["tree", "tree", "tree", "grass", "dome", "sky", "sky",
                                      "sky"])]
    return {"layer": "layer4", "units": units, "concept_list": CONCEPTS,
            "concepts": {"tree": [{"unit": 0, "iou": 0.3}, {"unit": 1, "iou": 0.2},
                                  {"unit": 2, "iou": 0.1}],
                         "grass": [{"unit": 3, "iou": 0.2}],
                         "dome": [{"unit": 4, "iou": 0.2}]}}


@pytest.fixture(scope="module")
def app_bundle(tmp_path_factory):
    import torch

    from core.bundle import save_bundle
    from core.segmenter import Segmenter, ToySegNet, save_segmenter
    folder = save_bundle(make_progan(), tmp_path_factory.mktemp("photo") / "tiny", name="tiny",
                         extra_config={"paint_layer": "layer4"})
    torch.manual_seed(0)
    palette = [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(len(CONCEPTS))]
    cfg = {"architecture": "toyseg", "concepts": CONCEPTS, "kwargs": {"width": 4},
           "palette": palette}
    save_segmenter(Segmenter(ToySegNet(len(CONCEPTS), width=4), CONCEPTS, palette, cfg), folder)
    (folder / "catalog").mkdir()
    (folder / "catalog" / "layer4.json").write_text(json.dumps(tiny_catalog()))
    return folder


@pytest.fixture(scope="module")
def client(app_bundle):
    from gradio_client import Client

    import demos.photo as photo_tab
    from demos import build_app
    from demos.context import AppContext
    saved = photo_tab.INVERT_STEPS, photo_tab.ADAPT_STEPS, photo_tab.PREVIEW_EVERY
    photo_tab.INVERT_STEPS, photo_tab.ADAPT_STEPS, photo_tab.PREVIEW_EVERY = 12, 8, 4
    demo = build_app(AppContext(default_source=str(app_bundle)))
    demo.queue(max_size=16)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(),
                            prevent_thread_lock=True, quiet=True, max_file_size="10mb",
                            _frontend=False)   # skip launch()'s 3-s HEAD check: flaky on a busy CPU
    try:
        yield Client(url, verbose=False, download_files=True, httpx_kwargs={"timeout": 120})
    finally:
        close(demo)
        photo_tab.INVERT_STEPS, photo_tab.ADAPT_STEPS, photo_tab.PREVIEW_EVERY = saved


def _photo(tmp_path) -> str:
    """A 48x40 'photo': sky gradient over a green field with a brown box (not square: cropped)."""
    rng = np.random.RandomState(0)
    a = np.zeros((40, 48, 3), np.float64)
    a[:20] = np.linspace([80, 130, 210], [180, 210, 240], 20)[:, None]
    a[20:] = (50, 130, 45)
    a[14:30, 18:32] = (150, 100, 60)
    a += rng.normal(0, 5, a.shape)
    path = tmp_path / "photo.png"
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _mask(stroke) -> str:
    """A brush canvas's value: an opaque rectangle ``stroke = (y0, y1, x0, x1)`` at SIZE px."""
    from demos.stroke_canvas import mask_url
    m = np.zeros((SIZE, SIZE), bool)
    y0, y1, x0, x1 = stroke
    m[y0:y1, x0:x1] = True
    return mask_url(m)


def test_endpoints_are_named(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/photo_invert", "/photo_stop", "/photo_paint", "/photo_stroke", "/photo_undo",
            "/photo_reset"} <= names


def _kept(output) -> bool:
    """Whether an output came back as gr.skip(): the page keeps what it showed."""
    return isinstance(output, dict) and output.get("__type__") == "update"


def test_corrupt_upload_gives_a_clear_message_in_the_status(client, app_bundle, tmp_path):
    from gradio_client import handle_file
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not really a png" * 10)
    shown, recon, status, *rest = client.predict(str(app_bundle), handle_file(str(bad)),
                                                 api_name="/photo_invert")
    assert "broken.png" in status and "image" in status.lower()     # replaces an old "Done."
    assert _kept(shown) and _kept(recon) and all(_kept(o) for o in rest)


def test_paint_before_invert_is_refused(client):
    editor, compare, result, info = client.predict(_mask((0, 10, 0, 10)), "tree", "Draw", 3,
                                                   api_name="/photo_paint")
    assert "Invert" in info and _kept(editor) and _kept(result)


def test_invert_then_paint_changes_only_near_the_stroke(client, app_bundle, tmp_path):
    from gradio_client import handle_file
    shown, recon, status, editor, compare, result, info = client.predict(
        str(app_bundle), handle_file(_photo(tmp_path)), api_name="/photo_invert")
    assert "PSNR" in status and "Inversion" in status and "dB" in status
    photo = _img(shown)
    assert photo.shape == (SIZE, SIZE, 3) and _img(recon).shape == (SIZE, SIZE, 3)
    assert np.array_equal(_img(result), photo)          # nothing painted yet: the photo itself
    assert "0 paint edit" in info

    assert editor["image"].startswith("data:image/png")   # the canvas's image
    # draw 'tree' (the first concept) in the top-left feature cells (0..1, 0..1) of 8x8
    ed = _mask((0, 128, 0, 128))
    editor2, compare2, result2, info2 = client.predict(ed, "tree", "Draw", 3, api_name="/photo_paint")
    assert "1 paint edit" in info2 and "draw tree" in info2
    out = _img(result2)
    diff = np.abs(out - photo).max(-1)
    assert diff[:128, :128].max() > 0, "the stroke changed nothing"
    # a change at layer4 (cells 0-1 = render px 0-3) reaches render px <= 5 (two 3x3 convs at
    # 16 px); the composite grows it by 3 render px and feathers 2 more: < 11 of 16 render px
    # = 352 display px. Beyond that the photo is untouched, bit for bit.
    assert diff[384:, :].max() == 0 and diff[:, 384:].max() == 0

    # the fitted and painted model shares like any other edited model
    import core
    path, share = client.predict(api_name="/photo_download")
    path = path["path"] if isinstance(path, dict) else path
    assert share.startswith("Saved ") and core.load_model(path).stack[-1].label.startswith("draw tree")

    editor3, _, result3, info3 = client.predict(api_name="/photo_undo")
    assert "0 paint edit" in info3 and np.array_equal(_img(result3), photo)

    client.predict(ed, "tree", "Draw", 3, api_name="/photo_paint")
    _, _, result4, info4 = client.predict(api_name="/photo_reset")
    assert "0 paint edit" in info4 and np.array_equal(_img(result4), photo)


@contextlib.contextmanager
def _long_inversion(client, app_bundle, tmp_path):
    """An inversion that would run for many minutes, started and showing streamed previews."""
    import time

    from gradio_client import handle_file

    import demos.photo as photo_tab
    saved = photo_tab.INVERT_STEPS
    photo_tab.INVERT_STEPS = 100_000
    try:
        job = client.submit(str(app_bundle), handle_file(_photo(tmp_path)), api_name="/photo_invert")
        t0 = time.time()
        while len(job.outputs()) < 3 and time.time() - t0 < 60:
            time.sleep(0.2)
        yield job
    finally:
        photo_tab.INVERT_STEPS = saved


def test_invert_is_a_stoppable_generator_and_keeps_earlier_work(client, app_bundle, tmp_path):
    """Cancelling (what the Stop button does) ends the generator at its next preview; the
    session's previous inversion and edits stay usable."""
    import time

    with _long_inversion(client, app_bundle, tmp_path) as job:
        assert len(job.outputs()) >= 3, "no streamed previews"
        status = job.outputs()[-1][2]
        assert "step" in status and "PSNR" in status
        job.cancel()
        t0 = time.time()
        while not job.done() and time.time() - t0 < 30:
            time.sleep(0.2)
        assert job.done()
    _, _, _, info = client.predict(api_name="/photo_reset")   # the earlier inversion is still there
    assert "0 paint edit" in info and "Inversion PSNR" in info


def test_stop_keeps_the_best_result_so_far(client, app_bundle, tmp_path):
    """The Stop button ends the inversion at its next step; the best iterate so far becomes the
    session's photo, ready to paint on, and the status says so."""
    with _long_inversion(client, app_bundle, tmp_path) as job:
        client.predict(api_name="/photo_stop")
        shown, recon, status, editor, compare, result, info = job.result(timeout=60)
    assert "Stopped" in status and "during the inversion" in status and "best result" in status
    assert "Inversion PSNR" in info and editor["image"]
    ed = _mask((0, 128, 0, 128))
    _, _, _, info2 = client.predict(ed, "tree", "Draw", 3, api_name="/photo_paint")
    assert "1 paint edit" in info2
