from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slimformer.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "slimformer" in capsys.readouterr().out


def test_space_show(capsys):
    assert main(["space", "show", "--space", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "subnets" in out and "params" in out and "MACs" in out


def test_arch_show_preset_json(capsys):
    assert main(["arch", "show", "l1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 12_289_928 and info["arch"]["stages"][3]["width"] == 448


def test_arch_show_file_and_membership(tmp_path, capsys):
    from slimformer.supernet import get_arch

    f = tmp_path / "a.json"
    f.write_text(get_arch("l3").to_json())
    assert main(["arch", "show", str(f), "--space", "default"]) == 0
    assert "in space 'default': yes" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["arch", "show", "l9"], "unknown architecture 'l9'"),
    (["arch", "show", "missing.json"], "not found"),
    (["space", "show", "--space", "huge"], "unknown search space"),
])
def test_clear_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("slimformer: error:")


def test_malformed_arch_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"stem_width": 24, "stages": [{"width": 48, "blocks": [{"kind": "mb3d"}]}]}')
    r = subprocess.run([sys.executable, "-m", "slimformer", "arch", "show", str(bad)], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_arch_show_reads_a_run_directory(tmp_path, capsys):
    from slimformer.supernet import get_arch, read_arch

    run = tmp_path / "search-run"
    run.mkdir()
    (run / "arch.json").write_text(json.dumps({"arch": get_arch("l1").to_dict(), "predicted_ms": 1.6}))
    cfg, info, folder = read_arch(run)
    assert cfg == get_arch("l1") and info["predicted_ms"] == 1.6 and folder == run
    assert main(["arch", "show", str(run)]) == 0
    assert "w48-96-224-448" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["arch", "show", str(tmp_path / "empty")]) == 2
    assert "holds no arch.json" in capsys.readouterr().err
