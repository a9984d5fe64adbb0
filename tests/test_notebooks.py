"""The classroom notebooks (notebooks/, docs/teaching.md).

The student copies are what ``notebooks/make_student.py`` makes of the solutions; every notebook
starts with its install line and an "Open in Colab" badge for its own path; executed top to bottom
(marker ``notebooks``), a student copy skips every check and a solution passes every check.
The notebooks import ``core`` from the repository root (the kernel's working directory), as they
would after ``pip install -e .``. Needs nbformat/nbclient/ipykernel (requirements-dev.txt).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -r requirements-dev.txt)")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = sorted((NOTEBOOKS / "solutions").glob("*.ipynb"))
STUDENTS = [NOTEBOOKS / p.name for p in SOLUTIONS]
COLAB = "https://colab.research.google.com/github/painting-with-neurons/painting-with-neurons/blob/main/"


def _make_student():
    spec = importlib.util.spec_from_file_location("make_student", NOTEBOOKS / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_five_notebooks_with_student_copies():
    assert [p.name for p in SOLUTIONS] == ["01_dissect.ipynb", "02_ablate_and_insert.ipynb", "03_photo.ipynb",
                                           "04_rewrite.ipynb", "05_share.ipynb"]
    assert sorted(NOTEBOOKS.glob("*.ipynb")) == STUDENTS


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_student_copy_is_in_sync(solution):
    committed = (NOTEBOOKS / solution.name).read_text(encoding="utf-8")
    assert committed == _make_student().student_text(solution), (
        "the student notebook differs from its solution; run: python notebooks/make_student.py")


@pytest.mark.parametrize("path", SOLUTIONS + STUDENTS, ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_install_line_and_colab_badge(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "import core" in first.source
    assert [line.strip() for line in first.source.splitlines() if "pip" in line] == [
        '%pip install -q "git+https://github.com/painting-with-neurons/painting-with-neurons"']
    assert f"({COLAB}{path.relative_to(ROOT).as_posix()})" in nb.cells[1].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit without outputs"
    assert "sys.path" not in "".join(c.source for c in nb.cells)


def _run(path) -> str:
    """Execute a notebook; its printed text."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -r requirements-dev.txt)")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.get("name") == "stdout")


def _exercises(path) -> int:
    return sum("solution" in c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells)


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_student_notebook_runs_with_checks_skipped(path):
    text = _run(path)
    n = _exercises(NOTEBOOKS / "solutions" / path.name)
    assert text.count("skipped: no answer yet") == n and "passed" not in text, text


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_notebook_passes_its_checks(path):
    text = _run(path)
    n = _exercises(path)
    assert 2 <= n <= 3
    assert all(f"Exercise {i} passed" in text for i in range(1, n + 1)) and "skipped" not in text, text
