"""Pages that open on a link's view: the server builds the view into the page it sends.

A page opened from a link (``?tab=dissect&layer=layer6&unit=3``) would otherwise show Explore,
then ask for the view with an event and switch tabs when it comes. Here the page itself arrives
on the view: ``LinkPagesMiddleware`` sees the link's page request, ``LinkPages`` renders the
view once (the same values the restoring event computes, demos/links.py) into the components'
settings, and hands them to Gradio's deep-link mechanism, which serves a page built from saved
component settings (``?deep_link=<key>``; the files live in Gradio's upload folder, never in the
repository). The restoring event still runs, for what a page cannot carry: the session's
``gr.State`` values, which it takes from here.

Only links on the default model to a tab built into the page are served so; any other link opens
the usual way (the restoring event renders it).
"""
from __future__ import annotations

import copy
import hashlib
import threading
import time
import urllib.parse
from collections import OrderedDict
from pathlib import Path

import anyio
import gradio as gr
import orjson
from gradio.blocks import Block
from gradio.processing_utils import move_files_to_cache
from gradio.utils import get_upload_folder

# query parameters that are not the view's: Gradio's and the Space's own (``__theme``, a private
# Space's ``__sign``, ...), the API page's, a saved deep link's
IGNORED = ("view", "deep_link")
KEPT = 64                      # views kept (their page settings and session values)
FRESH_S = 1800                 # ... for this long: Gradio deletes their files after an hour
RENDERS = 8                    # views rendered at once (one at a time per view)


def pages_folder(upload_folder) -> Path:
    """Where Gradio looks for the settings of ``?deep_link=<key>`` pages."""
    return Path(upload_folder) / "deep_links"


def view_params(items) -> dict:
    """The view parameters of a page request's query ``items`` ((key, value) pairs)."""
    return {k: v for k, v in items if k not in IGNORED and not k.startswith("__")}


def page_props(component, value) -> dict:
    """The settings (props) ``component`` gets in a page when an event answered ``value`` for it:
    a value, an update (``gr.update(...)``, or a component instance), as Gradio applies them."""
    if isinstance(value, Block):
        value = {**value.constructor_args, "__type__": "update"}
    if not (isinstance(value, dict) and value.get("__type__") == "update"):
        value = {"value": value}
    update = {k: v for k, v in value.items() if k != "__type__"}
    args = {**component.constructor_args, **update, "render": False}
    args.pop("value", None)               # processed once, below
    fresh = type(component)(**args)       # the component as if built with the new settings
    props = fresh.get_config()
    out = {k: props.get(k) for k in update if k != "value"}
    if "value" in update:
        shown = fresh.postprocess(update["value"])
        if hasattr(shown, "model_dump"):
            shown = shown.model_dump()
        # files of the page's component: Gradio deletes them with its other files (delete_cache)
        out["value"] = move_files_to_cache(shown, component, postprocess=True)
    return out


class LinkPages:
    """The views of links rendered into page settings, the most recent ``KEPT`` of them.

    ``steps(params)`` gives the view of a link's parameters as the restoring event does: the
    {component: value} dicts it sends, in order; ``servable(params)`` says whether a page can be
    built on it. The restoring event of such a page sends the view's ``gr.State`` values and
    those of the components in ``resent`` again (``served``)."""

    def __init__(self, demo: gr.Blocks, steps, servable, resent=()):
        self.demo, self.steps, self.servable = demo, steps, servable
        self.resent = set(resent)
        self.views: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self.lock = threading.Lock()
        self.renders = [threading.Lock() for _ in range(RENDERS)]
        self.files: set[str] = set()       # the saved page settings, deleted as Gradio's files are
        demo.temp_file_sets.append(self.files)

    @staticmethod
    def key(params: dict) -> str:
        return hashlib.sha256(urllib.parse.urlencode(sorted(params.items())).encode()).hexdigest()[:40]

    def page(self, params: dict, folder: Path) -> str | None:
        """The deep-link key of a page showing ``params``' view (its settings saved under
        ``folder``), or None when such a link opens the usual way."""
        if not params or not self.servable(params):
            return None
        key = self.key(params)
        path = folder / key / "state.json"
        with self.renders[int(key[:8], 16) % RENDERS]:     # one render per view, however many
            with self.lock:                                # visitors open it at once
                fresh = self._fresh(key) is not None and path.is_file()
            if not fresh:
                kept, components = self._render(params)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
                tmp.write_bytes(orjson.dumps(components, option=orjson.OPT_SERIALIZE_NUMPY, default=str))
                tmp.replace(path)
                with self.lock:
                    self.files.add(str(path))
                    self.views[key] = (time.monotonic(), kept)
                    while len(self.views) > KEPT:
                        self.views.popitem(last=False)
        return key

    def prepare(self, params: dict) -> None:
        """Render ``params``' page in the background (the Copy link button: the first visitor
        of the link then finds it ready)."""
        def render():
            try:
                self.page(params, pages_folder(get_upload_folder()))
            except Exception:  # noqa: BLE001 - the link then opens the usual way
                pass
        threading.Thread(target=render, daemon=True).start()

    def served(self, params: dict) -> dict | None:
        """What the restoring event sends for ``params``' view when a page was built on it (the
        ``gr.State`` values are copies: sessions never share a value), else None."""
        with self.lock:
            kept = self._fresh(self.key(params)) if params else None
            return {c: copy.deepcopy(v) for c, v in kept.items()} if kept is not None else None

    def _fresh(self, key: str) -> dict | None:
        made, states = self.views.get(key, (0.0, None))
        if states is None or time.monotonic() - made > FRESH_S:
            self.views.pop(key, None)
            return None
        self.views.move_to_end(key)
        return states

    def _render(self, params: dict) -> tuple[dict, list[dict]]:
        values = {}
        for step in self.steps(params):
            values.update({c: v for c, v in step.items() if not (isinstance(v, dict) and v == gr.skip())})
        kept = {c: v for c, v in values.items() if isinstance(c, gr.State) or c in self.resent}
        props = {c._id: page_props(c, v) for c, v in values.items() if not isinstance(c, gr.State)}
        components = []
        for entry in self.demo.config["components"]:
            if entry["id"] in props:
                entry = {**entry, "props": {**entry["props"], **props[entry["id"]]}}
            components.append(entry)
        return kept, components


class LinkPagesMiddleware:
    """Serves a link's page built on its view (``LinkPages``) where the app has one: adds
    ``deep_link=<key>`` to the request of the page ``/`` when the view's parameters allow it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in ("", "/"):
            items = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            pages = getattr(scope["app"].get_blocks(), "link_pages", None)
            params = view_params(items)
            if pages is not None and params and "deep_link" not in dict(items):
                folder = pages_folder(scope["app"].uploaded_file_dir)
                try:
                    key = await anyio.to_thread.run_sync(pages.page, params, folder)
                except Exception:  # noqa: BLE001 - the page opens the usual way; its event says why
                    key = None
                if key:
                    query = urllib.parse.urlencode([*items, ("deep_link", key)])
                    scope = {**scope, "query_string": query.encode("latin-1")}
        await self.app(scope, receive, send)
