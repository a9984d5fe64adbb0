"""A read-only table, drawn by a few lines of HTML instead of Gradio's Dataframe.

The app's tables only show rows (Paint's edit list, the watermark units, Rewrite's history);
``gr.Dataframe`` brought ~120 kB of scripts (sorting, editing, virtual scrolling) that every
visitor's browser loaded and ran at page open, ~0.2 s of a first visit. The value keeps the
Dataframe's shape for API clients: ``{"headers": [...], "data": [[...], ...]}``; a handler may
return a ``pandas.DataFrame``, a list of rows (under ``headers``), or that dict.
"""
from __future__ import annotations

import html
import json

import gradio as gr
import pandas as pd

# Evaluated in the browser as a JS template string (gr.HTML): cells are escaped there, since a
# rule's label (from an uploaded file) is shown here as text.
ESC = "String(@X@ ?? '').replace(/[&<>\"']/g, ch => `&#${ch.charCodeAt(0)};`)"
TEMPLATE = """
<div class="tb-frame" style="max-height:@HEIGHT@">
  <div class="tb-label">@LABEL@</div>
  <table class="tb">
    <thead><tr>${(value?.headers || []).map(h => `<th>${@H@}</th>`).join('')}</tr></thead>
    <tbody>${(value?.data || []).map(r => `<tr>${r.map(c => `<td>${@C@}</td>`).join('')}</tr>`).join('')}</tbody>
  </table>
</div>
""".replace("@H@", ESC.replace("@X@", "h")).replace("@C@", ESC.replace("@X@", "c"))

CSS = """
.tb-frame { overflow: auto; }
.tb-label { font-size: var(--block-label-text-size, 0.85em); opacity: 0.8; margin-bottom: 4px; }
.tb { border-collapse: collapse; width: 100%; font-size: 0.9em; }
.tb th, .tb td { border: 1px solid var(--border-color-primary, #ddd); padding: 3px 8px;
                 text-align: left; }
.tb th { background: var(--table-even-background-fill, #f6f6f6); }
"""


def table_value(value, headers: list[str]) -> dict:
    """``value`` (a DataFrame, rows under ``headers``, or the dict itself) as the table's dict."""
    if isinstance(value, pd.DataFrame):
        split = json.loads(value.to_json(orient="split", index=False))
        return {"headers": split["columns"], "data": split["data"]}
    if isinstance(value, dict):
        return {"headers": list(value.get("headers") or headers), "data": list(value.get("data") or [])}
    return {"headers": list(headers), "data": [list(r) for r in (value or [])]}


class Table(gr.HTML):
    """A read-only table; ``headers`` name the columns of a value given as rows."""

    # every argument is named: Gradio rebuilds the component from its constructor's arguments
    # when an update changes one
    def __init__(self, value=None, *, headers: list[str] | None = None, label: str = "",
                 max_height: int | None = None, elem_id: str | None = None, **kwargs):
        for fixed in ("html_template", "css_template", "js_on_load"):
            kwargs.pop(fixed, None)
        self.headers = list(headers or [])
        template = (TEMPLATE.replace("@LABEL@", html.escape(label))
                    .replace("@HEIGHT@", f"{max_height}px" if max_height else "none"))
        super().__init__(value=value, elem_id=elem_id, html_template=template, css_template=CSS,
                         js_on_load=None, **kwargs)

    def postprocess(self, value):
        return table_value(value, self.headers)

    def preprocess(self, payload):
        return payload

    def api_info(self):
        return {"type": "object", "description": "the table: {'headers': [...], 'data': [[...], ...]}"}

    def example_payload(self):
        return {"headers": self.headers, "data": []}

    def example_value(self):
        return {"headers": self.headers, "data": []}
