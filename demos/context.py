"""What every tab shares: loaded base models (read-only, one per id) and display helpers.

Tabs never hold a model in session state: they hold a model *id* and ask ``AppContext.model(id)``;
per-session edits live in ``gr.State`` as small edit stacks.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

import core
from core import known
from core.dissect import load_catalog
from core.paint import load_catalog as load_rankings
from core.segmenter import load_segmenter
from core.settings import model_settings

log = logging.getLogger(__name__)

DISPLAY_SIZE = 512  # small GAN images are upscaled (nearest) so clicks and brushes have room


@dataclass
class Loaded:
    model: core.Model
    segmenter: object | None
    notice: str | None = None
    renderer: object | None = None
    memo: dict = field(default_factory=dict)   # values computed once for this model (cached())


def scene_segmenter_id() -> str:
    from core.hub_segmenter import DEFAULT_SEGMENTER
    return os.environ.get("PWN_SEGMENTER") or DEFAULT_SEGMENTER


def computed_catalog_path(model, layer: str) -> Path:
    """Where a catalog dissected in the app is kept: the model's scratch folder, never the bundle;
    one folder per segmenter for a model judged by the scene segmenter (it has none of its own)."""
    from core.hub_segmenter import catalog_folder_name
    from core.segmenter import SEGMENTER_CONFIG
    own = model.bundle.path is not None and (Path(model.bundle.path) / SEGMENTER_CONFIG).is_file()
    folder = "catalog" if own else catalog_folder_name(scene_segmenter_id())
    return model.bundle.scratch(f"{folder}/{layer}.json")


def catalog_path(model, layer: str) -> Path:
    """Where a model's catalog of ``layer`` is read from: the one it ships, else its catalog repo
    on the Hub (config.json ``"catalog_repo"``), else one dissected in the app (which may not
    exist yet)."""
    found = core.hub.find_catalog(model, layer)
    return found if found is not None else computed_catalog_path(model, layer)


MAX_EXTRA_MODELS = 3     # models held besides the default and the preloaded ones (least recently used go)


def open_model(source: str, progress=None) -> core.Model:
    """A model for the picker: a known id through core.known (with download progress), anything
    else through core.load_model."""
    if known.is_known_id(source) and not Path(source).exists():
        return known.open_known(source, progress=progress)
    return core.load_model(source)


@dataclass
class AppContext:
    default_source: str = "default"
    preload: tuple = ()       # model sources opened at start-up, in the background (PWN_MODELS)
    _models: dict = field(default_factory=dict)
    _loading: dict = field(default_factory=dict)
    _shared: dict = field(default_factory=dict)     # what all models share (the scene segmenter)
    _catalogs: dict = field(default_factory=dict)   # (catalog file, checked) -> (mtime, catalog)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model_ids(self) -> list[str]:
        """The default, then the models opened so far (the picker's "loaded" entries)."""
        with self._lock:
            return [self.default_source] + [m for m in self._models if m != self.default_source]

    def openable(self, source: str) -> bool:
        """What a visitor may open: the default and preloaded models, a known model, a Hub id,
        or an edited model uploaded through the picker; never another path on the server."""
        from core.bundle import scratch_root
        if source == self.default_source or source in self.preload or known.is_known_id(source):
            return True
        if core.hub.looks_like_repo_id(source):
            return True
        path = Path(source)
        return path.suffix == ".zip" and (scratch_root() / "uploads") in path.parents

    def get(self, model_id: str | None = None, progress=None) -> Loaded:
        """The loaded model ``model_id``, opening it first if needed (``progress(done, total,
        stage)`` hears about a download). One model loading does not hold up the others.
        Raises ValueError for a source a visitor may not open (``openable``)."""
        model_id = model_id or self.default_source
        with self._lock:
            if model_id not in self._models and not self.openable(str(model_id)):
                raise ValueError(f"{model_id!r} is not a model this app opens: pick a known "
                                 "model or type a Hub id (org/name)")
            if model_id in self._models:
                self._models[model_id] = self._models.pop(model_id)     # most recently used last
                return self._models[model_id]
            lock = self._loading.setdefault(model_id, threading.Lock())
        with lock:
            with self._lock:
                if model_id in self._models:
                    return self._models[model_id]
            model = open_model(model_id, progress)
            seg = load_segmenter(model.bundle.path) if model.bundle.path else None
            loaded = Loaded(model, seg)
            with self._lock:
                self._models[model_id] = loaded
                self._loading.pop(model_id, None)
                keep = {self.default_source, *self.preload, model_id}
                extra = [m for m in self._models if m not in keep]
                for m in extra[:max(0, len(extra) - MAX_EXTRA_MODELS)]:
                    del self._models[m]
            return loaded

    def scene_segmenter(self):
        """The real-scene segmenter (``$PWN_SEGMENTER``, else a small ADE20k SegFormer) used for
        models without a segmenter of their own; opened on first use, on the GPU when there is
        one. Raises HubError / SegmenterError saying why it cannot be opened."""
        from core.hub_segmenter import load_hub_segmenter
        with self._lock:
            seg = self._shared.get("scene-segmenter")
        if seg is None:
            seg = load_hub_segmenter(scene_segmenter_id(),
                                     device="cuda" if torch.cuda.is_available() else "cpu")
            with self._lock:
                self._shared["scene-segmenter"] = seg
        return seg

    def start_preloading(self) -> threading.Thread | None:
        """Open the ``preload`` models in a background thread (start-up does not wait for them);
        one that fails is logged and skipped."""
        if not self.preload:
            return None

        def work():
            for source in self.preload:
                try:
                    self.get(source)
                except Exception:  # noqa: BLE001 - a bad entry must not stop the others
                    log.exception("could not preload model %r", source)
        t = threading.Thread(target=work, daemon=True, name="preload-models")
        t.start()
        return t

    def model(self, model_id: str | None = None) -> core.Model:
        return self.get(model_id).model

    def renderer(self, model_id: str | None = None):
        """The shared caching Renderer of a model (caches the state before its paint layer)."""
        from core.edits import Renderer
        loaded = self.get(model_id)
        with self._lock:
            if loaded.renderer is None:
                model = loaded.model
                loaded.renderer = Renderer(model, cache_layer=model_settings(model).paint_layer, local=True)
            return loaded.renderer


    def catalog(self, model, layer: str, checked: bool = False) -> dict | None:
        """A model's catalog of ``layer`` (``catalog_path``: shipped, from its catalog repo, or
        dissected here), read once and again when its file changes; None when there is none.
        ``checked``: read with ``core.dissect.load_catalog``, which checks the file's format and
        that it matches the model (ValueError otherwise), as the Dissect tab shows every field;
        else with ``core.paint.load_catalog``, which needs only the rankings a brush uses."""
        path = catalog_path(model, layer)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        key = (str(path), checked)
        with self._lock:
            hit = self._catalogs.get(key)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        cat = load_catalog(path, model=model, layer=layer) if checked else load_rankings(path)
        with self._lock:
            self._catalogs[key] = (mtime, cat)
        return cat

    def cache_sizes(self) -> dict:
        """What the shared caches hold now, per open model: its Renderer's ``cache_info`` and the
        keys of the values ``cached`` keeps (for the soak benchmark and for an operator)."""
        with self._lock:
            loaded = dict(self._models)
        return {name: {"renderer": entry.renderer.cache_info() if entry.renderer else None,
                       "memo": sorted(map(str, entry.memo))} for name, entry in loaded.items()}

    def cached(self, model_id: str | None, key, make):
        """``make()`` computed once per loaded model and kept with it (a photo encoder, the
        watermark scan and rates), so a model's caches live and go with the model. Two sessions
        asking at once may both compute it; either result is the same."""
        memo = self.get(model_id).memo
        if key not in memo:
            memo[key] = make()
        return memo[key]


def warn(message: str) -> str:
    """Show ``message`` as a warning and return it as a status line. Handlers report a problem
    this way and keep their other outputs (``gr.skip()``): a raised ``gr.Error`` would replace
    each output, a whole gallery too, with an "Error" badge."""
    gr.Warning(message)
    return f"⚠️ {message}"


_SERVER_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^/\s'\"`:,;()]+){1,}/([^/\s'\"`:,;()]+)")


def without_paths(text: str) -> str:
    """``text`` with every absolute server path shortened to its file name (engine messages
    name the file they could not read; a visitor sees only which one)."""
    return _SERVER_PATH.sub(r"\1", text)


def error_text(e: BaseException) -> str:
    """A message for the user: a ``gr.Error``'s text, the plain message of the engine's errors
    (a KeyError's without quotes), else the type and message of an unexpected error, whose
    traceback goes to the server log; server paths shortened to file names."""
    if isinstance(e, gr.Error):
        return without_paths(e.message)
    if isinstance(e, KeyError) and e.args:
        return without_paths(str(e.args[0]))
    if isinstance(e, (ValueError, OSError)):
        return without_paths(str(e))
    log.exception("unexpected error in a handler")
    return without_paths(f"Something went wrong ({type(e).__name__}: {e}). The server log has "
                         "the details.")


def warn_on_error(n_outputs: int, status: int):
    """Decorator for a handler (plain or generator) with ``n_outputs`` outputs: an error it
    raises becomes a warning and the text of output ``status`` (its status line), and the other
    outputs keep their last good value."""
    def failed(e: Exception):
        out = [gr.skip()] * n_outputs
        out[status] = warn(error_text(e))
        return tuple(out) if n_outputs > 1 else out[0]

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def stream(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - every failure becomes a notice
                    yield failed(e)
            return stream

        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every failure becomes a notice
                return failed(e)
        return call
    return wrap


class StopFlags:
    """Stop buttons that let a job end cleanly: ``with flags.running(request) as flag:`` gives
    the job a fresh ``threading.Event`` for its browser session, the Stop button's handler
    ``flags.stop`` sets it, and the job, polling it (core's ``stop`` callbacks), ends early and
    says what it kept. (Gradio's ``cancels=`` ends an event silently, its last progress line
    still showing.)"""

    def __init__(self):
        self._lock = threading.Lock()
        self._flags: dict = {}

    @contextlib.contextmanager
    def running(self, request: gr.Request | None):
        key, flag = getattr(request, "session_hash", None), threading.Event()
        with self._lock:
            self._flags[key] = flag
        try:
            yield flag
        finally:
            with self._lock:
                if self._flags.get(key) is flag:
                    del self._flags[key]

    def stop(self, request: gr.Request) -> None:
        with self._lock:
            flag = self._flags.get(getattr(request, "session_hash", None))
        if flag is not None:
            flag.set()


def chain(event, steps, model=None, gated: bool = False):
    """Run ``steps`` (``(fn, inputs, outputs[, options])``, in order) after ``event`` (an event,
    or a component: then after its change); returns the last step's event (to chain more after
    it). With ``model`` (a ``gr.State`` the event set to a model id), each step gets that id in
    place of its first input (by convention the tab's model id component: one in a tab the page
    has not shown yet still holds the old id); with ``gated``, a step runs only when that id is
    set (a model was just opened)."""
    for fn, inputs, outputs, *options in steps:
        kw = options[0] if options else {"api_visibility": "private"}
        if model is not None:
            inputs = [model, *inputs[1:]]
            if gated:
                fn = _gated(fn, len(outputs))
        # after an event: its .then; after a component: its .change
        event = (event.then if hasattr(event, "then") else event.change)(fn, inputs, outputs, **kw)
    return event


def refresh_tabs(tab_specs, changed: gr.State) -> None:
    """When State ``changed`` takes a new value (a model was just opened), run every tab's
    ``"on_model"`` steps on it and mark every tab loaded. A page opening on the default model sets
    nothing, so it runs none of these steps (each would be a round trip)."""
    for spec in tab_specs:
        chain(changed, spec.get("on_model", []), model=changed, gated=True)
    loaded = [spec["loaded"] for spec in tab_specs]
    changed.change(lambda model_id: [True] * len(loaded) if model_id else [gr.skip()] * len(loaded),
                   changed, loaded, api_visibility="private", show_progress="hidden")


def _gated(fn, n_outputs: int):
    def step(model_id, *args):
        if model_id:
            return fn(model_id, *args)
        return (gr.skip(),) * n_outputs if n_outputs > 1 else gr.skip()
    return step


def stoppable(job, describe, poll: float = 0.5, stop: threading.Event | None = None):
    """Run ``job(stop_event, status)`` in a thread from a Gradio generator function.

    Yields ``describe(status)`` (``status`` is a dict the job updates) while the job runs, so
    Gradio shows progress and a Stop button can end it: by setting ``stop`` (from
    :class:`StopFlags`) or by cancelling the event; either sets ``stop_event``, which core jobs
    poll through their ``stop`` callbacks. ``result = yield from stoppable(...)``."""
    stop, status, out = threading.Event() if stop is None else stop, {}, {}

    def work():
        try:
            out["result"] = job(stop, status)
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(poll)
            yield describe(status)
    finally:
        stop.set()
    if "error" in out:
        raise out["error"]
    return out.get("result")


def mapped(gen, fn):
    """Yield ``fn`` of each item of ``gen``; return what ``gen`` returns."""
    while True:
        try:
            item = next(gen)
        except StopIteration as end:
            return end.value
        yield fn(item)


def display(image, size: int = DISPLAY_SIZE) -> Image.Image:
    """One engine image ([3,H,W] in [-1,1] or HWC uint8) as a PIL image upscaled to ``size``."""
    pil = core.images.to_pil(image)
    if pil.width < size:
        pil = pil.resize((size, size * pil.height // pil.width), Image.NEAREST)
    return pil


def pixelated(*elem_ids: str) -> gr.HTML:
    """A style element: the images inside ``elem_ids`` are sent at the model's own size and
    scaled up by the browser, crisply (a 64 px image is ~1/40 of the bytes of its 512 px
    upscale, and a tenth of the time to encode)."""
    selectors = ", ".join(f"#{e} img" for e in elem_ids)
    style = "image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain;"
    return gr.HTML(f"<style>{selectors} {{ {style} }}</style>", padding=False,
                   container=False, min_height=0)


def fit_to_content(*elem_ids: str) -> gr.HTML:
    """A style element: the galleries ``elem_ids`` (``height="auto"``) are as tall as their
    images (Gradio 6.31 still gives such a gallery a 450 px minimum: a blank band below a short
    grid)."""
    selectors = ", ".join(f"#{e} .grid-wrap" for e in elem_ids)
    return gr.HTML(f"<style>{selectors} {{ min-height: 0; height: auto; }}</style>", padding=False,
                   container=False, min_height=0)


def colorize(labels: torch.Tensor, palette) -> np.ndarray:
    """[H,W] concept indices -> HWC uint8 colours."""
    pal = np.asarray(palette, np.uint8)
    return pal[labels.cpu().numpy()]


def blend(image_u8: np.ndarray, overlay_u8: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    return (image_u8 * (1 - alpha) + overlay_u8 * alpha).astype(np.uint8)
