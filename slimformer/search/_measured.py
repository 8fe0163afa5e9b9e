"""Measure a search's answer where its table was built, and search again at a re-scaled budget when it misses.

A table predicts random subnets within a few per cent (docs/lut-fidelity.md), but a search does not pick a random
subnet: it goes to the widest corner of the space, where the table's error is largest and leans one way, and
among subnets near the budget it tends to find the ones the table prices too cheap. Only a measurement of the
answer sees that. When the table was measured on this machine (``kind == "measured"``, the same CPU, a
backend this machine runs), ``search`` times its answer the way the table's build timed its calibration
subnets (in alternation with the build's reference subnet, so at the build's level), and when the answer
lands outside :data:`BAND` of the budget it searches again at ``predicted x AIM x budget / measured``: the
budget under which a subnet priced as wrongly as this one would measure at ``AIM`` of the budget. At most :data:`ROUNDS` subnets are measured; the answer is the best-scoring one measured
within the budget (or, if none is, the fastest, with a note).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._errors import SlimformerError
from ..latency_lut._fidelity import measure_arch, table_reference
from ..latency_lut._measure import cpu_model
from ..supernet import ArchConfig

BAND = (0.97, 1.0)  # measured / budget that ends the search
AIM = 0.985  # where a re-scaled search aims: the middle of the band
ROUNDS = 3  # subnets measured at most (the first answer and two searches again)
REPEATS = 30  # timed calls per measurement at least (the build's other timing settings kept) ...
MIN_TIME_S = 0.5  # ... and about this much timing: a 1 ms subnet at 2 threads needs hundreds of calls to settle


def not_measurable(table, *, threads: int | None, batch: int | None, backend: str | None) -> str | None:
    """Why ``table``'s answers cannot be measured here (one phrase), or ``None`` when they can."""
    import torch

    if table.kind != "measured" or not table.meta.get("build"):
        return f"table {table.name!r} is {table.kind}, not built on this machine"
    if table.cpu != cpu_model():
        return f"table {table.name!r} was measured on another CPU ({table.cpu})"
    if table.backend == "torch-cuda" and not torch.cuda.is_available():
        return f"table {table.name!r} is for a CUDA GPU and this machine has none"
    if table.mismatch(threads=threads, batch=batch, backend=backend):
        return "the subnet will run at another setting than the table's"
    return None


class Meter:
    """``meter(cfg)``: the subnet's latency on this machine, at the table's build level when the build kept a
    reference subnet (timed in alternation with it, ``ratio x`` the reference's build median), else its median."""

    def __init__(self, table, *, repeats: int = REPEATS):
        build = table.meta["build"]
        self.kw = {"backend": table.backend, "threads": table.threads or 1, "batch": table.batch}
        self.timing = {**build.get("timing", {}), "repeats": repeats, "min_time_s": MIN_TIME_S, "max_time_s": None,
                       "clock": table.clock}
        self.ref, self.ref_ms = table_reference(table) or (None, None)

    def __call__(self, cfg: ArchConfig) -> float:
        r = measure_arch(cfg, **self.kw, **self.timing, reference=self.ref)
        return r["ratio"] * self.ref_ms if self.ref is not None else r["median_ms"]


def fit_measured(first: ArchConfig, *, budget_ms: float, search_at: Callable[[float], ArchConfig],
                 measure: Callable[[ArchConfig], float], predict: Callable[[ArchConfig], float],
                 score: Callable[[ArchConfig], float], lowest_ms: float) -> tuple[ArchConfig, list[dict[str, Any]]]:
    """Measure ``first``; while it lands outside :data:`BAND` of ``budget_ms``, search again (``search_at(ms)``)
    at a budget re-scaled by how far the measurement missed (see the module docstring). Returns the chosen subnet and one record per
    subnet measured (``searched_at_ms``, ``predicted_ms``, ``measured_ms``, ``ratio``, ``summary``, ``chosen``)."""
    checks: list[dict[str, Any]] = []
    tried: dict[str, ArchConfig] = {}
    target, cfg = budget_ms, first
    for _ in range(ROUNDS):
        ms, pred = measure(cfg), predict(cfg)
        tried[cfg.key()] = cfg
        checks.append({"searched_at_ms": round(target, 6), "predicted_ms": round(pred, 6),
                       "measured_ms": round(ms, 6), "ratio": round(ms / budget_ms, 4), "summary": cfg.summary(),
                       "key": cfg.key()})
        if BAND[0] <= ms / budget_ms <= BAND[1]:
            break
        target = max(pred * AIM * budget_ms / ms, lowest_ms)
        try:
            cfg = search_at(target)
        except SlimformerError:  # no answer at the re-scaled budget: keep what was measured
            break
        if cfg.key() in tried:
            break
    chosen = _choose(checks, tried, budget_ms, score)
    for c in checks:
        c["chosen"] = c.pop("key") == chosen.key()
    return chosen, checks


def _choose(checks: list[dict[str, Any]], tried: dict[str, ArchConfig], budget_ms: float,
            score: Callable[[ArchConfig], float]) -> ArchConfig:
    """The best-scoring subnet measured within the budget; none within it: the fastest measured."""
    fits = [tried[c["key"]] for c in checks if c["measured_ms"] <= budget_ms * BAND[1]]
    if fits:
        return max(fits, key=score)
    return tried[min(checks, key=lambda c: c["measured_ms"])["key"]]
