"""Links that reopen a view: URL query parameters, and the "Copy link" button that makes them.

    ?tab=dissect&model=stylegan2-church&layer=layer8&unit=12
    ?tab=explore&images=100-115        ?tab=paint&image=7        ?tab=rewrite&preset=dome2tree

``tab`` picks the tab, ``model`` the model (a known id, or a Hub id of a model or of an edited
model); the others belong to one tab each (each tab's ``build`` returns them under ``"link"``:
parameter -> component). A parameter that is not valid is dropped with a notice and the view
keeps its default for it.
"""
from __future__ import annotations

import urllib.parse
from pathlib import Path

import gradio as gr

import core
from core.bundle import scratch_root

TABS = ("explore", "dissect", "paint", "watermark", "photo", "rewrite")
MAX_GRID = 64                      # Explore's largest grid


def _image_number(text) -> int:
    n = int(str(text).strip())
    if not 0 <= n < core.images.MAX_IMAGE_NUMBER:
        raise ValueError(f"image numbers are 0-{core.images.MAX_IMAGE_NUMBER - 1:,}")
    return n


def _unit(text) -> int:
    n = int(str(text).strip())
    if n < 0:
        raise ValueError("units are numbered from 0")
    return n


def check(params: dict, model, presets) -> tuple[dict, list[str]]:
    """The valid view parameters of ``params`` (already without ``model``) for ``model``, and a
    notice for each one dropped. ``presets``: the model's preset names."""
    ok, notices = {}, []
    checks = {
        "tab": lambda v: v if v in TABS else _fail(f"tabs are {', '.join(TABS)}"),
        "images": lambda v: (core.parse_image_numbers(v, max_count=MAX_GRID), v)[1],
        "layer": lambda v: model.generator.check_layer(v),
        "unit": _unit,
        "image": _image_number,
        "preset": lambda v: v if v in presets else _fail("this model has no such preset"),
    }
    for key, value in params.items():
        if key not in checks:
            notices.append(f"unknown link parameter {key!r} ignored")
            continue
        try:
            ok[key] = checks[key](value)
        except (ValueError, KeyError) as e:
            why = e.args[0] if isinstance(e, KeyError) and e.args else e
            notices.append(f"{key}={value!r} ignored: {why}")
    return ok, notices


def _fail(why: str):
    raise ValueError(why)


def linkable(model_id: str, default: str) -> bool:
    """Whether a model id means the same to someone else: not the default, not a local file."""
    if model_id == default:
        return False
    path = Path(model_id)
    return not (path.is_absolute() or path.exists() or scratch_root() in path.parents)


def query(tab: str, model_id: str, default: str, values: dict) -> str:
    """``?tab=...&model=...&...``: the view's parameters (``values``: parameter -> value of the
    current tab's link components; empty ones are left out)."""
    params = {"tab": tab or "explore"}
    if model_id and linkable(str(model_id), default):
        params["model"] = str(model_id)
    for key, value in values.items():
        if value is None or value == "":
            continue
        params[key] = str(int(value)) if isinstance(value, float) and value == int(value) else str(value)
    return "?" + urllib.parse.urlencode(params)


# Copies the link into the clipboard (when the page may) and shows it whole in the link box.
COPY_JS = """(q) => {
    const url = window.location.origin + window.location.pathname + q;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}"""


def _load_when_shown(steps, wanted, current_model) -> None:
    """Run a tab's ``steps`` (on ``current_model``) when ``wanted`` changes: ``restore`` sets it
    for the tab a page opens on, a first select of the tab for any other (unless the picker or a
    link already showed it: the tab's ``loaded``). Tabs not shown cost nothing, not even a round
    trip. (An API client, which opens no page, calls the steps' named endpoints on the default
    model.)"""
    from demos.context import chain
    (fn, inputs, outputs, *opts), rest = steps[0], steps[1:]
    first = wanted.change(fn, [current_model, *inputs[1:]], outputs,
                          **(opts[0] if opts else {"api_visibility": "private"}))
    chain(first, rest, model=current_model)


def wire(demo, ctx, tabs, tab_objects: dict, tab_specs: dict, picker, notice,
         current_model: gr.State) -> None:
    """Restore the view from the URL when a page opens; add the Copy link button (where this is
    called). ``tab_objects``: tab id -> its ``gr.Tab``; ``tab_specs``: tab id -> the dict its
    ``build`` returned; ``current_model``: the model every tab shows (the picker sets it too).

    A tab's ``"load"`` steps run when it is first shown: at page open for the tab the page opens
    on, and for each other tab when it is first selected. A page then renders one tab's images,
    not six tabs' at once, so the view a link names (or Explore's grid) comes first."""
    from demos.context import error_text, refresh_tabs
    from demos.rewrite_session import preset_paths
    model_ids = [spec["model_id"] for spec in tab_specs.values()]
    params_of = {key: comp for spec in tab_specs.values() for key, comp in spec.get("link", {}).items()}
    current = gr.State("explore")

    def restore(request: gr.Request):
        params = {k: v for k, v in dict(getattr(request, "query_params", {}) or {}).items()
                  if k not in ("__theme", "view")}
        skip = (gr.skip(),) * (3 + len(model_ids) + len(params_of))
        if not params:
            return (*skip, gr.skip(), None, ctx.default_source, *shown("explore", ctx.default_source))
        notes, model_id = [], ctx.default_source
        if "model" in params:
            try:
                ctx.get(params["model"])
                model_id = params["model"]
            except Exception as e:  # noqa: BLE001 - the link still opens, on the default model
                notes.append(f"model {params['model']!r} could not be opened ({error_text(e)}); "
                             "showing the default model")
        model = ctx.model(model_id)
        view, dropped = check({k: v for k, v in params.items() if k != "model"}, model,
                              list(preset_paths(model)))
        notes += dropped
        tab = view.get("tab", "explore")
        out = [gr.Tabs(selected=tab), tab, gr.update(value=model_id) if model_id != ctx.default_source
               else gr.skip(), *[model_id] * len(model_ids)]
        out += [view[key] if key in view else gr.skip() for key in params_of]
        note = ("⚠️ This link " + "; ".join(notes) + ".") if notes else ""
        if notes:
            gr.Warning("This link " + "; ".join(notes) + ".")
        return (*out, note, model_id if model_id != ctx.default_source else None, model_id,
                *shown(tab, model_id, view))

    # per tab with "load" steps: the model it was asked to show (its change runs the steps)
    wanted = {tab_id: gr.State(None) for tab_id, spec in tab_specs.items() if spec.get("load")}
    loaded = [tab_specs[tab_id]["loaded"] for tab_id in wanted]

    def shown(tab, model_id, params=()):
        """``wanted``'s and ``loaded``'s values: ``model_id`` and True for the tab the page opens
        on, unless the page was built showing that view already (``"preloaded"``, the default
        model, no parameter of that tab in the link)."""
        spec = tab_specs[tab]
        if tab not in wanted or (spec.get("preloaded") and model_id == ctx.default_source
                                 and not set(params) & set(spec.get("link", {}))):
            return [gr.skip()] * 2 * len(wanted)
        return ([model_id if tab_id == tab else gr.skip() for tab_id in wanted]
                + [True if tab_id == tab else gr.skip() for tab_id in wanted])

    changed = gr.State(None)
    demo.load(restore, None, [tabs, current, picker, *model_ids, *params_of.values(), notice,
                              changed, current_model, *wanted.values(), *loaded], api_name="link_restore")
    refresh_tabs(tab_specs.values(), changed)     # a link's model: every tab refreshes
    for tab_id, tab in tab_objects.items():
        # one round trip per select: the tab it is (for the link), and its first view if not shown yet
        if tab_id in wanted:
            tab.select(lambda model, done, t=tab_id: (t, gr.skip(), gr.skip()) if done else (t, model, True),
                       [current_model, tab_specs[tab_id]["loaded"]],
                       [current, wanted[tab_id], tab_specs[tab_id]["loaded"]],
                       api_visibility="private", show_progress="hidden")
            _load_when_shown(tab_specs[tab_id]["load"], wanted[tab_id], current_model)
        else:
            tab.select(lambda t=tab_id: t, None, current, api_visibility="private", show_progress="hidden")

    with gr.Row():
        link_btn = gr.Button("🔗 Copy link to this view", size="sm", scale=1, elem_id="link_copy")
        link_box = gr.Textbox(show_label=False, placeholder="the link appears here", scale=4,
                              interactive=False, elem_id="link_box")
    keys = list(params_of)

    def make(tab, model_id, *values):
        wanted = set(tab_specs.get(tab, {}).get("link", {}))
        return query(tab, model_id, ctx.default_source,
                     {k: v for k, v in zip(keys, values) if k in wanted})
    link_btn.click(make, [current, model_ids[0], *params_of.values()], link_box, api_name="link_make"
                   ).then(None, link_box, link_box, js=COPY_JS)
