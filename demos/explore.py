"""Explore tab, the app's home: samples by image number, one image large with its segmentation.

A problem shows as a warning and a status line; the gallery and the large view keep what they
showed (``warn_on_error``)."""
from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import gradio as gr
import numpy as np

import core
from demos.context import (AppContext, blend, colorize, display, error_text, fit_to_content, pixelated,
                           warn_on_error)
from demos.settings import STATE_TTL

MAX_GRID = 64
START = "0-15"      # the grid a page opens on


def _legend(concepts, palette) -> str:
    chips = "".join(
        f"<span style='display:inline-block;margin:2px 6px 2px 0'>"
        f"<span style='display:inline-block;width:12px;height:12px;background:rgb{tuple(palette[i])};"
        f"border:1px solid #444;vertical-align:middle'></span> {c}</span>"
        for i, c in enumerate(concepts))
    return f"<div>{chips}</div>"


def _yield_cpu() -> None:
    """Lower the calling thread's CPU priority (Linux: threads have their own nice value): work
    done ahead of time then takes only the CPU that requests leave free."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):        # not Linux: the same work at the same priority
        pass


class AheadOfTime:
    """``make(key)`` computed one call ahead, in a background thread: ``take(key)`` returns the
    value made after the last take (waiting for it if need be) and starts the next one ``delay``
    seconds later (once this answer has reached the browser, so that the two do not share the
    CPU). Random then answers without waiting for the generator (16 samples: ~0.3 s on one
    core). The ``keep`` most recently taken keys are kept."""

    def __init__(self, make, keep: int = 4, delay: float = 0.5):
        self._make, self._keep, self._delay = make, keep, delay
        self._next: dict[object, Future] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="ahead-of-time", initializer=_yield_cpu)

    def take(self, key):
        with self._lock:
            ready = self._next.pop(key, None)
            self._next[key] = self._worker.submit(self._later, key)
            while len(self._next) > self._keep:
                self._next.pop(next(iter(self._next))).cancel()
        return self._make(key) if ready is None else ready.result()

    def _later(self, key):
        time.sleep(self._delay)
        return self._make(key)


def build(ctx: AppContext):
    def get(model_id):
        try:
            return ctx.get(model_id)
        except Exception as e:  # noqa: BLE001 - shown to the user
            raise gr.Error(f"Could not load model {model_id!r}: {error_text(e)}")

    def grid(model_id, spec):
        try:
            numbers = core.parse_image_numbers(spec, max_count=MAX_GRID)
        except ValueError as e:
            raise gr.Error(f"Image numbers: {error_text(e)}")
        if not numbers:
            raise gr.Error("Type some image numbers, e.g. 0-15 or 3,14,159.")
        images = get(model_id).model.render(numbers)
        # at the model's own size: the browser scales them up crisply (``pixelated``)
        return [(core.images.to_pil(im), f"#{n}") for im, n in zip(images, numbers)], numbers

    @warn_on_error(3, status=2)
    def show(model_id, spec):
        return *grid(model_id, spec), ""

    def random_grid(model_id):
        start = random.randrange(0, 100_000)
        spec = f"{start}-{start + 15}"
        return spec, *grid(model_id, spec)

    ahead = AheadOfTime(random_grid)

    @warn_on_error(4, status=3)
    def random_numbers(model_id):
        return *ahead.take(model_id), ""

    @warn_on_error(5, status=4)
    def select(model_id, numbers, evt: gr.SelectData):
        if not numbers or evt.index is None or evt.index >= len(numbers):
            raise gr.Error("Pick an image from the grid first.")
        n = numbers[evt.index]
        loaded = get(model_id)
        image = loaded.model.render([n])[0]
        big = display(image)
        if loaded.segmenter is None:
            return big, None, f"Image #{n} (this model has no segmenter)", "", ""
        labels = loaded.segmenter.segment(image[None])[0]
        palette = loaded.segmenter.palette
        seg = blend(core.images.to_uint8(image), colorize(labels, palette), 0.6)
        present = np.bincount(labels.flatten().numpy(), minlength=len(loaded.segmenter.concepts))
        share = ", ".join(f"{c} {100 * v / labels.numel():.0f}%"
                          for c, v in sorted(zip(loaded.segmenter.concepts, present), key=lambda t: -t[1]) if v)
        return big, display(seg), f"**Image #{n}** — {share}", _legend(loaded.segmenter.concepts, palette), ""

    with gr.Row():
        model_id = gr.Textbox(ctx.model_ids()[0], label="Model", visible=False)
        spec = gr.Textbox(START, label="Image numbers (e.g. 0-15, 42, 100000-100007)", scale=3,
                          elem_id="explore_numbers")
        show_btn = gr.Button("Show", variant="primary", scale=1, elem_id="explore_show")
        random_btn = gr.Button("Random", scale=1, elem_id="explore_random")
    status = gr.Markdown(elem_id="explore_status")
    # The page opens on the default model's grid, rendered here once: it is in the page itself, so
    # no event has to run (nor a file be written) before a visitor sees samples.
    try:
        start_grid, start_numbers = grid(ctx.default_source, START)
    except Exception:  # noqa: BLE001 - the app still builds; the tab's "load" step says why
        start_grid, start_numbers = None, []
    numbers = gr.State(start_numbers, time_to_live=STATE_TTL)
    gallery = gr.Gallery(start_grid, label="Samples (click one)", columns=8, height="auto",
                         allow_preview=False, format="png", elem_id="explore_gallery")
    pixelated("explore_gallery")
    fit_to_content("explore_gallery")
    caption = gr.Markdown()
    with gr.Row():
        big = gr.Image(label="Sample", format="png", interactive=False, buttons=["download"],
                       elem_id="explore_image")
        seg = gr.Image(label="Segmentation", format="png", interactive=False, buttons=["download"])
    legend = gr.HTML()

    show_btn.click(show, [model_id, spec], [gallery, numbers, status], api_name="explore_show")
    spec.submit(show, [model_id, spec], [gallery, numbers, status], api_visibility="private")
    random_btn.click(random_numbers, [model_id], [spec, gallery, numbers, status], api_name="explore_random")
    gallery.select(select, [model_id, numbers], [big, seg, caption, legend, status], api_name="explore_select")
    shown = (show, [model_id, spec], [gallery, numbers, status])
    return {"model_id": model_id, "load": shown, "on_model": [shown], "link": {"images": spec},
            "preloaded": bool(start_numbers)}
