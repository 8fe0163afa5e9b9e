"""``search()``: the most accurate subnet that fits a latency budget on a device (the main job).

Inputs: a latency table (device), optionally a trained supernet. Strategies:

* ``slim``   -- EfficientFormer's latency-driven slimming (default when the checkpoint holds alpha, and
  without a supernet, where it maximises a training-free proxy);
* ``optuna`` -- TPE or NSGA-II with the budget as a constraint (or a second objective);
* ``evolution`` -- once-for-all's evolutionary search over the supernet (``trials`` subnets scored).

Which score is optimised, and whether it is accuracy at all, is recorded in the result and printed.
"""
from __future__ import annotations

import itertools
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .._errors import SlimformerError
from .._io import make_run_dir
from .._validate import check_float, check_int
from ..data import build_loaders
from ..latency_lut import resolve_table
from ..latency_lut._report import prediction_parts
from ..supernet import ArchConfig, SupernetCheckpoint, get_space, load_supernet, recalibrate_bn
from ._evolution import evolve
from ._measured import Meter, fit_measured, not_measurable
from ._options import EvalOptions, SearchOptions
from ._optuna import run_study
from ._report import write_run
from ._result import SearchResult, typical_error
from ._scorers import AlphaScorer, Scorer, SupernetAccuracy, get_proxy
from ._slim import slim

STRATEGIES = ("slim", "optuna", "evolution")
TRAIN_HINT = ("train a supernet for an accuracy-driven search: `slimformer train --space default --data "
              "<imagenet-folder> --runs-root runs/` then `slimformer search --supernet runs/<train-run>/best.pt ...`")



def default_strategy(*, has_supernet: bool, fast: bool = False) -> str:
    """The strategy ``search`` runs when none is named: with a supernet, optuna's TPE on inherited accuracy; slimming
    without one (a proxy scorer) and with ``fast`` (slimming ranked by alpha).

    Why TPE (twenty-sixth session, ``benchmarks/search_quality.py``, each strategy against the best of as many random
    subnets as it evaluated, 5 budgets x 3 seeds per row): >= random within one standard error at 19 of 20 budgets
    (built-in 4/5, by 0.01 points; MNIST-5k 5/5; photo10 5/5 on seeds 0-2 and again on seeds 3-5), slimming at 16
    (4, 5, 4, 3), evolution at 17, NSGA-II at 18, with 7-40 evaluations where slimming used 9-100 (docs/accuracy.md)."""
    return "optuna" if has_supernet and not fast else "slim"


class CachedPredictor:
    """``table.predict`` memoised by config key, counting calls (predictions/s in the benchmark)."""

    def __init__(self, table):
        self.table = table
        self.cache: dict[str, float] = {}

    def __call__(self, cfg: ArchConfig) -> float:
        k = cfg.key()
        v = self.cache.get(k)
        if v is None:
            v = self.cache[k] = float(self.table.predict(cfg))
        return v


@dataclass
class _Job:
    """What ``search()`` resolved from its options before it searches: inputs checked, scorer chosen."""

    opts: SearchOptions
    ck: SupernetCheckpoint | None
    table: Any
    space: Any
    predict: CachedPredictor
    strategy: str
    scorer: Scorer
    recal: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    meter: Meter | None = None  # times the answer here (the table was measured on this machine)

    @property
    def has_alpha(self) -> bool:
        return self.ck is not None and bool(self.ck.arch_logits)


def search(options: SearchOptions | None = None, /, *, loaders: Any = None, **fields: Any) -> SearchResult:
    """Search the subnet that fits ``budget_ms`` on ``table``'s device (see :class:`SearchOptions`).

    ``search(SearchOptions(...))`` or ``search(budget_ms=1.6, table="iphone-lut", trials=30, ...)`` (flat keywords,
    sorted into the option groups). ``loaders``: ready data loaders instead of ``evaluation.data``. Writes a run
    folder to ``out`` or a new ``runs_root/search-<time>`` (created only once the inputs are known to be valid)."""
    opts = options if options is not None else SearchOptions.of(**fields)
    if options is not None and fields:
        raise SlimformerError("give search() either a SearchOptions or keywords, not both")
    job = _prepare(opts, loaders)
    best, trace, pareto = _run(job)
    measured = None
    if job.meter is not None:
        best, trace, pareto, measured = _measure_answer(job, best, trace, pareto)
    result = _result(job, best, trace, pareto)
    result.measured = measured
    if job.out is not None:
        write_run(result, job.out)
    return result


def _prepare(opts: SearchOptions, loaders: Any) -> _Job:
    check_float(opts.budget_ms, "the latency budget (ms)", lo=0, lo_open=True)
    ev, st = opts.evaluation, opts.study
    for name, v, lo in (("trials", st.trials, 1), ("batch_size", ev.batch_size, 1),
                        ("recal_batches", ev.recal_batches, 0), ("val_batches", ev.val_batches, 1),
                        ("seed", opts.seed, 0)):
        check_int(v, name, lo=lo)
    if opts.out is not None:
        check_out(opts.out, resume=st.resume)
    ck = load_supernet(opts.supernet) if isinstance(opts.supernet, (str, Path)) else opts.supernet
    space = get_space(opts.space) if isinstance(opts.space, (str, Path)) else opts.space
    table = resolve_table(opts.table, space=space if space is not None else ck.space if ck is not None else None,
                          lut_dir=opts.lut_dir, build=opts.build, progress=opts.progress)
    # the setting the subnet will run at: one other than the table's prints one line (latencies do not carry over)
    line = table.mismatch(threads=opts.threads, batch=opts.batch, backend=opts.backend)
    if line:
        print(line, file=sys.stderr, flush=True)
    space = ck.space if ck is not None else table.space
    predict = CachedPredictor(table)
    smallest_ms = predict(space.smallest())
    if opts.budget_ms < smallest_ms:
        raise SlimformerError(f"no subnet fits {opts.budget_ms:g} ms on {_device(table)}: the fastest subnet of "
                              f"space {space.name!r} (the smallest) is predicted at {smallest_ms:.3f} ms")
    has_alpha = ck is not None and bool(ck.arch_logits)
    strategy = _strategy(opts, ck, has_alpha)
    job = _Job(opts=opts, ck=ck, table=table, space=space, predict=predict, strategy=strategy,
               scorer=get_proxy(ev.proxy), options=opts.record(strategy=strategy, supernet=ck is not None))
    if ck is None:
        job.notes.append(f"no supernet: the score is {job.scorer.name}, NOT accuracy; {TRAIN_HINT}")
    else:
        ck.model.to(torch_device(opts.torch_device))
        job.recal, val = _batches(ck, ev, loaders, opts.seed, need_val=not ev.fast)
        job.scorer = AlphaScorer(space, ck.arch_logits) if ev.fast else SupernetAccuracy(ck.model, job.recal, val)
        if not ev.fast:
            job.options["recal_batches"] = len(job.recal)
    job.meter = _meter(opts, table)
    job.out = Path(opts.out) if opts.out is not None else (
        make_run_dir(opts.runs_root, "search") if opts.runs_root is not None else None)
    return job


def _meter(opts: SearchOptions, table) -> Meter | None:
    """A :class:`Meter` when the answer is to be measured here: ``measure=True`` insists (one clear error when
    it cannot), ``None`` measures whenever the table was measured on this machine, ``False`` never."""
    if opts.measure is False:
        return None
    why = not_measurable(table, threads=opts.threads, batch=opts.batch, backend=opts.backend)
    if why is not None and opts.measure:
        raise SlimformerError(f"--measure: cannot time the answer here: {why}")
    return None if why is not None else Meter(table)


def _measure_answer(job: _Job, best: ArchConfig, trace: list[dict], pareto):
    """Time ``best`` here and search again at a re-scaled budget while it misses (:func:`fit_measured`);
    the chosen subnet's own trace and Pareto front are returned with it."""
    runs = {best.key(): (trace, pareto)}
    name = job.opts.study.study_name or "slimformer-search"

    def search_at(ms: float) -> ArchConfig:
        opts = replace(job.opts, budget_ms=ms, study=replace(job.opts.study, study_name=f"{name}-at-{ms:.4f}ms"))
        again, t, p = _run(replace(job, opts=opts, notes=[]))
        runs.setdefault(again.key(), (t, p))
        return again

    if job.opts.progress:
        print(f"measuring the answer here ({job.table.backend}, {job.table.threads or 1} thread(s), batch "
              f"{job.table.batch}) ...", file=sys.stderr, flush=True)
    chosen, checks = fit_measured(best, budget_ms=job.opts.budget_ms, search_at=search_at, measure=job.meter,
                                  predict=job.predict, score=job.scorer,
                                  lowest_ms=job.predict(job.space.smallest()))
    ms = next(c["measured_ms"] for c in checks if c["chosen"])
    job.notes.append(f"measured here: {ms:.3f} ms, {ms / job.opts.budget_ms:.3f} of the budget ({len(checks)} "
                     f"subnet(s) timed, {len(checks) - 1} search(es) again at a re-scaled budget)"
                     + ("; none measured within the budget, the fastest returned" if ms > job.opts.budget_ms
                        else ""))
    return (chosen, *runs[chosen.key()], checks)


def _strategy(opts: SearchOptions, ck, has_alpha: bool) -> str:
    strategy = opts.strategy or default_strategy(has_supernet=ck is not None, fast=opts.evaluation.fast)
    if strategy not in STRATEGIES:
        raise SlimformerError(f"unknown strategy {strategy!r}: choose from {', '.join(STRATEGIES)}")
    if opts.evaluation.fast and (strategy != "slim" or ck is None):
        raise SlimformerError("--fast applies to `--strategy slim` with a supernet (it ranks actions by alpha)")
    if opts.evaluation.fast and not has_alpha:
        raise SlimformerError("--fast ranks slimming actions by alpha, and this checkpoint holds none "
                              "(train with Gumbel architecture parameters, or drop --fast to evaluate actions)")
    return strategy


def _run(job: _Job) -> tuple[ArchConfig, list[dict], list[dict] | None]:
    budget_ms, space = job.opts.budget_ms, job.space
    largest_ms = job.predict(space.largest())
    if budget_ms >= largest_ms:
        best = space.largest()
        job.notes.append(f"the budget {budget_ms:g} ms is above the largest subnet ({largest_ms:.3f} ms): "
                         "returning the largest subnet of the space")
        return best, [{"step": 0, "phase": "start", "action": "largest subnet fits", "predicted_ms": largest_ms,
                       "score": job.scorer(best), "candidates": 0, "summary": best.summary()}], None
    if job.strategy == "slim":
        return (*_run_slim(job, largest_ms), None)
    if job.strategy == "evolution":
        return (*_run_evolution(job), None)
    return _run_optuna(job)


def _run_evolution(job: _Job) -> tuple[ArchConfig, list[dict]]:
    opts = job.opts
    warm, _ = slim(space=job.space, predict=job.predict, scorer=get_proxy(opts.evaluation.proxy),
                   budget_ms=opts.budget_ms)
    with _bar(opts.progress, opts.study.trials, "evolution", "subnet") as bar:
        return evolve(space=job.space, predict=job.predict, scorer=job.scorer, budget_ms=opts.budget_ms,
                      evaluations=opts.study.trials, seed=opts.seed, warm_start=[warm],
                      on_eval=(lambda: bar.update(1)) if bar else None)


def _run_slim(job: _Job, largest_ms: float) -> tuple[ArchConfig, list[dict]]:
    block_weight = None
    if job.ck is not None and hasattr(job.space, "kinds_at"):  # a space with block kinds has alpha importance
        alpha = job.scorer if isinstance(job.scorer, AlphaScorer) else AlphaScorer(job.space, job.ck.arch_logits)
        block_weight = alpha.importance
        if not job.has_alpha:
            job.notes.append("the checkpoint holds no alpha: every block is equally important, ties go to "
                             "the deepest block")
    with _bar(job.opts.progress, largest_ms - job.opts.budget_ms, "slimming", "ms") as bar:
        return slim(space=job.space, predict=job.predict, scorer=job.scorer, budget_ms=job.opts.budget_ms,
                    importance=block_weight, on_step=(lambda d: bar.update(d)) if bar else None)


def _run_optuna(job: _Job):
    opts, st = job.opts, job.opts.study
    warm, _ = slim(space=job.space, predict=job.predict, scorer=get_proxy(opts.evaluation.proxy),
                   budget_ms=opts.budget_ms)
    storage = st.storage
    default_storage = job.out is not None and storage is None
    if default_storage:
        job.out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{job.out.resolve() / 'study.db'}"
    ident = {"table_hash": job.table.hash, "space_hash": job.space.hash, "sampler": st.sampler}
    name = st.study_name or "slimformer-search"
    with _bar(opts.progress, st.trials, f"optuna {st.sampler}", "trial") as bar:
        found = run_study(space=job.space, predict=job.predict, scorer=job.scorer, budget_ms=opts.budget_ms,
                          trials=st.trials, sampler=st.sampler, mode=st.mode, seed=opts.seed, storage=storage,
                          study_name=name, resume=st.resume, identity=ident, warm_start=[warm],
                          on_trial=(lambda: bar.update(1)) if bar else None,
                          fail_running=default_storage and st.resume)
    job.options["storage"] = ("study.db (run directory)" if default_storage
                              else re.sub(r"://[^@/]*@", "://***@", storage) if storage else "in-memory")
    job.options["study_name"] = name
    return found


def _result(job: _Job, best: ArchConfig, trace: list[dict], pareto) -> SearchResult:
    ck, table, space, scorer = job.ck, job.table, job.space, job.scorer
    score = scorer(best)
    if not scorer.cheap:
        job.options["evaluations"] = scorer.calls
    state = None
    if ck is not None:
        ck.model.set_active(best)
        if job.recal:
            recalibrate_bn(ck.model, job.recal)
        state = {k: v.detach().cpu().clone() for k, v in ck.model.extract_subnet(best).eval().state_dict().items()}
    return SearchResult(
        arch=best, predicted_ms=job.predict(best), budget_ms=float(job.opts.budget_ms), score=score,
        score_name=scorer.name, accuracy_driven=scorer.accuracy_driven, strategy=job.strategy, seed=job.opts.seed,
        device=_device(table), table_name=table.name, table_hash=table.hash, table_kind=table.kind,
        space_name=space.name, space_hash=space.hash, trace=trace, pareto=pareto,
        breakdown=list(table.breakdown(best)), notes=job.notes, latency_parts=prediction_parts(table, best),
        score_text=scorer.format(score),
        table_error=typical_error(table), supernet=str(ck.path) if ck is not None and ck.path else None,
        subnet_state=state, largest_ms=job.predict(space.largest()), smallest_ms=job.predict(space.smallest()),
        options=job.options)


def _device(table) -> str:
    return getattr(table, "device", "") or table.name


SEARCH_FILES = ("arch.json", "trace.jsonl", "breakdown.json", "pareto.json", "search.png", "breakdown.png",
                "report.md", "report.html", "subnet.pt", "study.db", "study.db.lock", "study.db-wal", "study.db-shm")


def check_out(out: str | Path, *, resume: bool) -> None:
    """``out`` is new, empty, or (with ``resume``) an earlier search run holding its study; never a folder
    of someone else's files, which ``write_run`` would overwrite."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise SlimformerError(f"--out {p} is an existing file, not a run directory")
    entries = sorted(f.name for f in p.iterdir() if not f.name.startswith(".")) if p.is_dir() else []
    if not entries:
        return
    ours = all(name in SEARCH_FILES for name in entries)
    if ours and resume and "study.db" in entries:
        return
    hint = " or add --resume to continue its optuna study" if ours and "study.db" in entries else ""
    raise SlimformerError(f"--out {p} is not empty ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}): "
                          f"choose a new or empty folder{hint}")


def torch_device(name: str):
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise SlimformerError(f"unknown torch device {name!r}: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SlimformerError(f"--torch-device {name} was asked for but this machine has no CUDA device")
    return torch.device(name)


def _batches(ck, ev: EvalOptions, loaders, seed: int, *, need_val: bool):
    n_recal, n_val, batch_size = ev.recal_batches, ev.val_batches, ev.batch_size
    if loaders is None:
        loaders = build_loaders(ev.data, img_size=ck.space.img_size, batch_size=batch_size, workers=0, seed=seed,
                                train_size=batch_size * max(n_recal, 1),
                                val_size=batch_size * max(n_val, 1) if need_val else batch_size)
    nc = getattr(loaders, "num_classes", None)
    if nc is not None and nc != ck.space.num_classes:
        raise SlimformerError(f"the data has {nc} classes but the supernet classifies {ck.space.num_classes}")
    recal = list(itertools.islice(iter(loaders.train), n_recal))
    val = list(itertools.islice(iter(loaders.val), n_val)) if need_val else []
    return recal, val


def _bar(enabled: bool, total: float, desc: str, unit: str):
    if not enabled:
        return nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=round(total, 3), desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.3g}/{total:.3g} {unit} [{elapsed}<{remaining}]")
