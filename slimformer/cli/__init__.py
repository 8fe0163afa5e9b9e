"""The ``slimformer`` command. Thin: parse arguments, call the package, print. No logic lives here.

Each command group registers itself from its own module (``_arch``, ``_lut``, ``_train``, ``_search``,
``_prune``, ``_export``). Errors a user can cause are :class:`SlimformerError`: one line, exit 2.
"""
from __future__ import annotations

import argparse
import sys

from .._errors import SlimformerError
from .._version import __version__
from . import _arch, _export, _lut, _prune, _search, _train

GROUPS = (_arch, _lut, _train, _search, _prune, _export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimformer",
        description="Find the most accurate EfficientFormer-style vision transformer that fits a latency "
                    "budget on a device: train a supernet, build latency tables, search, prune, export.")
    parser.add_argument("--version", action="version", version=f"slimformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except SlimformerError as e:
        print(f"slimformer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimformer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
