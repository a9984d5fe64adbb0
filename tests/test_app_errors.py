"""Handler errors become a notice and a status line; the other outputs keep their value."""
import warnings

import gradio as gr

from demos.context import error_text, warn_on_error


def test_every_error_becomes_a_status_line():
    @warn_on_error(3, status=2)
    def handler(kind):
        raise {"gr": gr.Error("bad input"), "value": ValueError("wrong layer name"),
               "key": KeyError("unknown layer 'x'"), "bug": TypeError("oops")}[kind]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # gr.Warning outside a request only warns
        for kind, text in [("gr", "bad input"), ("value", "wrong layer name"), ("key", "unknown layer 'x'"),
                           ("bug", "Something went wrong (TypeError: oops)")]:
            out = handler(kind)
            assert len(out) == 3 and out[2].startswith("⚠️ ") and text in out[2]
            assert all(isinstance(o, dict) and o.get("__type__") == "update" for o in out[:2])


def test_streaming_handlers_end_with_the_notice():
    @warn_on_error(2, status=0)
    def stream():
        yield "working", 1
        raise ValueError("stopped")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = list(stream())
    assert out[0] == ("working", 1) and out[1][0] == "⚠️ stopped"
    assert error_text(KeyError("plain")) == "plain"


def test_messages_name_files_not_server_paths():
    bad = ValueError("/tmp/pytest-of-root/x/tiny/catalog/layer4.json: not a dissection catalog")
    assert error_text(bad) == "layer4.json: not a dissection catalog"
    assert error_text(OSError("cannot read '/tmp/gradio/3f2a/broken.json'")) == "cannot read 'broken.json'"
    assert error_text(gr.Error("no model at /srv/models/x")) == "no model at x"
    # what is not a server path stays: URLs, Hub ids, layer/unit, fractions
    for text in ("see https://huggingface.co/org/name", "org/name@main", "layer4/unit 5", "got 10/3"):
        assert error_text(ValueError(text)) == text
