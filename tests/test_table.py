"""demos.table: the app's read-only table keeps the Dataframe's value shape and escapes cells."""
from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from demos.table import TEMPLATE, Table, table_value


def test_values_become_headers_and_rows():
    frame = pd.DataFrame([[1, "wall", 0.5], [2, "tree", None]], columns=["#", "label", "score"])
    assert table_value(frame, []) == {"headers": ["#", "label", "score"],
                                      "data": [[1, "wall", 0.5], [2, "tree", None]]}
    assert table_value([[1, "a"]], ["n", "s"]) == {"headers": ["n", "s"], "data": [[1, "a"]]}
    assert table_value(None, ["n"]) == {"headers": ["n"], "data": []}
    given = {"headers": ["x"], "data": [[3]]}
    assert Table(headers=["n"], render=False).postprocess(given) == given


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_cells_are_shown_as_text_never_as_markup():
    """The template is evaluated in the browser as a JS template string: a cell holding markup
    (a rule label from an uploaded file) comes out escaped."""
    value = {"headers": ["label"], "data": [['<img src=x onerror="alert(1)">'], [None]]}
    script = (f"const value = {json.dumps(value)};\n"
              f"process.stdout.write(new Function('value', 'return `' + {json.dumps(TEMPLATE)} + '`')(value));")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout
    assert "<img" not in out and "&#60;img src=x onerror=&#34;alert(1)&#34;&#62;" in out
    assert out.count("<tr>") == 3 and "<td></td>" in out
