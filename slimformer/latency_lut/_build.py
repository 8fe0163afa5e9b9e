"""``build_table``: measure every op of a space on this machine, resumably, and fit the composition correction.

An unfinished build keeps ``<lut_dir>/<name>.partial.json`` (its settings and per-call overhead, written
atomically) and ``<name>.partial.jsonl`` (one line per measured op or calibration subnet, appended and
flushed as each is measured), so a killed build resumes where it stopped and loses at most the entry in
flight (a torn last line is ignored). It also measures a handful of whole random subnets end to end, fits
``measured ~ scale * raw + offset + per_op * n_ops`` on them (scipy, relative residuals; see
:mod:`._fidelity`) and writes the finished table to ``<lut_dir>/<name>.json``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._io import atomic_write_json, exclusive_lock, read_json
from ..supernet import ArchConfig, SearchSpace, arch_from_dict, get_space
from ._alloc import steady_allocator
from ._context import apply_context, profile_arch
from ._fidelity import (
    at_reference,
    calibrate,
    entries_at_reference,
    measure_arch,
    reference_config,
    reference_ms,
    reference_op,
    reference_runner,
)
from ._keys import space_ops
from ._measure import (
    BACKENDS,
    check_clock,
    cpu_model,
    cuda_device,
    measure_module,
    measure_overhead,
    runner,
    runtime_versions,
)
from ._ops import build_op
from ._registry import check_name, partial_path, table_path
from ._runner import OP_REPEATS, REF_WARM, TIME_CAP_S, moved_ops, pairs_ops, warmed
from ._table import READABLE, SCHEMA, LatencyTable

_JOURNALLED = ("entries", "calibration", "context", "seconds", "retaken")  # kept in the journal, not the partial file
CALIBRATION_SEED = 1_000_003  # calibration subnets come from their own stream, apart from validation's
ORDER_SEED = 7


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="op", disable=not enabled, dynamic_ncols=True,
                smoothing=0.05)


def calibration_configs(space: SearchSpace, n: int, seed: int = CALIBRATION_SEED) -> list[ArchConfig]:
    """``n`` subnets for the composition fit: the smallest, then random ones (own seed stream)."""
    rng = random.Random(seed)
    cfgs = [space.smallest()] if n > 0 else []
    while len(cfgs) < n:
        cfgs.append(space.sample(rng))
    return cfgs


def schedule(keys: list[str], n_calibration: int, rounds: int = 1, seed: int = ORDER_SEED) -> list[str | int]:
    """The order of a build: the op keys shuffled, with ``rounds`` measurements of each calibration subnet
    spread among them; calibration item ``j`` (an int) is subnet ``j % n_calibration`` in round
    ``j // n_calibration``.

    On a shared machine the speed of every timing drifts by a few per cent over minutes. Measured in
    enumeration order, all ops of one kind would share one moment's drift, and a network's sum would
    inherit it; shuffled, the drift becomes independent noise that averages out over a network's ops.
    Calibration subnets measured throughout the build fit the correction to the build's average level
    rather than to its last minute's, and a subnet measured in rounds, spread over the build, keeps the faster
    one unpaired and the mean of its ratios paired (:func:`._fidelity.per_subnet`, :func:`calibration_rounds`)."""
    order: list[str | int] = list(keys)
    random.Random(seed).shuffle(order)
    total = n_calibration * rounds
    for j in reversed(range(total)):
        order.insert(int((j + 0.5) * len(keys) / total), j)
    return order


def _settings(name, backend, threads, batch, clock, space: SearchSpace, calibration: int,
              rounds: int, max_time_s: float | None, paired: bool, pair_ops: bool) -> dict[str, Any]:
    return {"name": name, "backend": backend, "threads": threads, "batch": batch, "clock": clock,
            "space_hash": space.hash, "calibration_subnets": calibration, "rounds": rounds, "max_time_s": max_time_s,
            "reference": reference_config(space).to_dict() if paired else None,
            "reference_op": reference_op(space, batch, backend) if paired and pair_ops else None,
            "ref_warm": REF_WARM if paired and pair_ops else None}


def journal_path(ppath: Path) -> Path:
    return ppath.with_suffix(".jsonl")


def _load_partial(path: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        d = read_json(path, "unfinished table build")
    except SlimformerError:
        return None  # an unreadable partial file cannot be resumed; start over
    if not isinstance(d, dict) or d.get("schema") not in READABLE:
        return None
    got = {k: d.get(k) for k in want}
    if got != want:
        diff = ", ".join(f"{k} {got[k]!r} (now {want[k]!r})" for k in want if got[k] != want[k])
        raise SlimformerError(f"an unfinished build of {want['name']!r} with other settings exists ({diff}); "
                              f"pass --no-resume to start it over")
    d["entries"], d["calibration"], d["context"], d["seconds"], d["retaken"] = {}, [], [], 0.0, []
    jpath = journal_path(path)
    if jpath.is_file():
        for line in jpath.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the line being written when the build was killed
            d["seconds"] = d.get("seconds", 0.0) + float(rec.get("s", 0.0))
            if "key" in rec:
                d["entries"][rec["key"]] = rec["entry"]
                if rec.get("retake"):
                    d["retaken"].append(rec["key"])
            elif "calibration" in rec:
                d["calibration"].append(rec["calibration"])
            elif "context" in rec:
                d["context"].append(rec["context"])
    return d


def _one_builder(fn):
    """Two builds of one table at once would interleave their timings and the last write would win:
    the second builder gets one line instead (a lock file beside the partial build)."""
    @functools.wraps(fn)
    def wrapper(*, name: str, lut_dir: str | Path | None = None, **kw):
        check_name(name)
        busy = (f"latency table {name!r} is being built by another process (pid {{pid}}); wait for it to "
                "finish (it resumes where a killed build stopped) or build under another name")
        with exclusive_lock(partial_path(name, lut_dir).with_suffix(".lock"), busy):
            return fn(name=name, lut_dir=lut_dir, **kw)
    return wrapper


def _check_options(name: str, backend: str, threads: int, batch: int, rounds: int, clock: str) -> None:
    check_name(name)
    if backend not in BACKENDS:
        raise SlimformerError(f"unknown backend {backend!r}: choose {' or '.join(BACKENDS)}")
    if threads < 1 or batch < 1 or rounds < 1:
        raise SlimformerError("--threads, --batch and --rounds must be at least 1")
    check_clock(clock, threads)
    if backend == "torch-cuda":
        cuda_device()  # one line before anything is written where there is no GPU


def _open_state(ppath: Path, settings: dict[str, Any], sp: SearchSpace, resume: bool) -> dict[str, Any]:
    """The unfinished build at ``ppath`` if it can be resumed, else a fresh one (its partial file written)."""
    state = _load_partial(ppath, settings) if resume else None
    if state is None:
        ppath.unlink(missing_ok=True)
        journal_path(ppath).unlink(missing_ok=True)
        state = {"schema": SCHEMA, "complete": False, **settings, "space": sp.to_dict(),
                 "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "overhead": None}
        atomic_write_json(ppath, state)
        state.update(entries={}, calibration=[], context=[], seconds=0.0, retaken=[])
    return state


@dataclass
class _Run:
    """One build in progress: its state, what to measure with, and where each result is journalled."""
    state: dict[str, Any]
    cal_cfgs: list[ArchConfig]
    mkw: dict[str, Any]  # backend, threads, batch, clock
    tkw: dict[str, Any]  # repeats, min_time_s, max_time_s, noise, retries (whole subnets)
    journal: Any
    bar: Any
    on_entry: Callable[[str, dict], None] | None
    op_repeats: int = OP_REPEATS  # timed calls per op, no noise retry
    ref: Callable[[], Any] | None = None  # the reference subnet calibration subnets alternate with
    ref_op: Callable[[], Any] | None = None  # the reference op every op alternates with

    def record(self, rec: dict) -> None:
        self.journal.write(json.dumps(rec) + "\n")
        self.journal.flush()

    def measure_overhead(self, ppath: Path) -> None:
        """The per-call overhead, measured once per build and kept in the partial file."""
        if self.state["overhead"] is None:
            self.state["overhead"] = measure_overhead(**self.mkw)
            atomic_write_json(ppath, {k: v for k, v in self.state.items() if k not in _JOURNALLED})

    def step(self, item: str | int, retake: bool = False) -> None:
        """Measure one item of the schedule (an op key, or a calibration subnet's index) and journal it."""
        t0 = time.perf_counter()
        if isinstance(item, int):
            self._subnet(item, t0)
        else:
            self._op(item, t0, retake)
        self.state["seconds"] += time.perf_counter() - t0
        self.bar.update(1)

    def _subnet(self, item: int, t0: float) -> None:
        """A calibration subnet, measured whole."""
        n = len(self.cal_cfgs)
        cfg = self.cal_cfgs[item % n]
        self.bar.set_postfix_str(f"subnet {cfg.summary()}", refresh=False)
        if self.ref is None and self.state.get("reference"):
            self.ref = reference_runner(arch_from_dict(self.state["reference"]), **self.mkw_runner())
        r = measure_arch(cfg, **self.mkw, **self.tkw, reference=self.ref)
        cal = self.state["calibration"]
        cal.append({"arch": cfg.to_dict(), "index": item % n, "round": item // n, **r})
        self.record({"calibration": cal[-1], "s": time.perf_counter() - t0})

    def retake_moved(self) -> None:
        """Measure again, once, every paired op whose reference ran beyond ``RETAKE_BEYOND`` of its median
        (:func:`._runner.moved_ops`, which the bundle runner uses too); journalled, so a resumed build
        does not take an op a third time."""
        moved = moved_ops(self.state["entries"], self.state.setdefault("retaken", []))
        self.bar.total += len(moved)
        self.bar.refresh()
        for k in moved:
            self.step(k, retake=True)

    def mkw_runner(self) -> dict[str, Any]:
        return {k: self.mkw[k] for k in ("backend", "threads", "batch")}

    def _op(self, key: str, t0: float, retake: bool = False) -> None:
        """One op alone, its per-call overhead taken off; in alternation with the reference op when the
        build is paired (its ``ratio`` and ``ref_ms`` journalled, put at the build's level in ``_finish``)."""
        self.bar.set_postfix_str(key, refresh=False)
        if self.ref_op is None and self.state.get("reference_op"):
            self.ref_op = warmed(runner(*build_op(self.state["reference_op"]), **self.mkw_runner()))
        module, example = build_op(key)
        r = measure_module(module, example, **self.mkw, **{**self.tkw, "repeats": self.op_repeats, "retries": 0},
                           reference=self.ref_op, ref_warm=self.state.get("ref_warm") or 0)
        overhead = self.state["overhead"]["median_ms"]
        entries = self.state["entries"]
        entries[key] = {"median_ms": max(r["median_ms"] - overhead, 0.0), "spread_ms": r["spread_ms"],
                        "count": r["count"], "raw_ms": r["median_ms"], "attempts": r["attempts"],
                        **{k: r[k] for k in ("ratio", "ref_ms") if k in r}}
        self.record({"key": key, "entry": entries[key], "s": time.perf_counter() - t0, **({"retake": True} if retake else {})})
        if retake:
            self.state["retaken"].append(key)
        if self.on_entry is not None:
            self.on_entry(key, entries[key])


def calibration_rounds(rounds: int | None, paired: bool) -> int:
    """``rounds``, or by default 1 for a paired build and 2 otherwise. Two rounds minutes apart, the faster kept,
    take the machine's drift out of unpaired timings; paired ones are ratios to the reference subnet, and there
    the second round bought nothing: refitted on round 1 or round 2 alone, ten tables' corrections validated at
    87.8 and 86.8 % within +-5 % on average against 85.5 % on the faster of two (the 1 x 16 cell 98 / 98 against
    94 %, 2 x 4 89 / 87 against 82 %; ``benchmarks/lut_noise_floor.py``; docs/lut-fidelity.md): the faster of two
    noisy ratios is biased low, while validation times each sample once. Paired rounds given (``--rounds``) are
    averaged (:func:`._fidelity.per_subnet`): EfficientViT at 2 x 1 in 3 rounds, 84 % against 76 % on round 1 and
    74 % on the faster; MetaBlock at 2 x 1 88 against 90 % and 89 %, its validation's oracle 89 % (twenty-fifth session)."""
    return rounds if rounds is not None else (1 if paired else 2)


@_one_builder
def build_table(*, name: str, backend: str = "onnxruntime", threads: int = 1, batch: int = 1, clock: str = "wall",
                space: str | SearchSpace = "default", lut_dir: str | Path | None = None, resume: bool = True,
                progress: bool = True, calibration: int = 30, rounds: int | None = None, repeats: int = 15,
                op_repeats: int = OP_REPEATS, min_time_s: float = 0.02, max_time_s: float | None = TIME_CAP_S, noise: float = 0.1, retries: int = 2,
                context: int | None = None, paired: bool = True, pair_ops: bool | None = None,
                on_entry: Callable[[str, dict], None] | None = None) -> LatencyTable:
    """Measure every op of ``space`` with ``backend`` and write the table ``name`` into the user folder.

    Ops are measured in a shuffled order with ``rounds`` measurements (default :func:`calibration_rounds`) of
    each of the ``calibration`` subnets spread among them (:func:`schedule`). With onnxruntime, the first
    ``context`` calibration subnets (default: none when they are paired, else half) are profiled node by node
    (:mod:`._context`); the table keeps the per-kind in-context factors if they fit its calibration subnets
    better than the ops alone do.
    Each calibration subnet is timed at least ``repeats`` calls and each op ``op_repeats``, fewer when that would
    take over ``max_time_s`` (:func:`._measure.time_calls`; ``None``: no cap); a subnet whose calls spread over
    ``noise`` of their median is timed again, up to ``retries`` times, an op is not (:data:`._runner.OP_REPEATS`:
    a network sums many ops, and their noise averages out). With ``paired`` (the default) calibration subnets are
    timed in alternation with the table's reference subnet and fitted at the build's level
    (:func:`._fidelity.at_reference`). With ``pair_ops`` (default ``None``: at more than one thread,
    :func:`._runner.pairs_ops`) every op is timed in alternation with the reference op too and its entry
    put at the build's level (:func:`._fidelity.entries_at_reference`); ops whose reference ran more than
    25 % off its median (at 2 threads it runs slow in phases, mostly beside large ops) are measured again,
    once, at the end (:meth:`_Run.retake_moved`; docs/lut-fidelity.md).

    ``on_entry(key, entry)`` is called after each op is measured (progress hooks, tests)."""
    rounds = calibration_rounds(rounds, paired)
    _check_options(name, backend, threads, batch, rounds, clock)
    if repeats < 1 or op_repeats < 1:
        raise SlimformerError("--repeats and --op-repeats must be at least 1")
    sp = get_space(space) if isinstance(space, (str, Path)) or space is None else space
    keys = space_ops(sp)
    ppath = partial_path(name, lut_dir)
    settings = _settings(name, backend, threads, batch, clock, sp, calibration, rounds, max_time_s, paired,
                         pairs_ops(pair_ops, threads))
    state = _open_state(ppath, settings, sp, resume)
    cal_cfgs = calibration_configs(sp, calibration)
    order = schedule(keys, len(cal_cfgs), rounds)
    n_cal, entries = len(state["calibration"]), state["entries"]
    todo = [x for x in order if (x >= n_cal if isinstance(x, int) else x not in entries)]
    bar = _progress(len(order), len(order) - len(todo), f"lut {name}", progress)
    with bar, open(journal_path(ppath), "a", encoding="utf-8") as journal:
        run = _Run(state, cal_cfgs, {"backend": backend, "threads": threads, "batch": batch, "clock": clock},
                   {"repeats": repeats, "min_time_s": min_time_s, "max_time_s": max_time_s, "noise": noise,
                    "retries": retries},
                   journal, bar, on_entry, op_repeats)
        run.measure_overhead(ppath)
        for item in todo:
            run.step(item)
        if state.get("reference_op"):
            run.retake_moved()
        if backend == "onnxruntime":  # the per-node profiler is onnxruntime's; each family attributes its nodes
            _profile_context(state, cal_cfgs, context, threads, batch, run.record, bar)
    table = _finish(state, sp, name, backend, threads, batch, clock, run.tkw, op_repeats)
    table.save(table_path(name, lut_dir))
    ppath.unlink(missing_ok=True)
    journal_path(ppath).unlink(missing_ok=True)
    return table


def _profile_context(state: dict, cal_cfgs: list[ArchConfig], context: int | None, threads: int, batch: int,
                     record: Callable[[dict], None], bar) -> None:
    """Profile the first ``context`` calibration subnets node by node, journalled one by one. Default: half of
    them in an unpaired build, none where calibration subnets are paired with the reference subnet: the
    in-context factors never fitted a paired build's calibration subnets better than its ops alone (21 tables,
    1 and 2 threads, batch 1, 4 and 16, both spaces: in-sample MAPE 0.90-3.83 % alone against 2.53-5.60 % in
    context, worse in every one; ``slimformer lut show``, docs/lut-fidelity.md), and profiling 15 of them costs
    65 s at 1 x 4, 46 s at 2 x 4 and 231 s at 1 x 16 (``benchmarks/lut_op_cost.py --context 15``)."""
    default = 0 if state.get("reference") else (len(cal_cfgs) + 1) // 2
    n_ctx = default if context is None else min(context, len(cal_cfgs))
    for i in range(len(state["context"]), n_ctx):
        bar.set_postfix_str(f"in context {i + 1}/{n_ctx}", refresh=True)
        t0 = time.perf_counter()
        p = profile_arch(cal_cfgs[i], threads=threads, batch=batch)
        state["context"].append({"index": i, "keys": p["keys"], "nodes_ms": p["nodes_ms"], "run_ms": p["run_ms"],
                                 "wall_ms": p["wall_ms"]})
        record({"context": state["context"][-1], "s": time.perf_counter() - t0})
        state["seconds"] += time.perf_counter() - t0


def _finish(state: dict, sp: SearchSpace, name: str, backend: str, threads: int, batch: int,
            clock: str, timing: dict[str, Any], op_repeats: int) -> LatencyTable:
    """The finished table: entries, provenance (``timing``, which whole subnets are timed with again by searches
    and validations, and ``op_repeats`` beside it) and the composition correction fitted on the calibration."""
    ref_ms = reference_ms(state["calibration"])
    reference = {"arch": state["reference"], "median_ms": ref_ms} if state.get("reference") and ref_ms else None
    op_level = entries_at_reference(state["entries"], state["overhead"]["median_ms"])
    ref_op = ({"key": state["reference_op"], **op_level, "warm": state.get("ref_warm")}
              if op_level is not None else None)
    table = LatencyTable(
        name=name, kind="measured", device=name, backend=backend, space=sp, entries=state["entries"],
        overhead_ms=state["overhead"]["median_ms"], threads=threads, batch=batch, clock=clock, cpu=cpu_model(),
        runtime=runtime_versions(backend), date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        meta={"build": {"started": state.get("started"), "overhead": state["overhead"], "timing": dict(timing), "op_repeats": op_repeats,
                        "warm_up": "alone",  # paired measurements warm up the measured call alone (twenty-second session)
                        "ratio": "pairs",  # a paired ratio is the median of the pairs' ratios (twenty-third session)
                        **({"allocator": steady_allocator()} if backend == "torch" else {}),  # as its runners ran (._alloc)
                        "seconds": round(state.get("seconds", 0.0), 1),
                        "calibration": state["calibration"], "reference": reference, "reference_op": ref_op,
                        "retaken": len(state["retaken"]) if state.get("reference_op") else None}})
    cal = at_reference(state["calibration"], ref_ms if reference else None)
    method = "build-time calibration subnets (in-sample fit)" + (
        ", timed in alternation with the reference subnet" if reference else "")
    calibrate(table, cal, method=method)
    if state.get("context"):
        apply_context(table, state["context"], cal, method=method)
    return table
