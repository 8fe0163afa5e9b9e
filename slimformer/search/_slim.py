"""Latency-driven slimming (EfficientFormer, Sec. 4.3), greedy from the largest subnet.

Each step scores a few candidate actions: latency saving from the table, score drop from the scorer
(accuracy of inherited weights, alpha importance, or a training-free proxy) and takes the action with
the smallest drop per millisecond saved. When some candidate already fits the budget, the step takes
the fitting candidate with the smallest drop instead (no point saving more than needed). A *fill* phase
then spends leftover budget: it applies the growth (wider stage, block back, larger MLP ratio, one more
MB3D) with the largest gain per millisecond that still fits, until none fits. With a cheap scorer it
then tries *swaps* (one growth plus one shrink) that fit and raise the score, and fills again (at most
``max_swaps`` swaps, so the run time stays bounded and deterministic).
"""
from __future__ import annotations

from collections.abc import Callable

from .._errors import SlimformerError
from ..supernet import ArchConfig, SearchSpace
from ._actions import Action, all_grows, all_shrinks, importance_shrinks, width_jumps
from ._scorers import Scorer

Predict = Callable[[ArchConfig], float]


def slim(*, space: SearchSpace, predict: Predict, scorer: Scorer, budget_ms: float,
         importance: Callable[[int, int], float] | None = None, fill: bool | None = None,
         start: ArchConfig | None = None, on_step: Callable[[float], None] | None = None,
         max_swaps: int | None = None) -> tuple[ArchConfig, list]:
    """Slim ``start`` (default: the largest subnet) until ``predict(cfg) <= budget_ms``.

    ``importance`` given: EfficientFormer's candidate set (least important block/stage, first MB3D);
    otherwise every single-step shrink is a candidate (cheap scorers only). Returns the config and the
    trace (one dict per step). The fill phase runs by default; swaps (a growth plus a shrink, each pair
    scored) default to 12 with a cheap scorer and none with an evaluated one (they cost a forward pass per
    pair and, on a small validation split, mostly fit its noise).
    """
    if max_swaps is None:
        max_swaps = 12 if scorer.cheap else 0
    cfg = start or space.largest()
    ms, score = predict(cfg), scorer(cfg)
    trace = [_row(0, "start", "largest subnet" if start is None else "start", cfg, ms, score, 0)]
    step = 0
    while ms > budget_ms:
        step += 1
        cands = importance_shrinks(space, cfg, importance) if importance else all_shrinks(space, cfg)
        chosen = _pick(cands, predict, scorer, ms, score, budget_ms)
        if chosen is None and importance:  # the importance moves saved nothing: widen the candidate set
            chosen = _pick(all_shrinks(space, cfg, stem=False), predict, scorer, ms, score, budget_ms)
        if chosen is None:  # no single step saves anything: a stage several widths narrower may
            chosen = _pick(width_jumps(space, cfg), predict, scorer, ms, score, budget_ms)
        if chosen is None:
            raise SlimformerError(f"slimming is stuck at {ms:.3f} ms: no action lowers the predicted latency "
                                  f"below it (budget {budget_ms:g} ms)")
        act, new_ms, new_score = chosen
        if on_step:
            on_step(ms - new_ms)
        cfg, ms, score = act.cfg, new_ms, new_score
        trace.append(_row(step, "slim", act.describe(), cfg, ms, score, len(cands)))
    if fill is None or fill:
        for _ in range(max_swaps + 1):
            while True:
                grown = _grow(space, cfg, predict, scorer, ms, score, budget_ms)
                if grown is None:
                    break
                act, ms, score = grown
                cfg = act.cfg
                step += 1
                trace.append(_row(step, "fill", act.describe(), cfg, ms, score, 0))
            swapped = _swap(space, cfg, predict, scorer, score, budget_ms) if max_swaps else None
            if swapped is None:
                break
            (g, s), ms, score = swapped
            cfg = s.cfg
            step += 1
            trace.append(_row(step, "swap", f"{g.describe()}; {s.describe()}", cfg, ms, score, 0))
    return cfg, trace


def _swap(space, cfg, predict, scorer, score, budget):
    """The best pair (one growth, then one shrink) that fits and raises the score, or None."""
    best, best_key = None, None
    for g in all_grows(space, cfg):
        if scorer(g.cfg) <= score:
            continue
        for s in all_shrinks(space, g.cfg):
            m = predict(s.cfg)
            if m > budget:
                continue
            v = scorer(s.cfg)
            if v > score and (best_key is None or (v, m) > best_key):
                best, best_key = ((g, s), m, v), (v, m)
    return best


def _pick(cands: list[Action], predict: Predict, scorer: Scorer, ms: float, score: float, budget: float):
    scored = []
    for a in cands:
        m = predict(a.cfg)
        if m < ms:
            scored.append((a, m, scorer(a.cfg)))
    if not scored:
        return None
    fitting = [t for t in scored if t[1] <= budget]
    if fitting:  # highest score among the candidates that fit; ties: the larger latency (uses the budget)
        return max(fitting, key=lambda t: (t[2], t[1]))
    return min(scored, key=lambda t: ((score - t[2]) / (ms - t[1]), -t[1]))


def _grow(space, cfg, predict, scorer, ms, score, budget):
    best, best_key = None, None
    for a in all_grows(space, cfg):
        m = predict(a.cfg)
        if m > budget:
            continue
        gain = scorer(a.cfg) - score
        if gain <= 0:
            continue
        added = m - ms
        key = (float("inf") if added <= 1e-12 else gain / added, gain)
        if best_key is None or key > best_key:
            best, best_key = (a, m, score + gain), key
    return best


def _row(step, phase, action, cfg, ms, score, n) -> dict:
    return {"step": step, "phase": phase, "action": action, "predicted_ms": ms, "score": score,
            "candidates": n, "summary": cfg.summary()}
