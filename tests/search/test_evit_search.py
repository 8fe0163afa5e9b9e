"""Search on the EfficientViT family: actions, slimming, optuna, the main job's CLI with --space."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slimformer._errors import SlimformerError
from slimformer.latency_lut import LatencyTable, parse_key, space_ops
from slimformer.search import search
from slimformer.search._actions import all_grows, all_shrinks
from slimformer.supernet import count_macs, get_arch, get_space


def _op_ms(key: str) -> float:
    """A made-up cost, monotone in the op's dims: 2 us per op plus its size at about 0.5 G/s."""
    _kind, d = parse_key(key)
    size = 1
    for k, v in d.items():
        if k not in ("a",):
            size *= max(v, 1)
    return 0.002 + size / 5e8


@pytest.fixture
def evit_tiny():
    return get_space("efficientvit-tiny")


@pytest.fixture
def evit_table(evit_tiny):
    entries = {k: _op_ms(k) for k in space_ops(evit_tiny)}
    return LatencyTable.from_entries(entries, name="evit-fake", kind="measured", device="evit-fake",
                                     backend="analytic", space=evit_tiny, overhead_ms=0.01)


def test_actions_stay_in_the_space_and_move_one_step(evit_tiny):
    sp = evit_tiny
    for seed in range(15):
        cfg = sp.sample(seed)
        shrinks, grows = all_shrinks(sp, cfg), all_grows(sp, cfg)
        assert shrinks or cfg == sp.smallest()
        for a in shrinks + grows:
            assert sp.contains(a.cfg) and a.cfg != cfg and a.describe()
        assert all(count_macs(a.cfg) <= count_macs(cfg) for a in shrinks if a.kind != "heads")
    kinds = {a.kind for s in range(15) for a in all_shrinks(sp, sp.sample(s))}
    assert kinds >= {"width", "depth", "heads", "qk", "v", "ffn", "kernel"}


@pytest.mark.parametrize("strategy", ["slim", "optuna"])
def test_search_fits_the_budget_in_the_space(evit_table, evit_tiny, strategy, tmp_path):
    lo, hi = evit_table.predict(evit_tiny.smallest()), evit_table.predict(evit_tiny.largest())
    budget = lo + 0.5 * (hi - lo)
    r = search(budget_ms=budget, table=evit_table, strategy=strategy, trials=25, out=tmp_path / "run")
    assert r.predicted_ms <= budget and evit_tiny.contains(r.arch)
    assert r.predicted_ms >= lo
    assert get_arch(tmp_path / "run") == r.arch  # arch.json reads back as an EfficientViT config


def test_main_job_cli_with_space(evit_table, tmp_path):
    path = evit_table.save(tmp_path / "luts" / "cpu-fake-efficientvit-tiny.json")
    lo = evit_table.predict(evit_table.space.smallest())
    cmd = [sys.executable, "-m", "slimformer", "search", "--budget-ms", f"{lo * 1.3:.4f}", "--device", "cpu-fake",
           "--space", "efficientvit-tiny", "--lut-dir", str(path.parent), "--runs-root", str(tmp_path / "runs"),
           "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    arch = json.loads(out.stdout)["arch"]
    assert arch["family"] == "efficientvit"
    bad = subprocess.run(cmd[:8] + ["--space", "efficientvit", "--lut-dir", str(path.parent)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2 and "lut build --device cpu-fake-efficientvit" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_table_of_another_space_is_refused(evit_table):
    from slimformer.latency_lut import resolve_table

    with pytest.raises(SlimformerError, match="another search space"):
        resolve_table(evit_table, space=get_space("tiny"))
    with pytest.raises(SlimformerError, match="another search space"):
        search(budget_ms=1.0, table=evit_table, space="tiny")


def test_slimming_jumps_widths_where_one_step_narrower_is_slower(evit_tiny):
    """Measured latency is not monotone in width (a 176-channel stage ran slower than a 192 one at 2 threads):
    when no single step lowers the predicted latency, slimming tries every narrower width of a stage."""
    import dataclasses

    from slimformer.search._scorers import MacsProxy
    from slimformer.search._slim import slim

    sp = dataclasses.replace(evit_tiny, stage_widths=((16, 24, 32), (32, 40, 48), (48, 56, 64)), name="evit3")
    top = [max(w) for w in sp.stage_widths]
    low = [min(w) for w in sp.stage_widths]

    def predict(cfg):  # the widest and the narrowest width of a stage are fast, every width between is slow
        ms = 0.0
        for si, st in enumerate(cfg.stages):
            ms += st.width * (1 if st.width in (top[si], low[si]) else 10) * st.depth
        return ms

    smallest = predict(sp.smallest())
    budget = predict(sp.smallest().with_width(0, top[0]).with_width(1, top[1]).with_width(2, top[2])) - 1
    assert smallest < budget
    cfg, trace = slim(space=sp, predict=predict, scorer=MacsProxy(), budget_ms=budget)
    assert predict(cfg) <= budget and sp.contains(cfg)
    assert any(row["phase"] == "slim" and "width" in row["action"] for row in trace)
