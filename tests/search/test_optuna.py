"""Optuna strategy: constraint met, Pareto mode, resume, two processes on one SQLite study."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from slimformer._errors import SlimformerError
from slimformer.search import config_from_params, params_of, search

from .conftest import budgets


def test_params_round_trip(tiny_space):
    for seed in range(20):
        cfg = tiny_space.sample(seed)
        # positions, kinds, widths and dims survive; skipped positions carry no information
        assert config_from_params(tiny_space, params_of(tiny_space, cfg)).key() == cfg.key()


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_constrained_study_meets_the_budget(tmp_path, tiny_table, sampler):
    b = budgets(tiny_table)[0]
    r = search(budget_ms=b, table=tiny_table, strategy="optuna", sampler=sampler, trials=12, out=tmp_path / "r")
    assert r.predicted_ms <= b and tiny_table.space.check(r.arch) == []
    trace = [json.loads(x) for x in (tmp_path / "r" / "trace.jsonl").read_text().splitlines()]
    assert len(trace) == 12
    feasible = [t for t in trace if t["feasible"]]
    assert r.score == max(t["score"] for t in feasible)
    assert (tmp_path / "r" / "study.db").is_file() and (tmp_path / "r" / "search.png").stat().st_size > 1000
    # the constraint reached optuna through its constraint API
    study = optuna.load_study(study_name="slimformer-search", storage=f"sqlite:///{tmp_path / 'r' / 'study.db'}")
    from optuna.samplers._base import _CONSTRAINTS_KEY

    attrs = study.trials[0].system_attrs
    assert any(k.startswith(_CONSTRAINTS_KEY) for k in attrs)


def test_pareto_mode_reports_the_front(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    r = search(budget_ms=b, table=tiny_table, strategy="optuna", sampler="nsga2", mode="pareto", trials=12,
               out=tmp_path / "r")
    front = json.loads((tmp_path / "r" / "pareto.json").read_text())
    assert front and r.pareto == front
    # a Pareto front: sorted by latency, the score strictly increases
    assert all(a["predicted_ms"] <= c["predicted_ms"] and a["score"] < c["score"] for a, c in itertools.pairwise(front))
    assert r.predicted_ms <= b


def test_same_seed_same_arch_json(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    for d in ("a", "b"):
        search(budget_ms=b, table=tiny_table, strategy="optuna", trials=8, seed=3, out=tmp_path / d)
    assert (tmp_path / "a" / "arch.json").read_bytes() == (tmp_path / "b" / "arch.json").read_bytes()


def test_resume_continues_the_study(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    search(budget_ms=b, table=tiny_table, strategy="optuna", trials=5, out=tmp_path / "r")
    with pytest.raises(SlimformerError, match="--resume"):
        search(budget_ms=b, table=tiny_table, strategy="optuna", trials=8, out=tmp_path / "r")
    r = search(budget_ms=b, table=tiny_table, strategy="optuna", trials=8, out=tmp_path / "r", resume=True)
    assert len(r.trace) == 8 and [t["trial"] for t in r.trace] == list(range(8))
    with pytest.raises(SlimformerError, match="budget_ms"):
        search(budget_ms=b * 1.01, table=tiny_table, strategy="optuna", trials=9, out=tmp_path / "r", resume=True)


WORKER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from search.conftest import make_table
    from slimformer.search import search
    from slimformer.supernet import get_space
    t = make_table(get_space("tiny"))
    r = search(budget_ms={b!r}, table=t, strategy="optuna", trials=16, seed={seed}, storage={url!r},
               study_name="shared", resume=True)
    print("OK", len(r.trace))
""")


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    tests = str(Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(tests=tests, b=b, seed=s, url=url)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "OK" in out
    study = optuna.load_study(study_name="shared", storage=url)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # pruned: over budget
    done = [t for t in study.trials if t.state in finished]
    assert 16 <= len(done) <= 18  # MaxTrialsCallback stops both workers at 16 (a trial in flight may finish)
    assert len({t.number for t in done}) == len(done)


def test_resume_fails_trials_a_killed_run_left_running(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    search(budget_ms=b, table=tiny_table, strategy="optuna", trials=4, out=tmp_path / "r")
    url = f"sqlite:///{tmp_path / 'r' / 'study.db'}"
    study = optuna.load_study(study_name="slimformer-search", storage=url)
    study.ask()  # what a kill -9 in the middle of a trial leaves: a RUNNING trial
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.RUNNING) == 1
    r = search(budget_ms=b, table=tiny_table, strategy="optuna", trials=6, out=tmp_path / "r", resume=True)
    states = [t.state for t in optuna.load_study(study_name="slimformer-search", storage=url).trials]
    assert optuna.trial.TrialState.RUNNING not in states and states.count(optuna.trial.TrialState.FAIL) == 1
    assert len(r.trace) == 6


def test_out_folder_of_other_files_is_never_overwritten(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "arch.json").write_text('{"my": "own file"}')
    with pytest.raises(SlimformerError, match="not empty"):
        search(budget_ms=b, table=tiny_table, out=mine)
    with pytest.raises(SlimformerError, match="not empty"):
        search(budget_ms=b, table=tiny_table, strategy="optuna", trials=3, out=mine, resume=True)
    assert (mine / "arch.json").read_text() == '{"my": "own file"}' and len(list(mine.iterdir())) == 1
    (tmp_path / "f").write_text("x")
    with pytest.raises(SlimformerError, match="existing file"):
        search(budget_ms=b, table=tiny_table, out=tmp_path / "f")
    for bad in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(SlimformerError, match="latency budget"):
            search(budget_ms=bad, table=tiny_table)
