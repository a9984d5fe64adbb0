"""``python -m core eval KIND ...``: evaluations, one sub-command per kind.

Adding a kind: write ``core/eval/<kind>.py`` with::

    def add_eval_parser(subparsers):
        p = subparsers.add_parser("<kind>", help="one line")
        ...
        p.set_defaults(run=main)          # main(args) -> int | None

This file finds every ``core/eval/*.py`` module (name order) and calls its ``add_eval_parser``.
As for top-level commands, import heavy things inside ``main`` so ``python -m core -h`` stays fast.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def eval_modules() -> list[str]:
    """Names of the ``core.eval.*`` modules, sorted."""
    here = Path(__file__).resolve().parent.parent / "eval"
    return sorted(f"core.eval.{m.name}" for m in pkgutil.iter_modules([str(here)]))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model or an editing method (one sub-command "
                                           "per kind; see `python -m core eval -h`)")
    sub = p.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    for name in eval_modules():
        module = importlib.import_module(name)
        if hasattr(module, "add_eval_parser"):
            module.add_eval_parser(sub)
