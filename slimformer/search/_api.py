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
from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._io import make_run_dir
from .._validate import check_float, check_int
from ..data import build_loaders
from ..latency_lut import resolve_table
from ..latency_lut._report import prediction_parts
from ..supernet import ArchConfig, SupernetCheckpoint, get_space, load_supernet, recalibrate_bn
from ._evolution import evolve
from ._optuna import run_study
from ._result import SearchResult, typical_error
from ._scorers import AlphaImportance, Scorer, SupernetAccuracy, get_proxy
from ._slim import slim

STRATEGIES = ("slim", "optuna", "evolution")
TRAIN_HINT = ("train a supernet for an accuracy-driven search: `slimformer train --space default --data "
              "<imagenet-folder> --out runs/` then `slimformer search --supernet runs/<train-run>/best.pt ...`")


def default_strategy(*, has_supernet: bool, has_alpha: bool) -> str:
    """The strategy ``search`` runs when none is named."""
    return "optuna" if has_supernet and not has_alpha else "slim"


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


def search(*, budget_ms: float, table: Any, supernet: str | Path | SupernetCheckpoint | None = None,
           strategy: str | None = None, fast: bool = False, sampler: str = "tpe", mode: str = "constrained",
           trials: int = 60, proxy: str = "macs", data: str = "builtin", loaders: Any = None,
           batch_size: int = 64, recal_batches: int = 4, val_batches: int = 4, seed: int = 0,
           storage: str | None = None, study_name: str | None = None, resume: bool = False,
           out: str | Path | None = None, runs_root: str | Path | None = None, progress: bool = False,
           lut_dir=None, build: bool = False, compute: str = "auto", space: Any = None,
           threads: int | None = None, batch: int | None = None, backend: str | None = None) -> SearchResult:
    """Search the subnet that fits ``budget_ms`` on ``table``'s device.

    Writes a run directory to ``out``, or to a new ``runs_root/search-<time>`` (created only once the inputs
    are known to be valid); neither given: nothing is written and an optuna study stays in memory.
    ``build=True`` first measures a missing ``cpu-*`` table here, for the supernet's space (or the default).
    ``compute`` is where inherited-weight evaluation runs: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
    ``space`` (a name such as ``efficientvit``, or a space) picks the table of that space (``resolve_table``
    looks a table of another space up as ``<device>-<space>``); by default the supernet's space, else the
    table's own.
    ``threads``/``batch``/``backend``: the setting the subnet will run at; one that differs from the table's
    own prints one line on stderr (the table's latencies do not carry over)."""
    budget_ms = check_float(budget_ms, "the latency budget (ms)", lo=0, lo_open=True)
    for name, v, lo in (("trials", trials, 1), ("batch_size", batch_size, 1), ("recal_batches", recal_batches, 0),
                        ("val_batches", val_batches, 1), ("seed", seed, 0)):
        check_int(v, name, lo=lo)
    if out is not None:
        check_out(out, resume=resume)
    ck = load_supernet(supernet) if isinstance(supernet, (str, Path)) else supernet
    if space is not None:
        space = get_space(space) if isinstance(space, (str, Path)) else space
    table = resolve_table(table, space=space if space is not None else ck.space if ck is not None else None,
                          lut_dir=lut_dir, build=build,
                          progress=progress)
    line = table.mismatch(threads=threads, batch=batch, backend=backend) if hasattr(table, "mismatch") else None
    if line:
        print(line, file=sys.stderr, flush=True)
    space = ck.space if ck is not None else table.space
    predict = CachedPredictor(table)
    smallest_ms, largest_ms = predict(space.smallest()), predict(space.largest())
    device = getattr(table, "device", "") or table.name
    if budget_ms < smallest_ms:
        raise SlimformerError(f"no subnet fits {budget_ms:g} ms on {device}: the fastest subnet of space "
                              f"{space.name!r} (the smallest) is predicted at {smallest_ms:.3f} ms")
    has_alpha = ck is not None and bool(ck.arch_logits)
    strategy = strategy or default_strategy(has_supernet=ck is not None, has_alpha=has_alpha)
    if strategy not in STRATEGIES:
        raise SlimformerError(f"unknown strategy {strategy!r}: choose from {', '.join(STRATEGIES)}")
    if fast and (strategy != "slim" or ck is None):
        raise SlimformerError("--fast applies to `--strategy slim` with a supernet (it ranks actions by alpha)")
    if fast and not has_alpha:
        raise SlimformerError("--fast ranks slimming actions by alpha, and this checkpoint holds none "
                              "(train with Gumbel architecture parameters, or drop --fast to evaluate actions)")
    notes: list[str] = []
    recal: list = []
    if ck is None:
        scorer: Scorer = get_proxy(proxy)
        notes.append(f"no supernet: the score is {scorer.name}, NOT accuracy; {TRAIN_HINT}")
    else:
        ck.model.to(_torch_device(compute))
        recal, val = _batches(ck, data, loaders, batch_size, recal_batches, val_batches, seed, need_val=not fast)
        scorer = AlphaImportance(space, ck.arch_logits) if fast else SupernetAccuracy(ck.model, recal, val)
    options = ({"fast": fast} if strategy == "slim" else {"trials": trials} if strategy == "evolution"
               else {"sampler": sampler, "mode": mode, "trials": trials})
    if ck is not None and not fast:
        options.update(recal_batches=len(recal), val_batches=val_batches, batch_size=batch_size, data=str(data))
    if ck is None:
        options["proxy"] = proxy

    if out is None and runs_root is not None:
        out = make_run_dir(runs_root, "search")
    trace: list[dict] = []
    pareto = None
    if budget_ms >= largest_ms:
        best = space.largest()
        notes.append(f"the budget {budget_ms:g} ms is above the largest subnet ({largest_ms:.3f} ms): "
                     "returning the largest subnet of the space")
        trace = [{"step": 0, "phase": "start", "action": "largest subnet fits", "predicted_ms": largest_ms,
                  "score": scorer(best), "candidates": 0, "summary": best.summary()}]
    elif strategy == "slim":
        importance = None
        if ck is not None and hasattr(space, "kinds_at"):  # a space with block kinds has alpha importance
            imp = scorer if isinstance(scorer, AlphaImportance) else AlphaImportance(space, ck.arch_logits)
            importance = imp.importance
            if not has_alpha:
                notes.append("the checkpoint holds no alpha: every block is equally important, ties go to "
                             "the deepest block")
        with _bar(progress, largest_ms - budget_ms, "slimming", "ms") as bar:
            best, trace = slim(space=space, predict=predict, scorer=scorer, budget_ms=budget_ms,
                               importance=importance, on_step=(lambda d: bar.update(d)) if bar else None)
    elif strategy == "evolution":
        warm, _ = slim(space=space, predict=predict, scorer=get_proxy(proxy), budget_ms=budget_ms)
        with _bar(progress, trials, "evolution", "subnet") as bar:
            best, trace = evolve(space=space, predict=predict, scorer=scorer, budget_ms=budget_ms, evaluations=trials,
                                 seed=seed, warm_start=[warm], on_eval=(lambda: bar.update(1)) if bar else None)
    else:
        warm, _ = slim(space=space, predict=predict, scorer=get_proxy(proxy), budget_ms=budget_ms)
        default_storage = out is not None and storage is None
        if default_storage:
            Path(out).mkdir(parents=True, exist_ok=True)
            storage = f"sqlite:///{Path(out).resolve() / 'study.db'}"
        ident = {"table_hash": table.hash, "space_hash": space.hash, "sampler": sampler}
        with _bar(progress, trials, f"optuna {sampler}", "trial") as bar:
            best, trace, pareto = run_study(
                space=space, predict=predict, scorer=scorer, budget_ms=budget_ms, trials=trials, sampler=sampler,
                mode=mode, seed=seed, storage=storage, study_name=study_name or "slimformer-search", resume=resume,
                identity=ident, warm_start=[warm], on_trial=(lambda: bar.update(1)) if bar else None,
                fail_running=default_storage and resume)
        options["storage"] = ("study.db (run directory)" if default_storage
                              else re.sub(r"://[^@/]*@", "://***@", storage) if storage else "in-memory")
        options["study_name"] = study_name or "slimformer-search"

    score = scorer(best)
    if not scorer.cheap:
        options["evaluations"] = scorer.calls
    state = None
    if ck is not None:
        ck.model.set_active(best)
        if recal:
            recalibrate_bn(ck.model, recal)
        state = {k: v.detach().cpu().clone() for k, v in ck.model.extract_subnet(best).eval().state_dict().items()}
    result = SearchResult(
        arch=best, predicted_ms=predict(best), budget_ms=float(budget_ms), score=score, score_name=scorer.name,
        accuracy_driven=scorer.accuracy_driven, strategy=strategy, seed=seed, device=device,
        table_name=table.name, table_hash=table.hash, table_kind=table.kind, space_name=space.name,
        space_hash=space.hash, trace=trace, pareto=pareto, breakdown=list(table.breakdown(best)), notes=notes,
        latency_parts=prediction_parts(table, best),
        score_text=scorer.format(score), table_error=typical_error(table),
        supernet=str(ck.path) if ck is not None and ck.path else None, subnet_state=state,
        largest_ms=largest_ms, smallest_ms=smallest_ms, options=options)
    if out is not None:
        from ._report import write_run

        write_run(result, Path(out))
    return result


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


def _torch_device(compute: str):
    import torch

    if compute == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if compute not in ("cpu", "cuda") and not compute.startswith("cuda:"):
        raise SlimformerError(f"unknown compute device {compute!r}: use auto, cpu or cuda")
    if compute.startswith("cuda") and not torch.cuda.is_available():
        raise SlimformerError("--compute cuda was asked for but this machine has no CUDA device")
    return torch.device(compute)


def _batches(ck, data, loaders, batch_size, n_recal, n_val, seed, *, need_val: bool):
    if loaders is None:
        sp = ck.space
        loaders = build_loaders(data, img_size=sp.img_size, batch_size=batch_size, workers=0, seed=seed,
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
