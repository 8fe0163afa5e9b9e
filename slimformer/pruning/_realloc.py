"""Per-block reallocation of heads, Q/K dim, V dim and FFN width under a latency budget.

The searched config fixes the stage-level structure (stem, widths, which positions are MB4D, MB3D or
skip). For every non-skip block the options are the space's choices the latency table covers (MB4D:
MLP ratios; MB3D: heads x Q/K dim x V dim x MLP ratio). An option's value is the Taylor importance
it keeps -- with channels sorted by importance (after :func:`reorder_by_importance`) that is a sum of
prefixes: ``sum_{i<h} (bias_i + sum_{j<d} qk_ij + sum_{j<e} v_ij) + sum_{j<m} ffn_j``. Its cost is
``table.block_ms(block, stage=, width=)``.

The table predicts ``a * (fixed + sum of block ms) + b`` (an affine correction fitted to
measurements, or the identity; the correction's per-op term is part of ``b`` here, because every
option of a block runs the same number of ops). ``a`` and ``b`` are read off ``table.predict`` with and without the
correction, and the budget becomes a capacity on the sum of block costs; every answer is checked
against ``table.predict`` itself and the capacity tightened if a rounding let it slip over.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import SlimformerError
from ..supernet import ArchConfig, BlockConfig, SearchSpace, arch_key, mb3d, mb4d
from ._importance import BlockTaylorScores, TaylorScores, _evit
from ._mckp import Infeasible, solve_greedy, solve_milp, total

STRATEGIES = ("milp", "greedy", "uniform")


def expand(cfg: ArchConfig, space: SearchSpace) -> ArchConfig:
    """``cfg`` with every non-skip block at the space's largest internal dims (the analysis subnet)."""
    if _evit(space):
        from . import _evit as ev

        return ev.expand(cfg, space)
    out = cfg
    for si, pos, b in cfg.iter_blocks():
        if b.kind == "mb4d":
            out = out.with_block(si, pos, mb4d(space.max_mlp_ratio))
        elif b.kind == "mb3d":
            out = out.with_block(si, pos, space.largest_mb3d())
    return out


def block_options(space: SearchSpace, kind: str) -> list[BlockConfig]:
    if kind == "mb4d":
        return [mb4d(r) for r in space.mlp_ratios]
    return [mb3d(h, d, e, r) for h, d, e, r in
            itertools.product(space.heads, space.qk_dims, space.v_dims, space.mlp_ratios)]


def option_value(imp: BlockTaylorScores, b: BlockConfig, width: int) -> float:
    """Importance kept by option ``b`` (scores already in reordered, descending order; NaN counts 0)."""
    val = float(np.nansum(imp.ffn[:b.hidden(width)]))
    if b.kind == "mb3d":
        h = b.heads
        val += float(np.nansum(imp.bias[:h]) + np.nansum(imp.qk[:h, :b.qk_dim]) + np.nansum(imp.v[:h, :b.v_dim]))
    return val


@dataclass
class Problem:
    """The knapsack instance for one stage-level config."""

    cfg: ArchConfig
    keys: list[str]
    where: list[tuple[int, int, int]]          # (stage, pos, width) per block
    options: list[list[BlockConfig]]
    values: list[np.ndarray]
    costs: list[np.ndarray]
    a: float = 1.0
    b: float = 0.0
    fixed_ms: float = 0.0
    full_value: float = 0.0

    def capacity(self, budget_ms: float) -> float:
        return (budget_ms - self.b) / self.a - self.fixed_ms

    def build(self, choice: list[int]) -> ArchConfig:
        out = self.cfg
        for (si, pos, _), opts, i in zip(self.where, self.options, choice):
            out = out.with_block(si, pos, opts[i])
        return out


def _block_ms(table, b: BlockConfig, si: int, width: int) -> float | None:
    try:
        ms = table.block_ms(b, stage=si, width=width)
    except (KeyError, SlimformerError, ValueError):
        return None  # the table does not cover this option
    return None if ms is None or not np.isfinite(ms) else float(ms)


def build_problem(cfg: ArchConfig, space: SearchSpace, table, imp: TaylorScores) -> Problem:
    if _evit(space):
        from . import _evit as ev

        return ev.build_problem(cfg, space, table, imp)
    keys, where, options, values, costs = [], [], [], [], []
    full = 0.0
    for si, pos, b in cfg.iter_blocks():
        if b.kind == "skip":
            continue
        key, width = arch_key(si, pos), cfg.stages[si].width
        if key not in imp.blocks or imp.blocks[key].kind != b.kind:
            raise SlimformerError(f"the importance scores do not cover block {key} ({b.kind}); "
                                  "were they computed for another architecture?")
        bi = imp.blocks[key]
        opts, vals, cs = [], [], []
        for o in block_options(space, b.kind):
            ms = _block_ms(table, o, si, width)
            if ms is not None:
                opts.append(o)
                vals.append(option_value(bi, o, width))
                cs.append(ms)
        if not opts:
            raise SlimformerError(f"the latency table covers no option of block {key} ({b.kind}, width {width})")
        full += option_value(bi, expand(cfg, space).block(si, pos), width)
        keys.append(key)
        where.append((si, pos, width))
        options.append(opts)
        values.append(np.array(vals))
        costs.append(np.array(cs))
    p = Problem(cfg, keys, where, options, values, costs, full_value=full)
    _calibrate(p, table)
    return p


def smallest_predicted_ms(cfg: ArchConfig, space: SearchSpace, table) -> float:
    """Predicted latency of ``cfg`` with every block at its cheapest option the table covers (no scores needed)."""
    if _evit(space):
        from . import _evit as ev

        return ev.smallest_predicted_ms(cfg, space, table)
    out = cfg
    for si, pos, b in cfg.iter_blocks():
        if b.kind == "skip":
            continue
        width = cfg.stages[si].width
        costs = [(ms, o) for o in block_options(space, b.kind) if (ms := _block_ms(table, o, si, width)) is not None]
        if not costs:
            raise SlimformerError(f"the latency table covers no option of block {arch_key(si, pos)} ({b.kind}, "
                                  f"width {width})")
        out = out.with_block(si, pos, min(costs, key=lambda c: c[0])[1])
    return float(table.predict(out))


def _calibrate(p: Problem, table) -> None:
    """Find ``a, b, fixed`` with ``table.predict(c) == a * (fixed + sum block ms) + b``."""
    hi = [int(np.argmax(c)) for c in p.costs]
    lo = [int(np.argmin(c)) for c in p.costs]
    c_hi, c_lo = p.build(hi), p.build(lo)
    r_hi, r_lo = float(table.predict(c_hi, corrected=False)), float(table.predict(c_lo, corrected=False))
    k_hi, k_lo = float(table.predict(c_hi)), float(table.predict(c_lo))
    if abs(r_hi - r_lo) > 1e-9 * max(abs(r_hi), 1.0):
        p.a = (k_hi - k_lo) / (r_hi - r_lo)
    else:
        p.a = 1.0 if abs(r_hi) < 1e-12 else k_hi / r_hi
    p.b = k_hi - p.a * r_hi
    if p.a <= 0:
        raise SlimformerError(f"table {getattr(table, 'name', '?')} has a non-increasing latency correction")
    p.fixed_ms = r_hi - total(hi, p.costs)


@dataclass
class Allocation:
    strategy: str
    cfg: ArchConfig
    choice: list[int]
    value: float
    kept: float              # value / value of the analysed (largest) blocks
    predicted_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "arch": self.cfg.to_dict(), "importance": self.value,
                "importance_kept": self.kept, "predicted_ms": self.predicted_ms, **self.extra}


def _uniform(p: Problem, cap: float, space: SearchSpace) -> list[int]:
    """Largest common fraction ``t`` of every choice list (same relative size in every block) that fits."""
    def pick(xs, t):
        return xs[round(float(t) * (len(xs) - 1))]

    for t in np.linspace(1.0, 0.0, 201):
        choice = []
        for (si, pos, width), opts in zip(p.where, p.options):
            r = pick(space.mlp_ratios, t)
            want = mb4d(r) if opts[0].kind == "mb4d" else mb3d(pick(space.heads, t), pick(space.qk_dims, t),
                                                              pick(space.v_dims, t), r)
            if want not in opts:
                break
            choice.append(opts.index(want))
        else:
            if total(choice, p.costs) <= cap:
                return choice
    raise Infeasible("no uniform ratio fits the budget")


def allocate(p: Problem, table, budget_ms: float, *, strategy: str = "milp",
             space: SearchSpace | None = None) -> Allocation:
    """Solve ``p`` for ``budget_ms`` with ``strategy`` (milp, greedy, uniform); the answer's
    ``table.predict`` never exceeds the budget."""
    if strategy not in STRATEGIES:
        raise SlimformerError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    cap = p.capacity(budget_ms)
    floor = p.a * (p.fixed_ms + sum(float(c.min()) for c in p.costs)) + p.b
    if cap < sum(float(c.min()) for c in p.costs):
        raise Infeasible(f"budget {budget_ms:g} ms is infeasible: the smallest reallocation of this "
                         f"architecture is predicted at {floor:.3f} ms")
    for _ in range(20):
        if strategy == "milp":
            choice = solve_milp(p.values, p.costs, cap)
        elif strategy == "greedy":
            choice = solve_greedy(p.values, p.costs, cap)
        elif _evit(space):
            from . import _evit as ev

            choice = ev.uniform(p, cap, space)
        else:
            choice = _uniform(p, cap, space or _space_of(p))
        cfg = p.build(choice)
        pred = float(table.predict(cfg))
        if pred <= budget_ms:
            value = total(choice, p.values)
            kept = value / p.full_value if p.full_value > 0 else float("nan")
            return Allocation(strategy, cfg, choice, value, kept, pred, {"sum_block_ms": total(choice, p.costs)})
        cap -= (pred - budget_ms) / p.a + 1e-9
    raise Infeasible(f"budget {budget_ms:g} ms: no {strategy} allocation is predicted within it")


def _space_of(p: Problem) -> SearchSpace:
    raise SlimformerError("the uniform strategy needs the search space")
