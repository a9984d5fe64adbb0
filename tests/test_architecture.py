"""The seams ARCHITECTURE.md promises: core's modules import each other without cycles, never
import gradio or demos, and only core/generators knows which family a generator is."""
from __future__ import annotations

import ast
import re
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"


def _modules() -> dict[str, Path]:
    out = {}
    for f in CORE.rglob("*.py"):
        parts = f.relative_to(CORE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, modules) -> set[str]:
    """Every module of ``modules`` that ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:   # "from . import x" imports the module x when there is one
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_core_has_no_import_cycle_and_no_ui_imports():
    modules = _modules()
    graph = {m: {i for i in _imports(m, f, modules) if i in modules and i != m} for m, f in modules.items()}
    for m, f in modules.items():
        bad = {i for i in _imports(m, f, modules) if i.split(".")[0] in ("gradio", "demos")}
        assert not bad, f"{m} imports {bad}"
    done, active = set(), []

    def visit(m):
        if m in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(m):] + [m]))
        if m in done:
            return
        active.append(m)
        for n in sorted(graph[m]):
            visit(n)
        active.pop()
        done.add(m)
    for m in sorted(graph):
        visit(m)


def test_only_generators_know_the_family():
    pattern = re.compile(r"""family\s*[!=]=|[!=]=\s*["'](progan|stylegan2)["']|isinstance\([^)]*(ProGAN|StyleGAN2)Generator""")
    for root in ("core", "demos", "training"):
        for f in (CORE.parent / root).rglob("*.py"):
            if "generators" in f.parts:
                continue
            hits = [line for line in f.read_text().splitlines() if pattern.search(line)]
            assert not hits, f"{f}: family checks belong in core/generators: {hits}"
