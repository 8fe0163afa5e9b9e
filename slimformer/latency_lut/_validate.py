"""``validate_table``: export random subnets, measure them end to end, compare with the table.

Every subnet is measured in ``rounds`` rounds (default 2): all samples once, then all of them again,
and each keeps its faster round (:func:`._fidelity.fastest`: interference from other processes comes
in phases and only adds time). An unpaired build measures its calibration subnets the same way.

With ``recalibrate=True`` the first ``calibration`` of the build's calibration subnets (disjoint from
the validation samples) are measured again, spread among the samples of every round, and the factor by
which the machine now runs slower or faster than when the build measured the same subnets (its
*level*) is reported, with the figures of the build's predictions times that factor: on a shared
machine every timing drifts by a per cent or two over minutes with the neighbours' load, and this
separates that drift from the table's own error. The table is not changed.

A table whose build timed its calibration subnets in alternation with a reference subnet
(``meta["build"]["reference"]``, see :mod:`._fidelity`) has every sample timed the same way, and the
headline compares its predictions with each sample's latency at the build's level (``paired_ms``: the
sample's ratio to the reference times the reference's build-time median); the samples' own medians are
still compared as before. Paired samples are measured in one round by default: the pairing, not a second
round, is what takes the machine's drift out.

Writes into one run directory: ``validate.json`` (figures and every sample), ``scatter.png``
(predicted vs measured, with and without the correction) and ``report.md``. Samples are saved as they
are measured (``samples.partial.json``), so a killed validation given the same ``run_dir`` resumes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import SlimformerError
from .._io import atomic_write_json, atomic_write_text, make_run_dir, read_json
from ..supernet import ArchConfig, arch_from_dict
from ._alloc import allocator_policy
from ._fidelity import correction_text, fastest, fidelity, fit_level, measure_arch, table_reference
from ._runner import BACKENDS, TIME_CAP_S
from ._table import LatencyTable

VALIDATION_SEED = 0


def validation_configs(table: LatencyTable, n: int, seed: int = VALIDATION_SEED) -> list[ArchConfig]:
    rng = random.Random(seed)
    return [table.space.sample(rng) for _ in range(n)]


def _check_options(table: LatencyTable, samples: int, rounds: int) -> None:
    if table.kind != "measured" or table.backend not in BACKENDS:
        raise SlimformerError(f"table {table.name!r} is {table.kind} for {table.device!r} ({table.backend}); "
                              f"validation measures on this machine, so it applies to tables built here with "
                              f"`slimformer lut build`")
    if samples < 2:
        raise SlimformerError("--samples must be at least 2")
    if rounds < 1:
        raise SlimformerError("--rounds must be at least 1")


def _resume(partial: Path, table: LatencyTable, *, seed: int, rounds: int, recalibrate: bool,
            samples: int, paired: bool) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """The rows and calibration re-measurements of a killed validation with the same settings, else none."""
    if partial.is_file():
        d = read_json(partial, "validation samples")
        if (isinstance(d, dict) and d.get("table_hash") == table.hash and d.get("seed") == seed
                and d.get("rounds") == rounds and bool(d.get("again")) == recalibrate
                and bool(d.get("paired")) == paired):
            return list(d.get("rows", []))[:samples], dict(d.get("again") or {})
    return [], {}


def _level_subnets(table: LatencyTable, build_cal: list[dict], calibration: int) -> dict[int, dict]:
    """The first ``calibration`` of the build's calibration subnets (their faster round), by index."""
    then = {c["index"]: c for c in fastest(build_cal) if "index" in c}
    if len(then) < 3:
        raise SlimformerError(f"table {table.name!r} holds no calibration subnets measured in rounds; rebuild it "
                              f"with this slimformer to use --recalibrate")
    return {i: then[i] for i in sorted(then)[:calibration]}


def _round_order(samples: int, then: dict[int, dict]) -> list[tuple[str, int]]:
    """Each round: the samples in order, the calibration subnets (if any) spread among them."""
    order: list[tuple[str, int]] = [("sample", i) for i in range(samples)]
    for j, i in reversed(list(enumerate(then))):
        order.insert(int((j + 0.5) * samples / len(then)), ("again", i))
    return order


@dataclass
class _Validation:
    """A validation in progress: the samples' rows and the calibration subnets' medians measured again."""
    table: LatencyTable
    cfgs: list[ArchConfig]
    then: dict[int, dict]  # calibration subnet index -> the build's measurement of it
    rows: list[dict[str, Any]]
    again: dict[str, list[float]]  # calibration subnet index -> its medians measured now, one per round
    measure_kw: dict[str, Any]
    ref: Any = None  # the table's reference subnet (a runner) when samples are paired with it
    ref_ms: float | None = None  # its median over the build

    def done(self) -> int:
        return sum(len(r["runs"]) for r in self.rows) + sum(len(v) for v in self.again.values())

    def step(self, what: str, i: int, rnd: int) -> bool:
        """Measure item ``i`` in round ``rnd`` unless a resumed run has it; whether it was measured."""
        if what == "again":
            if len(self.again[str(i)]) > rnd:
                return False
            cfg = arch_from_dict(self.then[i]["arch"])
            self.again[str(i)].append(measure_arch(cfg, **self.measure_kw)["median_ms"])
            return True
        if i < len(self.rows) and len(self.rows[i]["runs"]) > rnd:
            return False
        self._sample(i)
        return True

    def _sample(self, i: int) -> None:
        cfg = self.cfgs[i]
        r = measure_arch(cfg, **self.measure_kw, reference=self.ref)
        if i == len(self.rows):
            self.rows.append({"summary": cfg.summary(), "arch": cfg.to_dict(), "runs": [],
                              "predicted_ms": self.table.predict(cfg, corrected=False),
                              "corrected_ms": self.table.predict(cfg)})
        row = self.rows[i]
        row["runs"].append({k: r[k] for k in ("median_ms", "spread_ms", "ratio", "ref_ms") if k in r})
        best = min(row["runs"], key=lambda x: x["median_ms"])
        row["measured_ms"], row["spread_ms"] = best["median_ms"], best["spread_ms"]
        if self.ref is not None:  # the ratios of the rounds, averaged, at the build's level
            row["paired_ms"] = self.ref_ms * sum(x["ratio"] for x in row["runs"]) / len(row["runs"])

    def measure(self, order: list[tuple[str, int]], rounds: int, partial: Path, *, seed: int,
                progress: bool) -> None:
        """All ``rounds`` of ``order``, each measurement saved to ``partial`` as it is taken."""
        from tqdm import tqdm

        with tqdm(total=len(order) * rounds, initial=self.done(), desc=f"validate {self.table.name}",
                  unit="subnet", disable=not progress, dynamic_ncols=True) as bar:
            for rnd in range(rounds):
                for what, i in order:
                    if not self.step(what, i, rnd):
                        continue
                    atomic_write_json(partial, {"table_hash": self.table.hash, "seed": seed, "rounds": rounds,
                                                "paired": self.ref is not None, "rows": self.rows,
                                                "again": self.again})
                    bar.update(1)

    def level(self, min_level: float) -> dict[str, Any] | None:
        """The machine's level now against the build's, with each row's prediction re-scaled by it."""
        then, again = self.then, self.again
        level = fit_level([then[i]["median_ms"] for i in then], [min(again[str(i)]) for i in then]) if then else None
        if level:
            level["moved"] = bool(abs(level["factor"] - 1) > max(min_level, level["noise"]))
            for row in self.rows:
                row["recalibrated_ms"] = level["factor"] * row["corrected_ms"]
        return level


def _paired(table: LatencyTable, rows: list[dict[str, Any]], ref_ms: float | None) -> dict[str, Any] | None:
    """The predictions against each sample's latency at the build's level, and the reference's level now."""
    if not rows or "paired_ms" not in rows[0]:
        return None
    now = [x["ref_ms"] for r in rows for x in r["runs"]]
    return {**fidelity([r["corrected_ms"] for r in rows], [r["paired_ms"] for r in rows]),
            "reference_ms": ref_ms, "reference_level": float(np.median(now)) / ref_ms}


def _result(table: LatencyTable, rows: list[dict[str, Any]], level: dict | None, *, seed: int, rounds: int,
            mismatch, out: Path, ref_ms: float | None = None) -> dict[str, Any]:
    m = [r["measured_ms"] for r in rows]
    result = {"table": table.name, "table_hash": table.hash, "device": table.device, "backend": table.backend,
              "threads": table.threads, "batch": table.batch, "clock": table.clock, "samples": len(rows),
              "seed": seed, "rounds": rounds,
              "uncorrected": fidelity([r["predicted_ms"] for r in rows], m),
              "corrected": fidelity([r["corrected_ms"] for r in rows], m) if table.correction else None,
              "correction": table.correction,
              "recalibrated": fidelity([r["recalibrated_ms"] for r in rows], m) if level else None,
              "paired": _paired(table, rows, ref_ms),
              "level": level, "mismatch": mismatch, "run_dir": str(out), "rows": rows}
    result["headline"] = ("paired" if result["paired"] else "recalibrated" if level and level["moved"] else
                          "corrected" if result["corrected"] else "uncorrected")
    return result


def validate_table(table: LatencyTable, *, samples: int = 100, seed: int = VALIDATION_SEED,
                   run_dir: str | Path | None = None, runs_root: str | Path | None = None,
                   progress: bool = True, repeats: int = 15, min_time_s: float = 0.02,
                   max_time_s: float | None = TIME_CAP_S, recalibrate: bool | None = None, calibration: int = 10,
                   rounds: int | None = None,
                   threads: int | None = None, batch: int | None = None, backend: str | None = None,
                   min_level: float = 0.02) -> dict[str, Any]:
    """Fidelity figures of ``table`` on ``samples`` random subnets measured here with the table's settings
    (or at ``threads``/``batch``/``backend``: then ``result["mismatch"]`` holds the one line that says so).

    The level check is on by default (``recalibrate=None``: whenever the table holds calibration subnets
    measured in rounds): when the machine's level moved by more than its noise (and at least
    ``min_level``), the headline figures are the build's predictions re-scaled by it. A table with a reference
    subnet has its samples paired with it (unless measured at other settings than the table's) and its
    headline is the paired comparison; ``rounds`` defaults to 1 for paired samples and 2 otherwise."""
    reference = (table.meta.get("build") or {}).get("reference")
    mismatch = table.mismatch(threads=threads, batch=batch, backend=backend)
    paired = bool(reference) and not mismatch
    rounds = rounds if rounds is not None else 1 if paired else 2
    _check_options(table, samples, rounds)
    build_cal = table.meta.get("build", {}).get("calibration", [])
    if recalibrate is None:
        recalibrate = len([c for c in fastest(build_cal) if "index" in c]) >= 3
    out = Path(run_dir) if run_dir is not None else make_run_dir(runs_root, f"lut-validate-{table.name}")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "samples.partial.json"
    rows, again = _resume(partial, table, seed=seed, rounds=rounds, recalibrate=recalibrate, samples=samples,
                          paired=paired)
    cfgs = validation_configs(table, samples, seed)
    kw = {"backend": backend or table.backend, "threads": threads or table.threads or 1, "batch": batch or table.batch,
          "clock": table.clock, "repeats": repeats, "min_time_s": min_time_s, "max_time_s": max_time_s}
    then = _level_subnets(table, build_cal, calibration) if recalibrate else {}
    for i in then:
        again.setdefault(str(i), [])
    v = _Validation(table, cfgs, then, rows, again, kw)
    if paired:
        v.ref, v.ref_ms = table_reference(table, **{k: kw[k] for k in ("backend", "threads", "batch")})
    v.measure(_round_order(samples, then), rounds, partial, seed=seed, progress=progress)
    result = _result(table, rows, v.level(min_level), seed=seed, rounds=rounds, mismatch=mismatch, out=out,
                     ref_ms=v.ref_ms)
    result["timing"] = {"repeats": repeats, "min_time_s": min_time_s, "max_time_s": max_time_s}
    if kw["backend"] == "torch":  # eager torch's allocator policy, now and at build time (._alloc)
        result["allocator"] = {"now": allocator_policy(), "table": (table.meta.get("build") or {}).get("allocator")}
    atomic_write_json(out / "validate.json", result)
    if not mismatch:
        _remember(table, result)
    scatter_plot(rows, out / "scatter.png", title=f"{table.name}: {len(rows)} random subnets")
    atomic_write_text(out / "report.md", report(result))
    partial.unlink(missing_ok=True)
    return result


def _remember(table: LatencyTable, result: dict[str, Any]) -> None:
    """Store the figures in the table file (``meta["validation"]``; predictions and hash unchanged) for ``lut show``."""
    if table.path is None or not Path(table.path).is_file():
        return
    import datetime as _dt

    table.meta["validation"] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "samples": result["samples"],
        "seed": result["seed"], "rounds": result["rounds"], "uncorrected": result["uncorrected"],
        "corrected": result["corrected"], "level": result["level"], "with_level": result["recalibrated"],
        "paired": result["paired"],
        "run_dir": result["run_dir"]}
    table.save(table.path)


def format_figures(f: dict[str, float]) -> str:
    return (f"within ±5%: {100 * f['within_5pct']:.0f}%, within ±10%: {100 * f['within_10pct']:.0f}%, "
            f"MAPE {f['mape_pct']:.2f}%, worst {f['worst_pct']:.1f}%, Kendall tau {f['kendall_tau']:.3f}")


def figure_lines(result: dict[str, Any], *, bullet: str = "  ") -> list[str]:
    """The figures of a validation, one line each: without, with the build's, and with a refitted correction."""
    lines = [f"{bullet}without correction: {format_figures(result['uncorrected'])}"]
    if result["corrected"]:
        c = result["correction"]
        lines.append(f"{bullet}with the build's correction ({correction_text(c)}): "
                     f"{format_figures(result['corrected'])}")
    if result.get("recalibrated"):
        c = result["level"]
        lines.append(f"{bullet}with the build's correction times the machine's level now (x{c['factor']:.4f}, from "
                     f"{c['samples']} calibration subnets measured again): {format_figures(result['recalibrated'])}")
    p = result.get("paired")
    if p:
        lines.append(f"{bullet}paired with the reference subnet (each sample's ratio to it x its build-time "
                     f"{p['reference_ms']:.3f} ms; the reference runs x{p['reference_level']:.3f} of that now): "
                     f"{format_figures(p)}")
    al = result.get("allocator")
    if al and al["now"] != al["table"]:
        lines.append(f"{bullet}note: measured with the allocator policy {al['now'] or 'of glibc by default'}, the "
                     f"table was built with {al['table'] or 'glibc by default'}: rebuild it to compare like with like")
    lv = result.get("level")
    if lv and "noise" in lv:
        lines.append(f"{bullet}level check: " + (
            f"the machine runs x{lv['factor']:.3f} of its speed at build time, beyond the noise (±{lv['noise']:.3f}): "
            f"headline figures are the predictions re-scaled by it" if lv.get("moved") else
            f"the machine's level x{lv['factor']:.3f} is within the noise (±{lv['noise']:.3f}) of the build's"))
    return lines


def rounds_text(result: dict[str, Any]) -> str:
    """How each sample was measured, e.g. ``the faster of 2 round(s) each``."""
    n = result.get("rounds", 1)
    if result.get("paired"):
        return f"each timed in alternation with the table's reference subnet, {n} round(s)"
    return f"the faster of {n} round(s) each"


def report(result: dict[str, Any]) -> str:
    lines = [f"# Latency table fidelity: {result['table']}", "",
             (f"- table hash {result['table_hash']}, backend {result['backend']}, threads {result['threads']}, "
              f"batch {result['batch']}, clock {result['clock']}"),
             (f"- {result['samples']} random subnets (seed {result['seed']}), measured end to end with the table's "
              f"backend and settings, {rounds_text(result)}"), ""]
    lines += figure_lines(result, bullet="- ")
    lines += ["", "![predicted vs measured](scatter.png)", ""]
    return "\n".join(lines)


def scatter_plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array([r["measured_ms"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=120)
    both = np.r_[m, [r["paired_ms"] for r in rows if "paired_ms" in r]]
    lo, hi = 0.9 * both.min(), 1.1 * both.max()
    xs = np.array([lo, hi])
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.92", label="±10%")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="0.82", label="±5%")
    ax.plot(xs, xs, color="0.4", lw=0.8)
    ax.scatter(m, [r["predicted_ms"] for r in rows], s=12, marker="x", color="tab:orange", label="sum of ops")
    if any(r["corrected_ms"] != r["predicted_ms"] for r in rows):
        ax.scatter(m, [r["corrected_ms"] for r in rows], s=12, color="tab:blue", label="corrected")
    if rows and "paired_ms" in rows[0]:
        ax.scatter([r["paired_ms"] for r in rows], [r["corrected_ms"] for r in rows], s=10, marker="s",
                   color="tab:purple", label="corrected vs paired measurement")
    if rows and "recalibrated_ms" in rows[0]:
        ax.scatter(m, [r["recalibrated_ms"] for r in rows], s=10, marker="^", color="tab:green",
                   label="corrected x level now")
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted by the table (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
