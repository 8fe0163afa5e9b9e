from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimformer.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_user_and_shipped_tables(capsys, micro_table):
    code, out, _ = run(capsys, "lut", "list", "--lut-dir", str(micro_table.path.parent))
    assert code == 0 and "micro-ort" in out and "measured" in out
    code, out, _ = run(capsys, "lut", "list", "--lut-dir", str(micro_table.path.parent), "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["micro-ort"]["source"] == "user" and rows["micro-ort"]["entries"] == len(micro_table.entries)


def test_show_prints_metadata_error_and_breakdown(capsys, micro_table, tmp_path):
    arch = tmp_path / "a.json"
    arch.write_text(micro_table.space.smallest().to_json())
    code, out, _ = run(capsys, "lut", "show", str(micro_table.path), "--arch", str(arch))
    assert code == 0
    assert "(measured)" in out and "onnxruntime" in out and "correction: x" in out
    assert "without correction" in out and "MB4D" in out and "predicted" in out


def test_show_with_a_preset_outside_the_space_says_so(capsys, micro_table):
    code, out, _ = run(capsys, "lut", "show", str(micro_table.path))  # --arch l1 by default
    assert code == 0 and "not in the table's space" in out


def test_profile_writes_a_png(capsys, micro_table, tmp_path):
    arch = tmp_path / "a.json"
    arch.write_text(micro_table.space.largest().to_json())
    code, out, _ = run(capsys, "lut", "profile", str(micro_table.path), "--arch", str(arch),
                       "--runs-root", str(tmp_path / "runs"))
    assert code == 0, out
    png = next((tmp_path / "runs").glob("lut-profile-*/profile.png"))
    assert png.stat().st_size > 5000
    prof = json.loads((png.parent / "profile.json").read_text())
    assert set(prof["by_stage_ms"]) == {"stem", "stage1", "stage2", "stage3", "stage4", "head"}
    # what the plot draws adds up to its title: ops + per-call overhead + correction = predicted
    drawn = sum(prof["by_kind_ms"].values()) + prof["overhead_ms"] + prof["correction_ms"]
    assert drawn == pytest.approx(prof["predicted_ms"], abs=1e-9) and abs(prof["correction_ms"]) > 1e-4
    stacked = sum(sum(d.values()) for d in prof["by_stage_ms"].values())
    assert stacked == pytest.approx(sum(prof["by_kind_ms"].values()))
    assert f"= {prof['predicted_ms']:.3f} ms" in out and "per-call overhead" in out and "correction" in out


def test_validate_cli(capsys, micro_table, tmp_path):
    code, out, _ = run(capsys, "lut", "validate", "--table", str(micro_table.path), "--samples", "3",
                       "--runs-root", str(tmp_path / "runs"), "--quiet")
    assert code == 0 and "within ±5%" in out and "Kendall tau" in out and "scatter.png" in out
    # the micro table pairs its subnets with a reference subnet: one round by default, the paired line printed
    assert "alternation with the table's reference subnet, 1 round(s)" in out
    assert "paired with the reference subnet" in out


@pytest.mark.parametrize("argv, msg", [
    (["lut", "show", "no-such-table"], "unknown latency table 'no-such-table': available:"),
    (["lut", "show", "cpu-ort"], "slimformer lut build --device cpu-ort"),
    (["lut", "show", "/nonexistent/t.json"], "not found"),
    (["lut", "build", "--table", "bad name!"], "invalid table name"),
    (["lut", "build", "--table", "x", "--threads", "0"], "at least 1"),
    (["lut", "build", "--table", "x", "--space", "nope"], "unknown search space"),
    (["lut", "validate", "--table", "iphone-lut", "--samples", "3"], "validation measures on this machine"),
    (["lut", "show", "iphone-lut", "--arch", "nope"], "unknown architecture"),
    (["lut", "profile", "iphone-lut", "--arch", str(Path(__file__).parent / "tiny_arch.json")], "not in the space"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, monkeypatch, argv, msg):
    monkeypatch.setenv("SLIMFORMER_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, *argv)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_show_an_estimated_table_says_it_is_an_estimate(capsys):
    code, out, _ = run(capsys, "lut", "show", "iphone-lut")
    assert code == 0 and "ESTIMATE" in out and "%" in out
