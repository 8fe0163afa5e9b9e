"""The ``slimformer`` command. Thin: parse arguments, call the package, print. No logic lives here.

Each command group registers itself from its own module (``_arch``, ``_lut``, ``_train``, ``_search``,
``_prune``, ``_export``). Errors a user can cause are :class:`SlimformerError`: one line, exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from .._errors import SlimformerError, one_line
from .._io import discard_new_run_dirs, run_dirs_made
from .._version import __version__
from . import _arch, _export, _lut, _prune, _search, _train

GROUPS = (_arch, _lut, _train, _search, _prune, _export)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (one line printed already) returns its status; --help/--version exit
        if e.code in (0, None):
            raise
        return int(e.code)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    mark = run_dirs_made()
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe (`| head`) shows here, not at exit
        return rc
    except SlimformerError as e:
        discard_new_run_dirs(mark)  # a command that failed on its inputs leaves no run folder behind
        print(f"slimformer: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141  # what a shell reports for a command ended by SIGPIPE


def _silence_stdout() -> None:
    """The reader of our stdout went away: point stdout at /dev/null so the exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
