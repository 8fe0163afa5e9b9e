"""An optuna study as optuna and optuna-dashboard read it: over-budget trials pruned (no value plotted at
0), constraints in both the optuna-5 and the list form the dashboard reads, named objectives, ties to the
faster trial."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from slimformer.search import search
from slimformer.search._optuna import _summarise

from .conftest import budgets


def _study(run_dir):
    return optuna.load_study(study_name="slimformer-search", storage=f"sqlite:///{run_dir / 'study.db'}")


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_infeasible_trials_are_pruned_and_best_trial_agrees(tmp_path, tiny_table, sampler):
    b = budgets(tiny_table)[0]
    r = search(budget_ms=b, table=tiny_table, strategy="optuna", sampler=sampler, trials=12, out=tmp_path / "r")
    study = _study(tmp_path / "r")
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 12
    over = [t for t in trials if t.user_attrs["predicted_ms"] > b]
    assert over, "the low budget should reject some trials"
    for t in trials:
        assert (t.state == TrialState.PRUNED) == (t.user_attrs["predicted_ms"] > b)
        c = t.user_attrs["predicted_ms"] - b
        assert t.system_attrs["constraints"] == [pytest.approx(c)]  # the form optuna-dashboard reads
        assert t.constraints and all(v == pytest.approx(c) for v in t.constraints.values())  # optuna's own
        assert (t.value is None) == (t.state == TrialState.PRUNED)
    assert study.best_trial.value == pytest.approx(r.score)
    assert study.best_trial.user_attrs["predicted_ms"] <= b
    assert study.metric_names == ["MACs (training-free capacity proxy)"]
    # what optuna-dashboard serialises and calls best
    ser = pytest.importorskip("optuna_dashboard._serializer")
    rows = [ser.serialize_frozen_trial(study._study_id, t, {}) for t in trials]
    assert all(row["constraints"] == t.system_attrs["constraints"] for row, t in zip(rows, trials))
    assert study._storage.get_best_trial(study._study_id).number == study.best_trial.number


def test_pareto_study_names_both_objectives(tmp_path, tiny_table):
    b = budgets(tiny_table)[1]
    search(budget_ms=b, table=tiny_table, strategy="optuna", sampler="nsga2", mode="pareto", trials=8,
           out=tmp_path / "r")
    study = _study(tmp_path / "r")
    assert study.metric_names == ["MACs (training-free capacity proxy)", "predicted latency (ms)"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_tie_goes_to_the_faster_trial(tiny_table):
    sp = tiny_table.space
    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for ms in (0.9, 0.5, 0.7):  # equal score, the second is fastest
        cfg = sp.sample(int(ms * 10))
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1.0,
                                                  user_attrs={"predicted_ms": ms, "arch": cfg.to_dict()}))
    best, trace, _ = _summarise(study, budget_ms=1.0, constrained=True)
    assert best == sp.sample(5) and [t["score"] for t in trace] == [1.0] * 3
