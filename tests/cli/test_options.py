"""One spelling per meaning across commands: every option has help, defaults show, deprecated aliases warn."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from slimformer.cli import build_parser, main

PACKAGE = Path(__file__).resolve().parents[2] / "slimformer"
MAX_LINES = 60


def _parsers(parser: argparse.ArgumentParser, prefix: str = ""):
    yield prefix or "slimformer", parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _parsers(sub, f"{prefix} {name}".strip())


def test_every_option_has_help_and_shows_defaults():
    missing, formatters = [], set()
    for name, p in _parsers(build_parser()):
        formatters.add(p.formatter_class.__name__)
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            if not a.help or a.help is argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")
    assert not missing, "options without help: " + ", ".join(missing)
    assert formatters == {"HelpFormatter"}
    text = build_parser().parse_known_args  # the formatter is argparse's defaults formatter underneath
    assert text and issubclass(build_parser().formatter_class, argparse.ArgumentDefaultsHelpFormatter)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_one_name_per_meaning(capsys):
    for cmd in (["search"], ["prune"], ["lut", "build"], ["lut", "validate"]):
        text = _help(capsys, *cmd)
        assert "--table" in text and "--device" not in text, cmd  # the alias parses but is not advertised
    for cmd in (["train"], ["finetune"], ["bench"], ["search"]):
        text = _help(capsys, *cmd)
        assert "--torch-device" in text and "--compute" not in text, cmd
    for cmd in (["search"], ["prune"], ["lut", "validate"], ["lut", "profile"], ["train"], ["finetune"],
                ["bench"], ["export"], ["lut", "bundle"]):
        text = _help(capsys, *cmd)
        assert "--out DIR" in text and "--run-dir" not in text, cmd
        if cmd not in (["export"], ["lut", "bundle"]):
            assert "--runs-root ROOT" in text and "(default: runs)" in text, cmd
    for cmd in (["search"], ["prune"], ["lut", "build"], ["lut", "validate"], ["train"], ["finetune"], ["bench"]):
        text = _help(capsys, *cmd)
        assert "--quiet" in text and "--no-progress" not in text, cmd


def test_json_on_every_command_that_prints_a_result(capsys):
    for cmd in (["space", "show"], ["arch", "show", "l1"], ["lut", "list"], ["lut", "show", "x"],
                ["lut", "profile", "x"], ["lut", "build"], ["lut", "validate"], ["lut", "bundle"],
                ["lut", "import", "x"], ["train"], ["finetune"], ["search"], ["prune"], ["export", "l1"],
                ["bench"]):
        assert "--json" in _help(capsys, *cmd), cmd


def test_deprecated_alias_warns_once_and_parses(capsys):
    args = build_parser().parse_args(["search", "--budget-ms", "1", "--device", "cpu-ort", "--compute", "cpu",
                                      "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (args.table, args.torch_device, args.quiet) == ("cpu-ort", "cpu", True)
    assert len(err) == 3 and all("deprecated" in line for line in err)
    assert "use --table" in err[0] and "use --torch-device" in err[1] and "use --quiet" in err[2]
    args = build_parser().parse_args(["bench", "--device", "cpu", "--run-dir", "x"])
    assert (args.torch_device, args.out) == ("cpu", "x")
    assert "use --torch-device" in capsys.readouterr().err


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    """``path:function (lines)`` for every function of the package longer than ``limit`` lines."""
    found = []
    for f in sorted(root.rglob("*.py")):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = n.end_lineno - n.lineno + 1
                if lines > limit:
                    found.append(f"{f.relative_to(root.parent)}:{n.name} ({lines})")
    return found


def test_no_function_over_60_lines():
    over = long_functions()
    assert not over, "functions over 60 lines: " + ", ".join(over)


def test_long_function_check_finds_one(tmp_path):
    pkg = tmp_path / "slimformer"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n" + "    x = 1\n" * 61 + "\n\ndef g():\n    return 1\n")
    assert long_functions(pkg) == ["slimformer/m.py:f (62)"]


def test_op_pairing_is_left_to_the_thread_count_unless_asked():
    """``lut build`` pairs ops at more than one thread unless told (``_runner.pairs_ops``); ``lut bundle``
    names a reference op unless told not to, and its runner decides on the device the same way."""
    p = build_parser()
    assert p.parse_args(["lut", "build", "--table", "t"]).pair_ops is None
    assert p.parse_args(["lut", "build", "--table", "t", "--pair-ops"]).pair_ops is True
    assert p.parse_args(["lut", "build", "--table", "t", "--no-pair-ops"]).pair_ops is False
    assert p.parse_args(["lut", "bundle", "--out", "b"]).pair_ops is True
    assert p.parse_args(["lut", "bundle", "--out", "b", "--no-pair-ops"]).pair_ops is False
