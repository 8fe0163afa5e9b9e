from __future__ import annotations

import numpy as np
import pytest
import torch

from slimformer.pruning import (
    Infeasible,
    allocate,
    build_problem,
    expand,
    reorder_by_importance,
    solve_greedy,
    solve_milp,
    taylor_scores,
)
from slimformer.pruning._mckp import total
from slimformer.supernet import Supernet
from tests.conftest import randomize_
from tests.pruning._fakes import FakeTable
from tests.pruning.test_importance import _batches, _tiny_cfg


def _brute(values, costs, cap):
    import itertools

    best = -np.inf
    for ch in itertools.product(*[range(len(v)) for v in values]):
        if total(ch, costs) <= cap:
            best = max(best, total(ch, values))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_milp_within_capacity_optimal_and_beats_greedy(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(2, 6))
    values = [np.sort(rng.random(int(rng.integers(1, 6)))) * rng.random() * 10 for _ in range(groups)]
    costs = [np.sort(rng.random(len(v))) + 0.1 for v in values]
    lo, hi = sum(c.min() for c in costs), sum(c.max() for c in costs)
    cap = float(lo + rng.random() * (hi - lo))
    m, g = solve_milp(values, costs, cap), solve_greedy(values, costs, cap)
    assert total(m, costs) <= cap and total(g, costs) <= cap
    assert total(m, values) >= total(g, values) - 1e-9
    assert total(m, values) == pytest.approx(_brute(values, costs, cap), rel=1e-9)


def test_greedy_is_not_optimal_somewhere():
    # one big item worth more than two small ones with a better ratio: greedy takes the ratio and misses it
    values = [np.array([0.0, 1.2, 10.0]), np.array([0.0, 1.0])]
    costs = [np.array([0.0, 0.5, 5.0]), np.array([0.0, 0.5])]
    assert total(solve_milp(values, costs, 5.0), values) == 10.0
    assert total(solve_greedy(values, costs, 5.0), values) < 10.0


def test_infeasible_capacity():
    with pytest.raises(Infeasible):
        solve_milp([np.array([1.0, 2.0])], [np.array([1.0, 2.0])], 0.5)
    with pytest.raises(Infeasible):
        solve_greedy([np.array([1.0, 2.0])], [np.array([1.0, 2.0])], 0.5)


@pytest.fixture(scope="module")
def problem_setup():
    from slimformer.supernet import get_space

    space = get_space("tiny")
    torch.manual_seed(0)
    sn = randomize_(Supernet(space), seed=7).eval()
    cfg = _tiny_cfg(space)
    big = expand(cfg, space)
    imp = reorder_by_importance(sn, taylor_scores(sn, _batches(2, seed=3), cfg=big))
    table = FakeTable(space)
    return space, sn, cfg, table, imp, build_problem(cfg, space, table, imp)


def test_budget_respected_with_affine_correction(problem_setup):
    space, _sn, _cfg, table, _imp, prob = problem_setup
    lo, hi = (table.predict(prob.build([int(np.argmin(c)) for c in prob.costs])),
              table.predict(prob.build([int(np.argmax(c)) for c in prob.costs])))
    assert prob.a == pytest.approx(table.a) and prob.b == pytest.approx(table.b)
    for frac in (0.0, 0.1, 0.35, 0.6, 0.9, 1.0):
        budget = lo + frac * (hi - lo)
        res = {s: allocate(prob, table, budget, strategy=s, space=space) for s in ("milp", "greedy")}
        for a in res.values():
            assert a.predicted_ms <= budget
            assert a.predicted_ms == pytest.approx(table.predict(a.cfg))
            space.validate(a.cfg)
        assert res["milp"].value >= res["greedy"].value - 1e-12
        if frac >= 0.1:
            uni = allocate(prob, table, budget, strategy="uniform", space=space)
            assert uni.predicted_ms <= budget and res["milp"].value >= uni.value - 1e-12
    assert allocate(prob, table, hi, space=space).kept == pytest.approx(1.0)
    with pytest.raises(Infeasible, match="infeasible"):
        allocate(prob, table, lo * 0.99)


def test_pruned_model_equals_active_subnet(problem_setup):
    space, sn, cfg, table, _imp, prob = problem_setup
    budget = table.predict(prob.build([int(np.argmax(c)) for c in prob.costs])) * 0.8
    alloc = allocate(prob, table, budget)
    net = sn.extract_subnet(alloc.cfg).eval()
    assert net.num_params() < sn.extract_subnet(expand(cfg, space)).num_params()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), sn.set_active(alloc.cfg)(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("table_name", ["iphone-lut", "iphone12-ios16"])
def test_shipped_table_budget_on_l1(table_name):
    from slimformer.latency_lut import get_table
    from slimformer.pruning import BlockTaylorScores, TaylorScores
    from slimformer.supernet import arch_key, get_arch, get_space

    space, table = get_space("default"), get_table(table_name)
    assert table.space_hash == space.hash
    cfg = get_arch("l1")
    rng = np.random.default_rng(0)
    blocks = {}
    for si, pos, b in cfg.iter_blocks():
        m = space.max_hidden(si)
        if b.kind == "mb4d":
            blocks[arch_key(si, pos)] = BlockTaylorScores("mb4d", -np.sort(-rng.random(m)))
        else:
            H, D, E = space.heads[-1], space.qk_dims[-1], space.v_dims[-1]
            blocks[arch_key(si, pos)] = BlockTaylorScores(
                "mb3d", -np.sort(-rng.random(m)), -np.sort(-rng.random(H)), -np.sort(-rng.random((H, D)), axis=1),
                -np.sort(-rng.random((H, E)), axis=1), rng.random(H))
    prob = build_problem(cfg, space, table, TaylorScores(blocks, 1, expand(cfg, space)))
    lo = table.predict(prob.build([int(np.argmin(c)) for c in prob.costs]))
    hi = table.predict(prob.build([int(np.argmax(c)) for c in prob.costs]))
    assert lo < table.predict(cfg) <= hi
    for frac in (0.2, 0.5, 0.8):
        budget = lo + frac * (hi - lo)
        m, g = (allocate(prob, table, budget, strategy=s) for s in ("milp", "greedy"))
        assert m.predicted_ms <= budget and g.predicted_ms <= budget and m.value >= g.value - 1e-9


def test_pattern_verdict_is_honest():
    from slimformer.pruning import channel_rows, pattern_verdict
    from slimformer.supernet import get_space, mb3d

    space = get_space("tiny")
    cfg = _tiny_cfg(space)
    assert "shows:" in pattern_verdict(channel_rows(cfg.with_block(3, 1, mb3d(2, 8, 32, 1.0)), space))
    assert "does NOT show" in pattern_verdict(channel_rows(cfg.with_block(3, 1, mb3d(2, 16, 16, 1.0)), space))
    two = cfg.with_block(3, 1, mb3d(2, 8, 32, 1.0)).with_block(3, 2, mb3d(2, 16, 16, 1.0))
    assert "only partly" in pattern_verdict(channel_rows(two, space))
    no_attn = cfg.with_block(3, 1, mb3d(2, 8, 32, 1.0)).with_stage(3, cfg.stages[3].__class__(64, cfg.stages[3].blocks[:1]))
    assert "no MB3D" in pattern_verdict(channel_rows(no_attn, space))
