"""Links that reopen a view: URL query parameters, and the "Copy link" button that makes them.

    ?tab=dissect&model=stylegan2-church&layer=layer8&unit=12
    ?tab=explore&images=100-115        ?tab=paint&image=7        ?tab=rewrite&preset=dome2tree

``tab`` picks the tab, ``model`` the model (a known id, or a Hub id of a model or of an edited
model); the others belong to one tab each (each tab's ``build`` returns them under ``"link"``:
parameter -> component). A parameter that is not valid is dropped with a notice and the view
keeps its default for it.
"""
from __future__ import annotations

import copy
import inspect
import urllib.parse
from pathlib import Path

import gradio as gr

import core
from core.bundle import scratch_root
from demos.link_pages import LinkPages, view_params

TABS = ("explore", "dissect", "paint", "watermark", "photo", "rewrite")
MAX_GRID = 64                      # Explore's largest grid


def _whole_number(text) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError("not a whole number") from None


def _image_number(text) -> int:
    n = _whole_number(text)
    if not 0 <= n < core.images.MAX_IMAGE_NUMBER:
        raise ValueError(f"image numbers are 0-{core.images.MAX_IMAGE_NUMBER - 1:,}")
    return n


def _unit(text) -> int:
    n = _whole_number(text)
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


def _load_when_shown(step, wanted, current_model) -> None:
    """Run a tab's ``"load"`` ``step`` (on ``current_model``) when ``wanted`` changes: a first
    select of the tab sets it (unless the picker or a link already showed the tab: its
    ``loaded``). Tabs not shown cost nothing, not even a round trip. (An API client, which opens
    no page, calls the step's named endpoint on the default model.)"""
    fn, inputs, outputs, *opts = step
    wanted.change(fn, [current_model, *inputs[1:]], outputs,
                  **(opts[0] if opts else {"api_visibility": "private"}))


def _unique(components) -> list:
    return list({id(c): c for c in components}.values())


def wire(demo, ctx, tabs, tab_objects: dict, tab_specs: dict, picker, notice,
         current_model: gr.State) -> None:
    """Restore the view from the URL when a page opens; add the Copy link button (where this is
    called). ``tab_objects``: tab id -> its ``gr.Tab``; ``tab_specs``: tab id -> the dict its
    ``build`` returned; ``current_model``: the model every tab shows (the picker sets it too).

    A tab's ``"load"`` step runs when it is first shown: at page open for the tab the page opens
    on (inside the restoring event itself), and for each other tab when it is first selected. A
    page then renders one tab's images, not six tabs' at once, so the view a link names (or
    Explore's grid) comes first."""
    from demos.context import error_text, refresh_tabs
    from demos.rewrite_session import preset_paths
    model_ids = [spec["model_id"] for spec in tab_specs.values()]
    params_of = {key: comp for spec in tab_specs.values() for key, comp in spec.get("link", {}).items()}
    current = gr.State("explore")

    # per tab with a "load" step: the model it was asked to show (its change runs the step)
    wanted = {tab_id: gr.State(None) for tab_id, spec in tab_specs.items() if spec.get("load")}
    loaded = [tab_specs[tab_id]["loaded"] for tab_id in wanted]
    changed = gr.State(None)
    outputs = [tabs, current, picker, *model_ids, *params_of.values(), notice, changed, current_model,
               *wanted.values(), *loaded]
    # restore runs the load step of the tab a page opens on itself, in the same event (a round
    # trip less than setting its ``wanted``): it takes the steps' inputs and gives their outputs
    steps = {tab_id: tab_specs[tab_id]["load"] for tab_id in wanted}
    inputs = _unique(c for _, ins, *_ in steps.values() for c in ins[1:])
    outputs += [c for c in _unique(c for _, _, outs, *_ in steps.values() for c in outs)
                if all(c is not o for o in outputs)]

    def view(params: dict, given: dict):
        """The view of a link's ``params``: the {component: value} dicts the restoring event
        sends, in order (``given``: id -> value of the load steps' inputs in the page)."""
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
        restored = {tabs: gr.Tabs(selected=tab), current: tab,
                    notice: ("⚠️ This link " + "; ".join(notes) + ".") if notes else "",
                    changed: model_id if model_id != ctx.default_source else None,
                    current_model: model_id, **{c: model_id for c in model_ids},
                    **{params_of[k]: view[k] for k in params_of if k in view}}
        if model_id != ctx.default_source:
            restored[picker] = gr.update(value=model_id)
        spec = tab_specs[tab]
        if tab not in steps or (spec.get("preloaded") and model_id == ctx.default_source
                                and not set(view) & set(spec.get("link", {}))):
            yield restored                      # the page shows this view already
            return
        restored[spec["loaded"]] = True
        yield restored
        # the tab's first view: its load step, on the link's values where it names them
        fn, ins, outs, *_ = steps[tab]
        linked = {id(params_of[k]): view[k] for k in params_of if k in view}
        results = fn(model_id, *[linked.get(id(c), given[id(c)]) for c in ins[1:]])
        for result in (results if inspect.isgenerator(results) else [results]):
            yield dict(zip(outs, result if len(outs) > 1 else [result]))

    def servable(params: dict) -> bool:
        """Whether a page can arrive on the link's view: the default model (named or not), a
        tab built into the page (or one with nothing to load)."""
        tab = params.get("tab") if params.get("tab") in TABS else "explore"
        return (params.get("model", ctx.default_source) == ctx.default_source
                and bool(tab_specs[tab].get("preloaded", tab not in steps)))

    pages = LinkPages(demo, lambda params: view(params, {id(c): copy.deepcopy(c.value) for c in inputs}),
                      servable, resent=[notice])
    demo.link_pages = pages          # read by LinkPagesMiddleware (demos/settings.py: launch_options)

    def restore(request: gr.Request, *values):
        params = view_params(dict(getattr(request, "query_params", {}) or {}).items())
        if not params:
            yield place({changed: None, current_model: ctx.default_source})
            return
        served = pages.served(params)    # the page arrived on the view: only its session values
        for i, step in enumerate([served] if served is not None
                                 else view(params, dict(zip(map(id, inputs), values)))):
            if i == 0 and step.get(notice):
                gr.Warning(step[notice].removeprefix("⚠️ "))
            yield place(step)

    position = {id(o): i for i, o in enumerate(outputs)}

    def place(values: dict) -> tuple:
        """``outputs``' values: ``values`` (component -> value) where given, else skip."""
        out = [gr.skip()] * len(outputs)
        for comp, value in values.items():
            out[position[id(comp)]] = value
        return tuple(out)

    demo.load(restore, inputs, outputs, api_name="link_restore")
    refresh_tabs(tab_specs.values(), changed)     # a link's model: every tab refreshes
    for tab_id, tab in tab_objects.items():
        # one round trip per select: the tab it is (for the link), and its first view if not shown yet
        if tab_id in wanted:
            tab.select(lambda model, done, t=tab_id: (t, gr.skip(), gr.skip()) if done else (t, model, True),
                       [current_model, tab_specs[tab_id]["loaded"]],
                       [current, wanted[tab_id], tab_specs[tab_id]["loaded"]],
                       api_visibility="private", show_progress="hidden")
            _load_when_shown(steps[tab_id], wanted[tab_id], current_model)
        else:
            tab.select(lambda t=tab_id: t, None, current, api_visibility="private", show_progress="hidden")

    with gr.Row():
        link_btn = gr.Button("🔗 Copy link to this view", size="sm", scale=1, elem_id="link_copy")
        link_box = gr.Textbox(show_label=False, placeholder="the link appears here", scale=4,
                              interactive=False, elem_id="link_box")
    keys = list(params_of)

    def make(tab, model_id, *values):
        wanted = set(tab_specs.get(tab, {}).get("link", {}))
        q = query(tab, model_id, ctx.default_source, {k: v for k, v in zip(keys, values) if k in wanted})
        pages.prepare(dict(urllib.parse.parse_qsl(q[1:])))   # ready before anyone opens it
        return q
    link_btn.click(make, [current, model_ids[0], *params_of.values()], link_box, api_name="link_make"
                   ).then(None, link_box, link_box, js=COPY_JS)
