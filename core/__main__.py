"""The command line: ``python -m core <command> ...``.

Adding a command (how other modules plug in)
--------------------------------------------
Write ``core/cli/<name>.py`` with one function::

    def add_parser(subparsers):
        p = subparsers.add_parser("<name>", help="one line shown in `python -m core -h`")
        p.add_argument(...)
        p.set_defaults(run=main)          # main(args) -> int | None (exit code, None = 0)

Nothing else: this file finds every ``core/cli/*.py`` module and calls its ``add_parser``, in name
order (``convert`` is built in below). Import heavy things inside ``main``, not at module top, so
``python -m core -h`` stays fast. Report a user error by raising an exception (``ValueError``,
``BundleError``, ``LayerError``, ``FileNotFoundError``...): it is printed as one line
``error: <message>`` and the exit code is 2. ``--traceback`` shows the full traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path


def _convert(args) -> int:
    from .bundle import convert_checkpoint, load_bundle
    dest = convert_checkpoint(args.src, args.dest, name=args.name, overwrite=args.overwrite)
    b = load_bundle(dest)                # prove the bundle loads before saying so
    print(f"wrote {dest} ({b.architecture}, {b.resolution}px, {len(b.layers)} layers, "
          f"sha256 {b.config['source']['sha256'][:12]}...)")
    return 0


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a legacy .pth/.pt checkpoint into a bundle folder",
                              description="Read a gandissect ProGAN .pth or a rosinality StyleGAN2 .pt "
                              "(torch.load weights_only=True: files holding code are refused) and "
                              "write a bundle folder (config.json, generator.safetensors, README.md).")
    p.add_argument("src", help="checkpoint file (.pth / .pt)")
    p.add_argument("dest", help="bundle folder to write")
    p.add_argument("--name", help="model name stored in config.json (default: the folder name)")
    p.add_argument("--overwrite", action="store_true", help="replace a bundle already in DEST")
    p.set_defaults(run=_convert)


def command_modules() -> list[str]:
    """Names of the ``core.cli.*`` modules, sorted."""
    here = Path(__file__).resolve().parent / "cli"
    return sorted(f"core.cli.{m.name}" for m in pkgutil.iter_modules([str(here)]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Painting with Neurons: dissect and edit GAN generators.")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_convert(sub)
    for name in command_modules():
        importlib.import_module(name).add_parser(sub)
    return parser


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    known = (ValueError, KeyError, OSError)
    return msg if isinstance(e, known) else f"{type(e).__name__}: {msg}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # noqa: BLE001 - the CLI promises one line, no traceback
        if args.traceback:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
