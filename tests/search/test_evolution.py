"""Evolutionary search: never over the budget, deterministic per seed, better than its random start."""
from __future__ import annotations

import json

import pytest

from slimformer._errors import SlimformerError
from slimformer.search import MacsProxy, SupernetAccuracy, evolve, search
from slimformer.search._evolution import choices, crossover, mutate
from slimformer.supernet import load_supernet

from .conftest import budgets


class CountingMacs(MacsProxy):
    cheap = False  # behave like an evaluated scorer: count every distinct subnet scored


def test_choices_cover_every_parameter(tiny_space):
    import random

    from slimformer.search import params_of

    opts = choices(tiny_space)
    rng = random.Random(0)
    for seed in range(10):
        p = params_of(tiny_space, tiny_space.sample(seed))
        assert set(p) == set(opts) and all(v in opts[k] for k, v in p.items())
        assert set(mutate(p, opts, rng, 1.0)) == set(p)
        q = params_of(tiny_space, tiny_space.sample(seed + 100))
        assert all(v in (p[k], q[k]) for k, v in crossover(p, q, rng).items())


def test_budget_never_exceeded_and_evaluations_counted(tiny_table):
    sp = tiny_table.space
    for b in budgets(tiny_table):
        scorer = CountingMacs()
        best, trace = evolve(space=sp, predict=tiny_table.predict, scorer=scorer, budget_ms=b, evaluations=30,
                             population=8, seed=1)
        assert tiny_table.predict(best) <= b and sp.check(best) == []
        assert all(t["predicted_ms"] <= b for t in trace)  # no subnet over the budget was ever scored
        assert len(trace) == scorer.calls == 30
        assert scorer(best) == max(t["score"] for t in trace)


def test_evolution_improves_on_its_first_generation(tiny_table):
    b = budgets(tiny_table)[1]
    _best, trace = evolve(space=tiny_table.space, predict=tiny_table.predict, scorer=MacsProxy(), budget_ms=b,
                         evaluations=80, population=8, seed=0)
    first = max(t["score"] for t in trace if t["generation"] == 0)
    assert max(t["score"] for t in trace) > first


def test_search_api_same_seed_same_arch_json(tmp_path, tiny_table, tiny_ckpt, tiny_loaders):
    b = budgets(tiny_table)[1]
    for d in ("a", "b"):
        r = search(budget_ms=b, table=tiny_table, supernet=tiny_ckpt, strategy="evolution", trials=10, seed=2,
                   loaders=tiny_loaders, out=tmp_path / d)
        assert r.predicted_ms <= b and r.accuracy_driven
    a = json.loads((tmp_path / "a" / "arch.json").read_text())
    assert (tmp_path / "a" / "arch.json").read_bytes() == (tmp_path / "b" / "arch.json").read_bytes()
    assert a["strategy"] == "evolution" and a["options"]["evaluations"] == 10
    other = search(budget_ms=b, table=tiny_table, supernet=tiny_ckpt, strategy="evolution", trials=10, seed=5,
                   loaders=tiny_loaders)
    assert other.predicted_ms <= b


def test_scores_match_the_supernet(tiny_table, tiny_ckpt, tiny_loaders):
    ck = load_supernet(tiny_ckpt)
    b = budgets(tiny_table)[0]
    scorer = SupernetAccuracy(ck.model, tiny_loaders.train, tiny_loaders.val)
    best, trace = evolve(space=ck.space, predict=tiny_table.predict, scorer=scorer, budget_ms=b, evaluations=6,
                         population=4, seed=0)
    assert scorer.calls == 6 and max(t["score"] for t in trace) == scorer(best)


def test_impossible_budget_is_one_clear_error(tiny_table):
    sp = tiny_table.space
    with pytest.raises(SlimformerError, match="fits"):
        evolve(space=sp, predict=tiny_table.predict, scorer=MacsProxy(), budget_ms=1e-6, evaluations=5, tries=20)


def test_cli_strategy_evolution(capsys, tmp_path, tiny_table, tiny_ckpt):
    from slimformer.cli import main

    table = tiny_table.save(tmp_path / "tiny-table.json")
    budget = f"{budgets(tiny_table)[1]:.5f}"
    argv = ["search", "--budget-ms", budget, "--device", str(table), "--supernet", str(tiny_ckpt), "--strategy",
            "evolution", "--trials", "6", "--batch-size", "16", "--recal-batches", "1", "--val-batches", "1",
            "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert data["strategy"] == "evolution" and data["predicted_ms"] <= float(budget)
    assert data["options"] == {**data["options"], "trials": 6, "evaluations": 6}
    assert len((tmp_path / "run" / "trace.jsonl").read_text().splitlines()) == 6
