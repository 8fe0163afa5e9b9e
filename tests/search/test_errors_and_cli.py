"""Error cases (one line, no traceback) and the README's main command on a fresh install."""
from __future__ import annotations

import json

import pytest

from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.search import search
from slimformer.supernet import Supernet, get_arch, get_space, save_supernet

from .conftest import make_table


def test_budget_below_the_fastest_subnet_names_the_minimum(tiny_table):
    lo = tiny_table.predict(tiny_table.space.smallest())
    with pytest.raises(SlimformerError, match=f"{lo:.3f} ms"):
        search(budget_ms=lo * 0.9, table=tiny_table)
    with pytest.raises(SlimformerError, match="positive"):
        search(budget_ms=-1, table=tiny_table)


def test_budget_above_the_largest_returns_it(tiny_table):
    hi = tiny_table.predict(tiny_table.space.largest())
    r = search(budget_ms=hi * 2, table=tiny_table)
    assert r.arch.key() == tiny_table.space.largest().key()
    assert any("above the largest subnet" in n for n in r.notes)


def test_checkpoint_from_another_space(tmp_path, tiny_space):
    other = get_space("tiny").__class__(**{**get_space("tiny").__dict__, "depths": (2, 2, 2, 3)})
    ck = save_supernet(tmp_path / "other.pt", Supernet(other))
    with pytest.raises(SlimformerError, match="another space"):
        search(budget_ms=1.0, table=make_table(tiny_space), supernet=ck)


def test_fast_needs_alpha(tmp_path, tiny_space, tiny_table, tiny_loaders):
    ck = save_supernet(tmp_path / "noalpha.pt", Supernet(tiny_space))
    with pytest.raises(SlimformerError, match="alpha"):
        search(budget_ms=1.0, table=tiny_table, supernet=ck, fast=True, loaders=tiny_loaders)


def test_supernet_without_alpha_defaults_to_optuna_accuracy(tmp_path, tiny_space, tiny_table, tiny_loaders):
    ck = save_supernet(tmp_path / "noalpha.pt", Supernet(tiny_space))
    lo, hi = tiny_table.predict(tiny_space.smallest()), tiny_table.predict(tiny_space.largest())
    r = search(budget_ms=(lo + hi) / 2, table=tiny_table, supernet=ck, trials=6, loaders=tiny_loaders)
    assert r.strategy == "optuna" and r.accuracy_driven and r.predicted_ms <= (lo + hi) / 2
    assert r.subnet_state is not None


@pytest.mark.parametrize("argv, needle", [
    (["search", "--budget-ms", "1", "--table", "no-such-table"], "available: "),
    (["search", "--budget-ms", "0.01", "--table", "iphone-lut"], "fastest subnet"),
    (["search", "--budget-ms", "1", "--table", "cpu-ort", "--lut-dir", "/nonexistent-dir"], "--build"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, argv, needle):
    assert main(argv + ["--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # no empty run directory is left behind


def test_cli_checkpoint_from_another_space(capsys, tmp_path, tiny_space):
    ck = save_supernet(tmp_path / "tiny.pt", Supernet(tiny_space))
    assert main(["search", "--budget-ms", "1.6", "--table", "iphone-lut", "--supernet", str(ck)]) == 2
    err = capsys.readouterr().err
    assert "another space" in err and err.count("\n") == 1


def test_main_job_on_a_fresh_install(capsys, tmp_path):
    """The README's `slimformer search --budget-ms 1.6 --table iphone-lut`: no supernet, default space."""
    out = tmp_path / "run"
    assert main(["search", "--budget-ms", "1.6", "--table", "iphone-lut", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NOT accuracy" in text and "slimformer train" in text and "typical error" in text
    data = json.loads((out / "arch.json").read_text())
    assert data["predicted_ms"] <= 1.6 and data["table_kind"] == "estimated" and data["strategy"] == "slim"
    assert data["space"] == "default" and data["accuracy_driven"] is False
    assert get_arch(out / "arch.json").key() == get_space("default").validate(get_arch(out / "arch.json")).key()
    for f in ("trace.jsonl", "search.png", "breakdown.png", "breakdown.json", "report.md", "report.html"):
        assert (out / f).stat().st_size > 0, f
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "src='search.png'" not in html
    bd = json.loads((out / "breakdown.json").read_text())
    ops = bd["ops"]
    assert ops and all(o["ms"] >= 0 for o in ops)
    # breakdown.png draws the ops, the per-call overhead and the correction: they add up to the prediction
    parts = bd["parts"]
    assert parts["ops_ms"] == pytest.approx(sum(o["ms"] for o in ops))
    assert parts["ops_ms"] + parts["overhead_ms"] + parts["correction_ms"] == pytest.approx(data["predicted_ms"])
    assert parts["overhead_ms"] > 0.5  # iphone-lut's per-call launch cost, half of L1's 1.61 ms
    # deterministic: the same command again writes the same arch.json
    assert main(["search", "--budget-ms", "1.6", "--table", "iphone-lut", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "arch.json").read_bytes() == (out / "arch.json").read_bytes()


@pytest.mark.slow
def test_build_a_missing_cpu_table_for_the_supernet_space(tmp_path, tiny_ckpt, tiny_loaders):
    """`--table cpu-ort --build`: measure the table of the supernet's space here, then search on it."""
    r = search(budget_ms=50.0, table="cpu-ort-test", lut_dir=tmp_path / "luts", build=True, supernet=tiny_ckpt,
               fast=True, loaders=tiny_loaders)
    assert r.table_kind == "measured" and r.table_name == "cpu-ort-test"
    assert (tmp_path / "luts" / "cpu-ort-test.json").is_file()
    from slimformer.latency_lut import get_table

    assert get_table("cpu-ort-test", lut_dir=tmp_path / "luts").space_hash == r.space_hash


def test_cli_with_a_supernet_on_builtin_data(capsys, tmp_path, tiny_table, tiny_ckpt):
    """The accuracy path end to end through the CLI: table file, supernet, built-in data via build_loaders."""
    table = tiny_table.save(tmp_path / "tiny-table.json")
    lo, hi = tiny_table.predict(tiny_table.space.smallest()), tiny_table.predict(tiny_table.space.largest())
    budget = f"{(lo + hi) / 2:.5f}"
    argv = ["search", "--budget-ms", budget, "--table", str(table), "--supernet", str(tiny_ckpt), "--batch-size",
            "16", "--recal-batches", "1", "--val-batches", "1", "--trials", "6", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "accuracy-driven | yes" in text
    data = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert data["strategy"] == "optuna" and data["accuracy_driven"] and data["predicted_ms"] <= float(budget)
    assert data["options"]["sampler"] == "tpe"  # the default with a supernet (twenty-sixth session)
    assert data["options"]["data"] == "builtin" and (tmp_path / "run" / "subnet.pt").is_file()
