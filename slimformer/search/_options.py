"""``SearchOptions``: what :func:`~slimformer.search.search` is asked to do, keyword-only and typed.

Three small groups: the job itself (:class:`SearchOptions`), how an optuna study runs (:class:`StudyOptions`) and
how a supernet subnet is scored (:class:`EvalOptions`). ``SearchOptions.of(**fields)`` takes the flat keywords
``search()`` has always accepted and sorts them into the groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .._errors import SlimformerError


@dataclass(frozen=True, kw_only=True)
class StudyOptions:
    """``strategy="optuna"``: sampler (tpe, nsga2), objectives (``mode``: constrained, pareto), trials, storage."""

    sampler: str = "tpe"
    mode: str = "constrained"
    trials: int = 60
    storage: str | None = None
    study_name: str | None = None
    resume: bool = False


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """How a subnet is scored: a training-free ``proxy`` without a supernet; with one, inherited-weight accuracy on
    ``val_batches`` after BN recalibration on ``recal_batches`` (``fast``: alpha alone, no evaluation)."""

    proxy: str = "macs"
    fast: bool = False
    data: Any = "builtin"
    batch_size: int = 64
    recal_batches: int = 4
    val_batches: int = 4


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """The job: ``budget_ms`` on ``table`` (a name, a path or a table), optionally with a trained ``supernet``.

    ``out``: the run folder; else a new ``runs_root/search-<time>``; neither: nothing is written.
    ``build``: measure a missing ``cpu-*`` table here first. ``torch_device``: auto (CUDA when available), cpu,
    cuda or cuda:N. ``space`` (a name such as ``efficientvit``, or a space) picks the table of that space;
    by default the supernet's, else the table's own. ``measure``: time the answer on this machine and search
    again when it misses the budget (:mod:`._measured`); ``None`` does so whenever the table was measured here."""

    budget_ms: float
    table: Any = "iphone-lut"
    supernet: Any = None
    strategy: str | None = None
    seed: int = 0
    out: str | Path | None = None
    runs_root: str | Path | None = None
    lut_dir: str | Path | None = None
    build: bool = False
    torch_device: str = "auto"
    space: Any = None
    threads: int | None = None
    batch: int | None = None
    backend: str | None = None
    measure: bool | None = None
    progress: bool = False
    study: StudyOptions = field(default_factory=StudyOptions)
    evaluation: EvalOptions = field(default_factory=EvalOptions)

    @classmethod
    def of(cls, **flat: Any) -> SearchOptions:
        """Sort flat keywords (``trials=``, ``val_batches=``, ...) into the groups; an unknown one is an error."""
        groups = {"study": StudyOptions, "evaluation": EvalOptions}
        parts: dict[str, dict[str, Any]] = {g: {} for g in groups}
        top: dict[str, Any] = {}
        own = {f.name for f in fields(cls)} - set(groups)
        for k, v in flat.items():
            g = next((g for g, c in groups.items() if k in {f.name for f in fields(c)}), None)
            if g is not None:
                parts[g][k] = v
            elif k in own or k in groups:
                top[k] = v
            else:
                raise SlimformerError(f"search() got an unknown option {k!r}")
        if "budget_ms" not in top:
            raise SlimformerError("search() needs budget_ms (the latency budget in milliseconds)")
        for g, c in groups.items():
            base = top.pop(g, None) or c()
            top[g] = replace(base, **parts[g])
        return cls(**top)

    def record(self, *, strategy: str, supernet: bool) -> dict[str, Any]:
        """The options that shaped the result, as the run's ``arch.json`` records them."""
        ev, st = self.evaluation, self.study
        rec: dict[str, Any] = ({"fast": ev.fast} if strategy == "slim" else {"trials": st.trials}
                               if strategy == "evolution" else {"sampler": st.sampler, "mode": st.mode,
                                                                "trials": st.trials})
        if supernet and not ev.fast:
            rec.update(recal_batches=ev.recal_batches, val_batches=ev.val_batches, batch_size=ev.batch_size,
                       data=str(ev.data))
        if not supernet:
            rec["proxy"] = ev.proxy
        return rec
