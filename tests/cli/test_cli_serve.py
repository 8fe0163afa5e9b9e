from __future__ import annotations

import importlib.util

import pytest

from slimformer.cli import main
from slimformer.cli._export import SERVE_DEPS, missing_serve_deps


def test_serve_without_its_extra_is_one_line_hint(monkeypatch, capsys, tmp_path):
    """fastapi/uvicorn/python-multipart are the [serve] extra: without them, one line naming it and exit 2."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert missing_serve_deps() == ["fastapi"]
    rc = main(["serve", "--model", str(tmp_path / "model.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "install slimformer[serve]" in err and "fastapi" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_serve_deps_are_the_serve_extra():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert sorted(meta["optional-dependencies"]["serve"]) == sorted(SERVE_DEPS)
    assert not set(SERVE_DEPS) & {d.split(">")[0].split("=")[0] for d in meta["dependencies"]}
    assert "slimformer[serve]" in meta["optional-dependencies"]["dev"]
