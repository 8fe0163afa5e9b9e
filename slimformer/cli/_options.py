"""The options every command spells the same way, and the help formatter that shows their defaults.

One name, one meaning, across commands:

* ``--table NAME|FILE``  a latency table (``slimformer lut list``); ``--device`` is its deprecated alias in
  search/prune/lut, where it used to mean the table.
* ``--torch-device auto|cpu|cuda[:N]``  where PyTorch runs; ``--device`` (train, finetune, bench) and
  ``--compute`` (search) are its deprecated aliases. Not ``--device``: that word meant a latency table in
  half the commands, and a user of both kinds of command would never know which one a script meant.
* ``--out DIR``  exactly the folder this command writes into (created; resumed where the command resumes).
  ``--runs-root ROOT``  where a new ``<command>-<time>`` folder is made when ``--out`` is not given.
* ``--quiet``  no progress output (bars, per-epoch lines); the result is still printed.
* ``--json``  print the result as JSON on stdout instead of the text summary.

A deprecated alias parses to the same value and prints one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

SKIP_DEFAULTS = (None, False, argparse.SUPPRESS)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, without "(default: None/False)" noise or a second "default" mention,
    and without the deprecated spellings of an option."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is d for d in SKIP_DEFAULTS) or action.default == []:
            return text
        return super()._get_help_string(action)

    def _format_action_invocation(self, action):
        hidden = getattr(action, "deprecated", {})
        if not hidden or not action.option_strings:
            return super()._format_action_invocation(action)
        shown = argparse.Action(option_strings=[s for s in action.option_strings if s not in hidden],
                                dest=action.dest, nargs=action.nargs, metavar=action.metavar,
                                required=action.required, help=action.help)
        return super()._format_action_invocation(shown)


class Parser(argparse.ArgumentParser):
    """Every (sub)parser shows defaults; subparsers inherit this class through ``add_subparsers``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _warn(option_string: str, new: str) -> None:
    print(f"slimformer: warning: {option_string} is deprecated here, use {new}", file=sys.stderr)


class _Deprecating:
    """Mixin for an argparse action whose ``deprecated`` spellings ({old: new}) warn once per use."""

    def __init__(self, *args, deprecated: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.deprecated = deprecated or {}

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.deprecated:
            _warn(option_string, self.deprecated[option_string])
        super().__call__(parser, namespace, values, option_string)


class _Store(_Deprecating, argparse._StoreAction):
    pass


class _StoreTrue(_Deprecating, argparse._StoreTrueAction):
    pass


def add_table(p: argparse.ArgumentParser, *, required: bool = False, default: str | None = None,
              help: str = "latency table name (see `slimformer lut list`) or table JSON file",
              device_alias: bool | str = True) -> None:
    """``--table`` (``args.table``); ``--device`` (or the spelling ``device_alias`` names) as its deprecated
    alias where it used to mean the table."""
    old = "--device" if device_alias is True else device_alias or None
    names = ("--table", old) if old else ("--table",)
    p.add_argument(*names, dest="table", action=_Store, required=required, default=default, metavar="TABLE",
                   help=help, deprecated={old: "--table"} if old else None)


def add_torch_device(p: argparse.ArgumentParser, *, old: str | None = "--device", default: str = "auto",
                     help: str = "where PyTorch runs: auto (CUDA when available), cpu, cuda or cuda:N") -> None:
    """``--torch-device`` (``args.torch_device``), with ``old`` as its deprecated alias."""
    names = ("--torch-device", old) if old else ("--torch-device",)
    p.add_argument(*names, dest="torch_device", action=_Store, default=default, metavar="DEVICE", help=help,
                   deprecated={old: "--torch-device"} if old else None)


def add_run_folder(p: argparse.ArgumentParser, kind: str, *, runs_root: bool = True, old: str | None = None,
                   required: bool = False, help: str | None = None) -> None:
    """``--out`` (``args.out``): exactly the folder written; ``--runs-root`` (``args.runs_root``): the parent of
    a new ``<kind>-<time>`` folder when ``--out`` is not given. ``old`` is a deprecated alias of ``--out``."""
    names = ("--out", old) if old else ("--out",)
    p.add_argument("-o", *names, dest="out", action=_Store, required=required, default=None, metavar="DIR",
                   deprecated={old: "--out"} if old else None,
                   help=help or f"exactly the {kind} folder to write into (created if missing)")
    if runs_root:
        p.add_argument("--runs-root", default="runs", metavar="ROOT",
                       help=f"where a new {kind}-<time> folder goes when --out is not given")


def add_quiet(p: argparse.ArgumentParser, *, old: str | None = None) -> None:
    names = ("-q", "--quiet", old) if old else ("-q", "--quiet")
    p.add_argument(*names, dest="quiet", action=_StoreTrue, deprecated={old: "--quiet"} if old else None,
                   help="no progress output (bars, per-epoch lines); the result is still printed")


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON instead of the text summary")


def progress(args) -> bool:
    """Progress bars: unless ``--quiet``, and only on a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def print_json(data: Any) -> int:
    print(json.dumps(data, indent=2, default=str))
    return 0
