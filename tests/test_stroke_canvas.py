"""The brush canvas's value: a stroke mask as a PNG data URL, decoded safely."""
import base64
import io

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from demos.stroke_canvas import MAX_MASK_SIDE, StrokeCanvas, decode_mask, image_url, mask_url


def _url(arr, mode) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_mask_round_trips_exactly():
    m = np.zeros((256, 256), bool)
    m[10:40, 100:180] = True
    assert np.array_equal(decode_mask(mask_url(m)), m)
    assert np.array_equal(decode_mask(mask_url(m).split(",", 1)[1]), m)     # bare base64


def test_strokes_are_alpha_or_any_colour_on_opaque_black():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2, 3] = (255, 0, 0, 90)                       # a soft, semi-transparent edge counts
    assert decode_mask(_url(rgba, "RGBA")).sum() == 1
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[5, 5] = (0, 0, 200)
    got = decode_mask(_url(rgb, "RGB"))
    assert got.sum() == 1 and got[5, 5]


def test_nothing_painted_is_none():
    assert decode_mask("") is None and decode_mask(None) is None and decode_mask("  ") is None
    assert decode_mask(mask_url(np.zeros((16, 16), bool))) is None


@pytest.mark.parametrize("bad", [123, {"background": "x"}, "hello", "data:image/png;base64,@@",
                                 "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n").decode(),
                                 pytest.param("x" * 5_000_000, id="too-long")])
def test_anything_else_is_refused_plainly(bad):
    with pytest.raises(gr.Error, match="not a stroke mask"):
        decode_mask(bad)


def test_a_huge_mask_is_refused_before_decoding_its_pixels():
    big = Image.new("1", (MAX_MASK_SIDE + 1, 4))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(gr.Error, match="not a stroke mask"):
        decode_mask("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())


def test_answers_show_an_image_or_only_a_fresh_epoch():
    img = np.zeros((3, 4, 4), np.float32)
    shown, answered = StrokeCanvas.show(img), StrokeCanvas.ack()
    assert shown["image"] == image_url(img) and answered["epoch"] > shown["epoch"]
    assert "image" not in answered
    canvas = StrokeCanvas(color="#00ff00", live=False, size=128)
    assert canvas.preprocess("") is None and canvas.preprocess(shown) is None     # an answer
    assert canvas.postprocess(None) == "" and canvas.postprocess(shown) == shown
    assert canvas.props == {"color": "#00ff00", "live": False}
    assert 'width="128"' in canvas.html_template and 'data-live="false"' in canvas.html_template
