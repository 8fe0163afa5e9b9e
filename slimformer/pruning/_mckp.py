"""Multiple-choice knapsack: pick one option per group, maximise value, total cost <= capacity.

``solve_milp`` is exact (``scipy.optimize.milp``/HiGHS with a zero MIP gap): one binary per
(group, option), an equality row per group, one cost row. ``solve_greedy`` is the classic
value-per-cost upgrade heuristic, the baseline the exact solver is compared with.
Both return one option index per group, or raise :class:`Infeasible`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from .._errors import SlimformerError


class Infeasible(SlimformerError):
    """Even the cheapest option of every group exceeds the capacity."""


def _check(values, costs, capacity: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    values = [np.asarray(v, float) for v in values]
    costs = [np.asarray(c, float) for c in costs]
    if len(values) != len(costs) or any(v.shape != c.shape or v.ndim != 1 or not len(v)
                                        for v, c in zip(values, costs)):
        raise ValueError("values and costs must be matching non-empty 1-d arrays per group")
    floor = sum(float(c.min()) for c in costs)
    if floor > capacity:
        raise Infeasible(f"the cheapest choice costs {floor:.4g}, above the capacity {capacity:.4g}")
    return values, costs


def total(choice: Sequence[int], arrays: Sequence[np.ndarray]) -> float:
    return float(sum(a[i] for a, i in zip(arrays, choice)))


def solve_milp(values, costs, capacity: float, *, time_limit: float = 60.0) -> list[int]:
    values, costs = _check(values, costs, capacity)
    sizes = [len(v) for v in values]
    n = sum(sizes)
    scale = max(max(float(np.abs(v).max()) for v in values), 1e-300)
    c = -np.concatenate(values) / scale
    rows = np.repeat(np.arange(len(sizes)), sizes)
    one_hot = coo_matrix((np.ones(n), (rows, np.arange(n))), shape=(len(sizes), n)).tocsr()
    flat_costs = np.concatenate(costs)
    cap = float(capacity)
    for _ in range(20):  # tighten if the solver's feasibility tolerance let the rounded choice slip over
        res = milp(c, integrality=np.ones(n), bounds=Bounds(0, 1),
                   constraints=[LinearConstraint(one_hot, 1, 1), LinearConstraint(flat_costs[None, :], -np.inf, cap)],
                   options={"mip_rel_gap": 0.0, "time_limit": time_limit, "presolve": True})
        if res.x is None:
            raise Infeasible(f"no choice fits the capacity {capacity:.4g} ({res.message})")
        choice, start = [], 0
        for size in sizes:
            choice.append(int(np.argmax(res.x[start:start + size])))
            start += size
        spent = total(choice, costs)
        if spent <= capacity:
            return choice
        cap -= (spent - capacity) + 1e-12 * max(abs(capacity), 1.0)
    raise Infeasible(f"the MILP could not place a choice within the capacity {capacity:.4g}")


def solve_greedy(values, costs, capacity: float) -> list[int]:
    """Start from each group's cheapest option; repeatedly take the upgrade with the best value gained per
    cost added that still fits (free improvements first) until none is left."""
    values, costs = _check(values, costs, capacity)
    choice = [int(np.lexsort((-v, c))[0]) for v, c in zip(values, costs)]  # cheapest, best value on ties
    spent = total(choice, costs)
    while True:
        best, best_rate = None, 0.0
        for g, (v, c) in enumerate(zip(values, costs)):
            dv, dc = v - v[choice[g]], c - c[choice[g]]
            ok = (dv > 0) & (spent + dc <= capacity)
            if not ok.any():
                continue
            rate = np.where(ok, np.where(dc > 0, dv / np.maximum(dc, 1e-300), np.inf), -np.inf)
            i = int(np.argmax(rate))
            if rate[i] > best_rate or (best is None and rate[i] > 0):
                best, best_rate = (g, i), rate[i]
        if best is None:
            return choice
        g, i = best
        spent += costs[g][i] - costs[g][choice[g]]
        choice[g] = i
