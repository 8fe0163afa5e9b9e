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
from dataclasses import dataclass, field
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


def _rank(rows) -> list[tuple[ArchConfig, float, float]]:
    """Best first: by score, ties by the larger latency."""
    return sorted(rows, key=lambda t: (t[1], t[2]), reverse=True)


@dataclass
class _Evolution:
    """One search's budget, scorer and random stream, and every subnet it has scored."""
    space: SearchSpace
    predict: Callable[[ArchConfig], float]
    scorer: Scorer
    budget_ms: float
    evaluations: int
    tries: int
    on_eval: Callable[[], None] | None
    rng: random.Random
    seen: dict[str, tuple[ArchConfig, float, float]] = field(default_factory=dict)  # key -> (cfg, score, ms)
    trace: list[dict] = field(default_factory=list)

    def score(self, cfg: ArchConfig, gen: int, how: str) -> None:
        ms = self.predict(cfg)
        value = self.scorer(cfg)
        self.seen[cfg.key()] = (cfg, value, ms)
        self.trace.append({"step": len(self.trace), "phase": "evolution", "generation": gen, "origin": how,
                           "predicted_ms": ms, "score": value, "summary": cfg.summary()})
        if self.on_eval:
            self.on_eval()

    def draw(self, make: Callable[[], ArchConfig]) -> ArchConfig | None:
        """A new subnet from ``make`` that fits the budget, or None after ``tries`` misses."""
        for _ in range(self.tries):
            cfg = make()
            if cfg.key() not in self.seen and self.predict(cfg) <= self.budget_ms:
                return cfg
        return None

    def first_population(self, warm_start: list[ArchConfig], population: int) -> list:
        """The warm-start configs that fit, then random subnets, up to ``population``; ranked."""
        for cfg in warm_start:
            if len(self.seen) < self.evaluations and cfg.key() not in self.seen \
                    and self.predict(cfg) <= self.budget_ms:
                self.score(cfg, 0, "warm start")
        while len(self.seen) < min(population, self.evaluations):
            cfg = self.draw(lambda: self.space.sample(self.rng))
            if cfg is None:
                break
            self.score(cfg, 0, "random")
        if not self.seen:
            raise SlimformerError(f"no random subnet of {self.tries} fits {self.budget_ms:g} ms: raise the budget or "
                                  "warm-start the evolution with a subnet that fits")
        return _rank(self.seen.values())[:population]

    def children(self, parents: list, n: int, gen: int, opts: dict[str, list[Any]], mutate_prob: float) -> list:
        """Up to ``n`` scored children of ``parents``: mutants and crossovers in turn."""
        enc = [params_of(self.space, p[0]) for p in parents]
        out = []
        for i in range(n):
            make = (_mutant if i % 2 == 0 else _crossed)(self.space, enc, opts, self.rng, mutate_prob)
            cfg = self.draw(make)
            if cfg is None or len(self.seen) >= self.evaluations:
                continue
            self.score(cfg, gen, "mutation" if i % 2 == 0 else "crossover")
            out.append(self.seen[cfg.key()])
        return out


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
    run = _Evolution(space, predict, scorer, budget_ms, evaluations, tries, on_eval, rng)
    pop = run.first_population(warm_start, population)
    gen = 0
    while len(run.seen) < evaluations:
        gen += 1
        parents = pop[:max(2, round(parent_ratio * population))]
        children = run.children(parents, population - len(parents), gen, opts, mutate_prob)
        if not children:  # the neighbourhood is exhausted: nothing new fits
            break
        pop = _rank(parents + children)[:population]
    best = max(run.seen.values(), key=lambda t: (t[1], t[2]))
    return best[0], run.trace
