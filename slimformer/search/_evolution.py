"""Evolutionary search over the supernet under a latency budget (once-for-all's search, Cai et al. 2020).

A population of subnets that fit the budget is scored with the supernet (inherited weights); each
generation keeps the best ``parent_ratio`` of the population and fills the rest with children: half
mutations of one parent (every choice re-drawn with probability ``mutate_prob``), half crossovers of
two parents (every choice taken from one of the two). A child that misses the budget is drawn again,
so no subnet over the budget is ever scored or returned. The search stops after ``evaluations``
distinct subnets were scored; the answer is the best of all of them (ties: the larger latency).

Subnets are written as the same choice dict that the optuna search uses (``params_of`` /
``config_from_params``), so both searches move through one encoding of the space. Everything random
comes from one ``random.Random(seed)``: the same seed, scorer and table give the same answer.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .._errors import SlimformerError
from ..supernet import ArchConfig, SearchSpace
from ._optuna import _mb3d_positions, config_from_params, params_of
from ._scorers import Scorer


def choices(space: SearchSpace) -> dict[str, list[Any]]:
    """Every choice of the encoding and the values it may take."""
    out: dict[str, list[Any]] = {"stem": list(space.stem_widths),
                                 "mb3d_from": list(range(len(_mb3d_positions(space)) + 1))}
    tail = set(_mb3d_positions(space))
    for si in range(4):
        out[f"s{si}.width"] = list(space.stage_widths[si])
        for p in range(space.depths[si]):
            k = f"s{si}.b{p}"
            out[k], out[k + ".mlp"] = ["block", "skip"], list(space.mlp_ratios)
            if (si, p) in tail:
                out[k + ".heads"], out[k + ".qk"], out[k + ".v"] = list(space.heads), list(space.qk_dims), list(space.v_dims)
    return out


def mutate(params: dict[str, Any], opts: dict[str, list[Any]], rng: random.Random, prob: float) -> dict[str, Any]:
    return {k: (rng.choice(opts[k]) if rng.random() < prob else v) for k, v in params.items()}


def crossover(a: dict[str, Any], b: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {k: (a[k] if rng.random() < 0.5 else b[k]) for k in a}


def _mutant(space, enc, opts, rng, prob) -> Callable[[], ArchConfig]:
    return lambda: config_from_params(space, mutate(rng.choice(enc), opts, rng, prob))


def _crossed(space, enc, opts, rng, prob) -> Callable[[], ArchConfig]:
    # mutation rate 0: a crossover child is not mutated, but draws the same random stream as a mutant
    return lambda: config_from_params(space, mutate(crossover(*rng.sample(enc, 2), rng), opts, rng, 0.0))


def evolve(*, space: SearchSpace, predict: Callable[[ArchConfig], float], scorer: Scorer, budget_ms: float,
           evaluations: int = 100, population: int = 16, parent_ratio: float = 0.25, mutate_prob: float = 0.1,
           seed: int = 0, warm_start: list[ArchConfig] = (), tries: int = 200,
           on_eval: Callable[[], None] | None = None) -> tuple[ArchConfig, list[dict]]:
    """The best subnet within ``budget_ms`` after scoring ``evaluations`` distinct feasible subnets.

    ``warm_start`` configs that fit join the first population (e.g. a slimmed subnet). Returns
    (best config, trace: one row per scored subnet)."""
    if evaluations < 1 or population < 2:
        raise SlimformerError("evolutionary search needs at least 1 evaluation and a population of 2")
    rng = random.Random(seed)
    opts = choices(space)
    seen: dict[str, tuple[ArchConfig, float, float]] = {}
    trace: list[dict] = []

    def score(cfg: ArchConfig, gen: int, how: str) -> None:
        ms = predict(cfg)
        value = scorer(cfg)
        seen[cfg.key()] = (cfg, value, ms)
        trace.append({"step": len(trace), "phase": "evolution", "generation": gen, "origin": how,
                      "predicted_ms": ms, "score": value, "summary": cfg.summary()})
        if on_eval:
            on_eval()

    def draw(make: Callable[[], ArchConfig]) -> ArchConfig | None:
        for _ in range(tries):
            cfg = make()
            if cfg.key() not in seen and predict(cfg) <= budget_ms:
                return cfg
        return None

    for cfg in warm_start:
        if len(seen) < evaluations and cfg.key() not in seen and predict(cfg) <= budget_ms:
            score(cfg, 0, "warm start")
    while len(seen) < min(population, evaluations):
        cfg = draw(lambda: space.sample(rng))
        if cfg is None:
            break
        score(cfg, 0, "random")
    if not seen:
        raise SlimformerError(f"no random subnet of {tries} fits {budget_ms:g} ms: raise the budget or warm-start "
                              "the evolution with a subnet that fits")
    pop = sorted(seen.values(), key=lambda t: (t[1], t[2]), reverse=True)[:population]
    gen = 0
    while len(seen) < evaluations:
        gen += 1
        parents = pop[:max(2, round(parent_ratio * population))]
        enc = [params_of(space, p[0]) for p in parents]
        children = []
        for i in range(population - len(parents)):
            make = (_mutant if i % 2 == 0 else _crossed)(space, enc, opts, rng, mutate_prob)
            cfg = draw(make)
            if cfg is None or len(seen) >= evaluations:
                continue
            score(cfg, gen, "mutation" if i % 2 == 0 else "crossover")
            children.append(seen[cfg.key()])
        if not children:  # the neighbourhood is exhausted: nothing new fits
            break
        pop = sorted(parents + children, key=lambda t: (t[1], t[2]), reverse=True)[:population]
    best = max(seen.values(), key=lambda t: (t[1], t[2]))
    return best[0], trace
