"""Evaluations (``python -m core eval KIND``): one module per kind, library functions plus an
``add_eval_parser``; ``core/cli/eval.py`` finds them."""
