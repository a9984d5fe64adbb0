"""The commands of ``python -m core``: one module per command, each with ``add_parser`` (argparse)
and a ``main`` that calls the library; ``core/__main__.py`` finds them."""
