"""The model picker above the tabs: one choice of model for every tab.

It lists the models already open, the known models (``models/known_models.json``, each with
whether it is cached, can be downloaded, or why not), the bundles in the local Hugging Face cache,
and takes any Hub id typed as ``org/name[@revision]``. Loading shows what it downloads; a model
that fails to open leaves the current one in place, with the reason. Each tab's own (hidden)
model id follows the picker, and its ``.change`` handlers refresh the tab.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from core import hub, known
from core.bundle import scratch_root, sha256_file
from demos.context import AppContext, error_text, mapped, refresh_tabs, scene_segmenter_id, stoppable, warn

DOWNLOAD = "download"


def _state_of(entry: dict) -> str:
    status = known.availability(entry, probe=False)     # no network while the page builds
    if status == "available":
        return "built in" if entry.get("local") else DOWNLOAD
    return "cached" if status == "cached" else "unavailable: " + status.split(": ", 1)[-1]


def choices(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, value) pairs: open models, known models, then other cached Hub bundles."""
    out, seen = [], set()

    def add(label, value):
        if value not in seen:
            seen.add(value)
            out.append((label, value))
    for mid in ctx.model_ids():
        try:
            name = ctx.get(mid).model.name
        except Exception:  # noqa: BLE001 - a model evicted and now failing is just listed by id
            name = mid
        add(f"{name} (open)" if name != mid else f"{mid} (open)", mid)
    try:
        entries = known.known_models()
    except hub.HubError:
        entries = []
    for e in entries:
        add(f"{e.get('label') or e['id']} — {_state_of(e)}", e["id"])
    for repo_id in hub.cached_models():
        add(f"{repo_id} — cached", repo_id)
    return out


def _mb(n) -> str:
    return f"{n / 1e6:.0f} MB" if n is not None else "?"


def describe(status: dict) -> str:
    stage = status.get("stage")
    if stage == "download":
        return f"⏳ Downloading {status['source']}: {_mb(status['done'])} of {_mb(status['total'])}…"
    if stage == "convert":
        return f"⏳ Converting {status['source']} to safetensors (once; later loads read the copy)…"
    return f"⏳ Opening {status['source']}…"


def build(ctx: AppContext, tab_specs: list, current_model: gr.State) -> gr.Dropdown:
    """The picker row. ``tab_specs``: what each tab's ``build`` returned; the picker sets each
    tab's ``"model_id"`` and ``current_model`` (the model every tab shows), then runs each tab's
    ``"on_model"`` steps."""
    tab_model_ids = [spec["model_id"] for spec in tab_specs]
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(choices(ctx), value=ctx.default_source, allow_custom_value=True,
                             label="Model", scale=4, elem_id="model_picker",
                             info="A known model, a cached one, or a Hub id org/name[@revision]")
        load_btn = gr.Button("Load model", scale=1, elem_id="model_load")
        upload = gr.UploadButton("Open an edited model (.zip)", file_types=[".zip"], scale=1,
                                 elem_id="model_upload")
    status = gr.Markdown(elem_id="model_status")
    changed = gr.State(None)            # the id of the model just opened
    n = len(tab_model_ids) + 2          # the tabs' model ids, ``changed`` and ``current_model``

    def load(source, shown: str | None = None):
        """``shown``: how messages name ``source`` (an upload's own file name, not the path it
        is kept at on the server)."""
        source = str(source or "").strip()
        if not source:
            yield warn("Pick a model or type a Hub id (org/name)."), gr.skip(), *[gr.skip()] * n
            return
        info = {"source": source}

        def job(stop, st):
            st.update(info)
            return ctx.get(source, progress=lambda done, total, stage: st.update(
                stage=stage, done=done, total=total))
        try:
            loaded = yield from mapped(stoppable(job, lambda st: dict(info, **st)),
                                        lambda st: (describe(st), gr.skip(), *[gr.skip()] * n))
        except Exception as e:  # noqa: BLE001 - the current model stays; the reason is shown
            why = error_text(e).replace(source, shown) if shown else error_text(e)
            yield warn(f"Could not open {shown or source}: {why}"), gr.skip(), *[gr.skip()] * n
            return
        note = (f"✅ **{loaded.model.name}** ({loaded.model.bundle.architecture}, "
                f"{loaded.model.resolution} px) is open in every tab.")
        stack = getattr(loaded.model, "stack", None)
        if stack is not None:
            note += (f" It is **{loaded.model.base.name}** with {len(stack)} edit(s): "
                     + "; ".join(e.label or type(e).__name__ for e in stack)
                     + ". Edits you make now go on top of them.")
        if loaded.segmenter is None:
            note += (" It has no segmenter of its own: the Dissect tab labels its units with the "
                     f"real-scene segmenter ({scene_segmenter_id()}), and Paint then offers the "
                     "concepts found at its paint layer.")
        yield (note, gr.update(choices=choices(ctx), value=source), *[source] * n)

    def open_upload(file):
        """An uploaded edited model: kept in the scratch cache under its digest (a stable id),
        then opened like any other source."""
        try:
            source = keep_upload(file)
        except ValueError as e:
            yield warn(f"Could not open the upload: {e}"), gr.skip(), *[gr.skip()] * n
            return
        yield from load(source, Path(getattr(file, "name", None) or str(file)).name)

    outputs = [status, picker, *tab_model_ids, changed, current_model]
    load_btn.click(load, [picker], outputs, api_name="model_load", concurrency_limit=2)
    upload.upload(open_upload, [upload], outputs, api_name="model_upload", concurrency_limit=2)
    refresh_tabs(tab_specs, changed)
    return picker


def keep_upload(file) -> str:
    """Copy an uploaded ``.zip`` to ``$PWN_CACHE_DIR/uploads/<sha256>.zip``; its path."""
    path = Path(getattr(file, "name", None) or str(file or ""))
    if not path.is_file():
        raise ValueError("no file arrived")
    if path.suffix.lower() != ".zip":
        raise ValueError(f"{path.name} is not a .zip (download an edited model from a tab's "
                         "Share button)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path.name} is empty (0 bytes)")
    dest = scratch_root() / "uploads" / f"{sha256_file(path)[:20]}.zip"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return str(dest)
