"""Search with optuna: TPE or NSGA-II over the space, the budget as a constraint or a second objective.

A trial chooses the stem width, each stage's width, for every block position "block" or "skip" and an
MLP ratio, one global index where the MB3D tail starts, and the attention dims of positions that may
hold MB3D. ``mode="constrained"`` maximises the score with ``predicted_ms - budget <= 0`` as optuna's constraint
(``Trial.set_constraint`` on optuna >= 5, the sampler's ``constraints_func`` before), also written as the
``constraints`` list optuna-dashboard reads. A trial over the budget is PRUNED: it has no objective
value, so the dashboard, ``study.best_trial`` and this search agree on the best trial (an expensive
scorer does not evaluate it; a cheap one records its score as the ``score`` user attribute).
``mode="pareto"`` optimises (score, latency) as two objectives and reports the Pareto front; the answer
is the best trial under the budget. Objectives carry names (``study.set_metric_names``); among trials of
equal score the faster one wins, then the earlier. Studies live in an optuna storage (SQLite in the run directory by
default): several processes may share one storage URL and ``resume`` continues a study.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from .._errors import SlimformerError
from ..supernet import SKIP, ArchConfig, SearchSpace, StageConfig, mb3d, mb4d
from ._scorers import Scorer

SAMPLERS = ("tpe", "nsga2")
MODES = ("constrained", "pareto")


def _mb3d_positions(space: SearchSpace) -> list[tuple[int, int]]:
    return [(si, p) for si in space.mb3d_stages for p in range(space.depths[si])]


def config_from_params(space: SearchSpace, params: dict[str, Any]) -> ArchConfig:
    """The subnet a set of trial parameters describes (a stage with every position skipped keeps position 1)."""
    tail = _mb3d_positions(space)
    start = int(params["mb3d_from"])
    in_tail = set(tail[start:])
    stages = []
    for si in range(4):
        blocks = []
        for p in range(space.depths[si]):
            on = params[f"s{si}.b{p}"] == "block" or (p == space.depths[si] - 1 and not any(
                params[f"s{si}.b{q}"] == "block" for q in range(p)))
            if not on:
                blocks.append(SKIP)
                continue
            r = float(params[f"s{si}.b{p}.mlp"])
            if (si, p) in in_tail:
                blocks.append(mb3d(params[f"s{si}.b{p}.heads"], params[f"s{si}.b{p}.qk"], params[f"s{si}.b{p}.v"], r))
            else:
                blocks.append(mb4d(r))
        stages.append(StageConfig(int(params[f"s{si}.width"]), tuple(blocks)))
    return ArchConfig(stem_width=int(params["stem"]), stages=tuple(stages), img_size=space.img_size,
                      in_chans=space.in_chans, num_classes=space.num_classes, distillation=space.distillation)


def suggest_config(trial: optuna.Trial, space: SearchSpace) -> ArchConfig:
    params: dict[str, Any] = {"stem": trial.suggest_categorical("stem", list(space.stem_widths))}
    tail = _mb3d_positions(space)
    params["mb3d_from"] = trial.suggest_int("mb3d_from", 0, len(tail))
    for si in range(4):
        params[f"s{si}.width"] = trial.suggest_categorical(f"s{si}.width", list(space.stage_widths[si]))
        for p in range(space.depths[si]):
            k = f"s{si}.b{p}"
            params[k] = trial.suggest_categorical(k, ["block", "skip"])
            params[k + ".mlp"] = trial.suggest_categorical(k + ".mlp", list(space.mlp_ratios))
            if (si, p) in tail:
                params[k + ".heads"] = trial.suggest_categorical(k + ".heads", list(space.heads))
                params[k + ".qk"] = trial.suggest_categorical(k + ".qk", list(space.qk_dims))
                params[k + ".v"] = trial.suggest_categorical(k + ".v", list(space.v_dims))
    return config_from_params(space, params)


def params_of(space: SearchSpace, cfg: ArchConfig) -> dict[str, Any]:
    """Trial parameters describing ``cfg`` (for ``enqueue_trial``: warm-starting a study)."""
    tail = _mb3d_positions(space)
    first = cfg.first_mb3d()
    params: dict[str, Any] = {"stem": cfg.stem_width,
                              "mb3d_from": tail.index(first) if first in tail else len(tail)}
    big = space.largest_mb3d()
    for si in range(4):
        params[f"s{si}.width"] = cfg.stages[si].width
        for p in range(space.depths[si]):
            b, k = cfg.block(si, p), f"s{si}.b{p}"
            params[k] = "skip" if b.kind == "skip" else "block"
            params[k + ".mlp"] = b.mlp_ratio if b.kind != "skip" else space.mlp_ratios[0]
            if (si, p) in tail:
                m = b if b.kind == "mb3d" else big
                params[k + ".heads"], params[k + ".qk"], params[k + ".v"] = m.heads, m.qk_dim, m.v_dim
    return params


# optuna >= 5 records constraints on the trial (``Trial.set_constraint``); older versions take a
# ``constraints_func`` on the sampler. Both are optuna's constraint API; use whichever this optuna has.
_TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")
# the trial system attribute optuna < 5 writes from ``constraints_func`` and optuna-dashboard (0.21) reads
DASHBOARD_CONSTRAINTS_KEY = "constraints"


def _constraint(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get("constraint", [float("inf")]))


def make_sampler(name: str, *, seed: int, constrained: bool):
    cf = _constraint if constrained and not _TRIAL_CONSTRAINTS else None
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cf, population_size=20)
    raise SlimformerError(f"unknown sampler {name!r}: choose from {', '.join(SAMPLERS)}")


# A worker records a heartbeat while it runs a trial; when a study is opened, optuna marks the RUNNING
# trials whose heartbeat stopped (a killed worker) FAIL, so they neither linger nor count (optuna's API).
HEARTBEAT = {"heartbeat_interval": 10, "grace_period": 30}


def _masked(url: str) -> str:
    import re

    return re.sub(r"://[^@/]*@", "://***@", url)


def fail_running_trials(study: optuna.Study) -> int:
    """Mark every RUNNING trial FAIL: for a study only this process uses (the run directory's own
    ``study.db``), a RUNNING trial at start-up is one a killed run left behind. Returns how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        n += 1
    return n


def make_storage(url: str):
    """An optuna storage for ``url``. SQLite: wait for the lock (several processes may share the file) and
    use WAL with ``synchronous=NORMAL``: optuna commits every parameter, and the default fsync per commit
    makes a trial of the default space cost about a second; WAL stays safe for processes on one machine
    (use PostgreSQL/MySQL URLs for workers on several machines)."""
    from sqlalchemy import event
    from sqlalchemy.exc import SQLAlchemyError

    if not url.startswith("sqlite"):
        try:
            return optuna.storages.RDBStorage(url, **HEARTBEAT)
        except (SQLAlchemyError, ImportError, ValueError) as e:  # unknown scheme, missing driver, no server
            raise SlimformerError(f"cannot open optuna storage {_masked(url)}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0]}") from None

    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    with _schema_lock(url):  # two workers creating the schema of a new file at once would collide
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}}, **HEARTBEAT)
        except SQLAlchemyError as e:  # a locked, foreign or unreadable file
            raise SlimformerError(f"cannot open optuna storage {url}: {str(e).splitlines()[0]}") from None
        except ValueError as e:  # e.g. a malformed sqlite URL
            raise SlimformerError(f"cannot open optuna storage {url}: {e}") from None
    event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # connections opened during set-up reconnect with the pragmas
    return storage


@contextmanager
def _schema_lock(url: str):
    """An exclusive lock on ``<db file>.lock`` while a SQLite storage is opened (POSIX; no-op elsewhere)."""
    path = url.split(":///", 1)[-1]
    if path in ("", ":memory:") or fcntl is None:
        yield
        return
    lock = Path(path + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_study(*, space: SearchSpace, predict: Callable[[ArchConfig], float], scorer: Scorer, budget_ms: float,
              trials: int, sampler: str = "tpe", mode: str = "constrained", seed: int = 0,
              storage: str | None = None, study_name: str = "slimformer-search", resume: bool = False,
              identity: dict[str, Any] | None = None, warm_start: list[ArchConfig] = (),
              on_trial: Callable[[], None] | None = None,
              fail_running: bool = False) -> tuple[ArchConfig, list[dict], list[dict] | None]:
    """Run (or continue) a study until it holds ``trials`` finished trials; returns (best, trace, pareto).
    ``fail_running``: the storage is this process's alone, so RUNNING trials in it are stale (mark them FAIL
    now); in a shared storage, optuna's heartbeat fails those of killed workers after a grace period."""
    if mode not in MODES:
        raise SlimformerError(f"unknown objective mode {mode!r}: choose from {', '.join(MODES)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    constrained = mode == "constrained"
    directions = ["maximize"] if constrained else ["maximize", "minimize"]
    st = make_storage(storage) if storage else None
    try:
        study = optuna.create_study(study_name=study_name, storage=st, directions=directions,
                                    sampler=make_sampler(sampler, seed=seed, constrained=constrained),
                                    load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise SlimformerError(f"study {study_name!r} already exists in {storage}: add --resume to continue it "
                              "or choose another --study-name") from None
    ident = dict(identity or {}, budget_ms=budget_ms, mode=mode, score=scorer.name)
    _check_identity(study, ident, study_name)
    if fail_running:
        fail_running_trials(study)
    study.set_metric_names([scorer.name] if constrained else [scorer.name, "predicted latency (ms)"])
    if not study.trials:
        for cfg in warm_start:
            study.enqueue_trial(params_of(space, cfg), skip_if_exists=True)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    callbacks = [MaxTrialsCallback(trials, states=finished)]
    if on_trial:
        callbacks.append(lambda s, t: on_trial())
    if done < trials:
        objective = _objective(space, predict, scorer, budget_ms, constrained)
        study.optimize(objective, n_trials=trials - done, callbacks=callbacks, gc_after_trial=False)
    return _summarise(study, budget_ms, constrained)


def _objective(space: SearchSpace, predict: Callable[[ArchConfig], float], scorer: Scorer, budget_ms: float,
               constrained: bool) -> Callable[[optuna.Trial], Any]:
    def objective(trial: optuna.Trial):
        cfg = suggest_config(trial, space)
        ms = predict(cfg)
        trial.set_user_attr("predicted_ms", ms)
        trial.set_user_attr("arch", cfg.to_dict())
        trial.set_user_attr("constraint", [ms - budget_ms])
        if constrained:
            if _TRIAL_CONSTRAINTS:
                trial.set_constraint("latency_ms_over_budget", ms - budget_ms)
            # optuna-dashboard (0.21) reads the pre-optuna-5 list; optuna < 5 writes it from constraints_func
            trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS_KEY, [ms - budget_ms])
            if ms > budget_ms:
                trial.set_user_attr("evaluated", scorer.cheap)
                if scorer.cheap:
                    trial.set_user_attr("score", scorer(cfg))
                raise optuna.TrialPruned(f"predicted {ms:.4g} ms is over the {budget_ms:g} ms budget")
        value = scorer(cfg)
        return value if constrained else (value, ms)

    return objective


def _summarise(study: optuna.Study, budget_ms: float, constrained: bool
               ) -> tuple[ArchConfig, list[dict], list[dict] | None]:
    """(best subnet, one trace row per finished trial, Pareto front or None)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    trace = []
    for t in trials:
        ms = t.user_attrs.get("predicted_ms", float("inf"))
        score = t.values[0] if t.state == TrialState.COMPLETE else t.user_attrs.get("score")
        trace.append({"trial": t.number, "predicted_ms": t.user_attrs.get("predicted_ms"), "score": score,
                      "feasible": ms <= budget_ms, "evaluated": score is not None, "state": t.state.name,
                      "params": t.params})
    feasible = [t for t in trials if t.state == TrialState.COMPLETE
                and t.user_attrs.get("predicted_ms", float("inf")) <= budget_ms]
    if not feasible:
        raise SlimformerError(f"none of the {len(trials)} trials fits {budget_ms:g} ms: run more trials "
                              "(--trials) or raise the budget")
    best = max(feasible, key=lambda t: (t.values[0], -t.user_attrs["predicted_ms"], -t.number))
    pareto = None
    if not constrained:
        pareto = sorted(({"trial": t.number, "score": t.values[0], "predicted_ms": t.values[1]}
                         for t in study.best_trials), key=lambda r: r["predicted_ms"])
    return ArchConfig.from_dict(best.user_attrs["arch"]), trace, pareto


def _check_identity(study: optuna.Study, ident: dict[str, Any], name: str) -> None:
    old = study.user_attrs.get("identity")
    if old is None:
        study.set_user_attr("identity", ident)
        return
    diff = [k for k in sorted(set(old) | set(ident)) if old.get(k) != ident.get(k)]
    if diff:
        k = diff[0]
        raise SlimformerError(f"study {name!r} was run with {k}={old.get(k)!r}, not {ident.get(k)!r}: "
                              "resume it with the same budget, table and supernet, or use another --study-name")
