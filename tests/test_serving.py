"""Serving knobs: the ZeroGPU decorator (a no-op off ZeroGPU) and the session-state TTL knob."""
from __future__ import annotations

import importlib
import sys
import types

from demos.gpu import gpu, zero_gpu


def handler(x, progress=None):
    return x + 1


def fake_spaces(calls):
    mod = types.ModuleType("spaces")

    def GPU(duration=60):
        def wrap(fn):
            calls.append((fn, duration))
            return lambda *a, **k: ("on gpu", fn(*a, **k))
        return wrap
    mod.GPU = GPU
    return mod


def test_gpu_is_identity_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)          # import spaces -> ImportError
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert not zero_gpu()
    assert gpu(duration=30)(handler) is handler


def test_gpu_is_identity_without_the_env_var(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls))
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert gpu()(handler) is handler and calls == []


def test_gpu_wraps_with_spaces_on_zero_gpu(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zero_gpu()
    wrapped = gpu(duration=120)(handler)
    assert wrapped is not handler and calls == [(handler, 120)]
    assert wrapped(1) == ("on gpu", 2)


def test_state_ttl_comes_from_the_environment(monkeypatch):
    import demos.settings as settings
    assert settings.STATE_TTL > 0
    monkeypatch.setenv("PWN_STATE_TTL", "7")
    try:
        assert importlib.reload(settings).STATE_TTL == 7.0
    finally:
        monkeypatch.delenv("PWN_STATE_TTL")
        importlib.reload(settings)


def test_image_cache_files_are_written_atomically(tmp_path, monkeypatch):
    """Threads writing the same image into Gradio's cache (two tabs rendering the same samples)
    while others read it as a server does (size first, then the bytes): every read is the whole,
    valid PNG, and no temporary file is left."""
    import os
    import threading

    import numpy as np
    from gradio import processing_utils
    from PIL import Image

    from demos.cache import use_atomic_image_cache
    use_atomic_image_cache()
    pixels = np.random.default_rng(0).integers(0, 256, (384, 384, 3), np.uint8)
    path = processing_utils.save_img_array_to_cache(pixels, str(tmp_path), format="png")
    expected = open(path, "rb").read()
    # the same PNG bytes without encoding them again: the writes follow each other closely
    monkeypatch.setattr(processing_utils, "encode_pil_to_bytes", lambda *_: expected)
    done, bad = threading.Event(), []

    def write():
        while not done.is_set():
            processing_utils.save_img_array_to_cache(pixels, str(tmp_path), format="png")

    def serve():
        for _ in range(200):
            size = os.stat(path).st_size
            with open(path, "rb") as f:
                data = f.read()
            if not (size == len(data) and data == expected):
                bad.append((size, len(data)))

    writers = [threading.Thread(target=write) for _ in range(2)]
    readers = [threading.Thread(target=serve) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join()
    done.set()
    for t in writers:
        t.join()
    assert bad == [], f"{len(bad)} incomplete reads, e.g. (size, bytes read) {bad[:3]}"
    Image.open(path).verify()
    assert np.array_equal(np.asarray(Image.open(path)), pixels)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["image.png"]


def test_work_done_ahead_of_time_runs_at_low_priority():
    """Explore's next Random grid is made in the background at the lowest CPU priority (on
    Linux), so that it never slows down a visitor's request; a take returns the value made ahead."""
    import os
    import threading

    import pytest

    from demos.explore import AheadOfTime

    def make(key):
        priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if hasattr(os, "getpriority") else None
        return key, threading.current_thread() is threading.main_thread(), priority

    ahead = AheadOfTime(make, delay=0)
    now = ahead.take("m")                     # nothing ready: made in the request's thread
    before = ahead.take("m")                  # made in the background meanwhile
    assert now[:2] == ("m", True) and before[:2] == ("m", False)
    if not sys.platform.startswith("linux"):
        pytest.skip("thread priorities are Linux's")
    assert now[2] == os.getpriority(os.PRIO_PROCESS, 0) and before[2] == 19


def _skipping_app():
    import gradio as gr
    with gr.Blocks() as demo:
        text, gallery, number = gr.Textbox("a"), gr.Gallery(), gr.Number(1)
        gr.Button().click(lambda: (gr.skip(), gr.skip(), 3), None, [text, gallery, number])
        gr.Button().click(lambda: {number: 4}, None, [text, gallery, number])
        gr.Button().click(lambda: gr.skip(), None, [text, gallery, number])
    return demo, (text, gallery, number)


def test_skipped_outputs_are_answered_as_gradio_answers_them_without_rebuilding():
    """Lean sessions answer a skipped output exactly as Gradio does, but build no new component
    for it; outputs not skipped are processed by Gradio as before."""
    import asyncio

    from gradio.state_holder import SessionState

    from demos import lean_sessions
    demo, (text, gallery, number) = _skipping_app()
    fns = demo.default_config.fns
    answers = [(fns[0], (lean_sessions.SKIPPED, lean_sessions.SKIPPED, 3)), (fns[1], {number: 4}),
               (fns[2], lean_sessions.SKIPPED)]
    for fn, prediction in answers:
        gradio_state, lean_state = SessionState(demo), SessionState(demo)
        gradio_answer = asyncio.run(lean_sessions._postprocess_data(demo, fn, prediction, gradio_state))
        lean_answer = asyncio.run(lean_sessions.postprocess_data(demo, fn, prediction, lean_state))
        assert lean_answer == gradio_answer
        assert gradio_state.blocks_config.blocks[text._id] is not text   # Gradio rebuilt the skipped one
        assert lean_state.blocks_config.blocks[text._id] is text         # lean sessions did not


def test_a_session_makes_component_configurations_when_read(monkeypatch):
    """A session starts with no copies of the components' configurations; each is made when
    read, equal to Gradio's; Gradio's deep-link route still gets every one."""
    import gradio as gr
    from gradio import state_holder

    from demos import lean_sessions
    assert lean_sessions.use_lean_sessions()
    demo, (text, _, number) = _skipping_app()
    session = state_holder.SessionState(demo)
    assert dict.__len__(session.config_values) == 0 and number._id in session.config_values
    made = session.config_values[number._id]
    assert made == session.blocks_config.config_for_block(number._id, [], number)
    assert len(list(session.components)) == len(demo.blocks)
    monkeypatch.setattr(gr, "__version__", "0.0.0")            # another Gradio: left as it is
    assert not lean_sessions.use_lean_sessions()
