"""Make the student notebooks (notebooks/*.ipynb) from the solutions (notebooks/solutions/*.ipynb).

    python notebooks/make_student.py

In a solution notebook, a code cell tagged "solution" answers an exercise: it starts with comment
lines (the prompt) and assigns the answers, the UPPER_CASE names it binds. The student version keeps
the comments and sets each answer to None, so the check cell after it skips with a message. The
Colab badge is pointed at the student copy, and outputs are dropped. tests/test_notebooks.py checks
that the committed student notebooks are what this script writes.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"


def answer_names(source: str) -> list[str]:
    """The UPPER_CASE names a cell assigns at top level, in order."""
    names = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
    return list(dict.fromkeys(names))


def blank_cell(source: str) -> str:
    """A solution cell's prompt comments, then ``NAME = None`` for each answer."""
    lines = source.splitlines()
    prompt = []
    for line in lines:
        if not line.startswith("#"):
            break
        prompt.append(line)
    names = answer_names(source)
    if not names:
        raise ValueError(f"a solution cell assigns no UPPER_CASE answer:\n{source}")
    return "\n".join(prompt + [f"{name} = None  # your answer" for name in names])


def student_notebook(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(solution)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("/notebooks/solutions/", "/notebooks/")
            continue
        cell.outputs, cell.execution_count = [], None
        if "solution" in cell.metadata.get("tags", []):
            cell.source = blank_cell(cell.source)
            cell.metadata["tags"] = ["exercise"]
    return nb


def student_text(solution_path: Path) -> str:
    return nbformat.writes(student_notebook(nbformat.read(solution_path, as_version=4))) + "\n"


def main() -> None:
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        out = HERE / path.name
        out.write_text(student_text(path), encoding="utf-8")
        print("wrote", out.relative_to(HERE.parent))


if __name__ == "__main__":
    main()
