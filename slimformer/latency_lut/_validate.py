"""``validate_table``: export random subnets, measure them end to end, compare with the table.

Writes into one run directory: ``validate.json`` (figures and every sample), ``scatter.png``
(predicted vs measured, with and without the correction) and ``report.md``. Samples are saved as they
are measured (``samples.partial.json``), so a killed validation given the same ``run_dir`` resumes.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._io import atomic_write_json, atomic_write_text, make_run_dir, read_json
from ..supernet import ArchConfig
from ._fidelity import fidelity, measure_arch
from ._table import LatencyTable

VALIDATION_SEED = 0


def validation_configs(table: LatencyTable, n: int, seed: int = VALIDATION_SEED) -> list[ArchConfig]:
    rng = random.Random(seed)
    return [table.space.sample(rng) for _ in range(n)]


def validate_table(table: LatencyTable, *, samples: int = 100, seed: int = VALIDATION_SEED,
                   run_dir: str | Path | None = None, runs_root: str | Path | None = None,
                   progress: bool = True, repeats: int = 15, min_time_s: float = 0.02) -> dict[str, Any]:
    """Fidelity figures of ``table`` on ``samples`` random subnets measured here with the table's settings."""
    if table.kind != "measured" or table.backend not in ("onnxruntime", "torch"):
        raise SlimformerError(f"table {table.name!r} is {table.kind} for {table.device!r} ({table.backend}); "
                              f"validation measures on this machine, so it applies to tables built here with "
                              f"`slimformer lut build`")
    if samples < 2:
        raise SlimformerError("--samples must be at least 2")
    from tqdm import tqdm

    out = Path(run_dir) if run_dir is not None else make_run_dir(runs_root, f"lut-validate-{table.name}")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "samples.partial.json"
    rows: list[dict[str, Any]] = []
    if partial.is_file():
        d = read_json(partial, "validation samples")
        if isinstance(d, dict) and d.get("table_hash") == table.hash and d.get("seed") == seed:
            rows = list(d.get("rows", []))[:samples]
    cfgs = validation_configs(table, samples, seed)
    kw = {"backend": table.backend, "threads": table.threads or 1, "batch": table.batch, "clock": table.clock}
    with tqdm(total=samples, initial=len(rows), desc=f"validate {table.name}", unit="subnet",
              disable=not progress, dynamic_ncols=True) as bar:
        for cfg in cfgs[len(rows):]:
            r = measure_arch(cfg, **kw, repeats=repeats, min_time_s=min_time_s)
            rows.append({"summary": cfg.summary(), "arch": cfg.to_dict(), "measured_ms": r["median_ms"],
                         "spread_ms": r["spread_ms"], "predicted_ms": table.predict(cfg, corrected=False),
                         "corrected_ms": table.predict(cfg)})
            atomic_write_json(partial, {"table_hash": table.hash, "seed": seed, "rows": rows})
            bar.update(1)
    m = [r["measured_ms"] for r in rows]
    result = {"table": table.name, "table_hash": table.hash, "device": table.device, "backend": table.backend,
              "threads": table.threads, "batch": table.batch, "clock": table.clock, "samples": len(rows),
              "seed": seed,
              "uncorrected": fidelity([r["predicted_ms"] for r in rows], m),
              "corrected": fidelity([r["corrected_ms"] for r in rows], m) if table.correction else None,
              "correction": table.correction, "run_dir": str(out), "rows": rows}
    atomic_write_json(out / "validate.json", result)
    scatter_plot(rows, out / "scatter.png", title=f"{table.name}: {len(rows)} random subnets")
    atomic_write_text(out / "report.md", report(result))
    partial.unlink(missing_ok=True)
    return result


def format_figures(f: dict[str, float]) -> str:
    return (f"within ±5%: {100 * f['within_5pct']:.0f}%, within ±10%: {100 * f['within_10pct']:.0f}%, "
            f"MAPE {f['mape_pct']:.2f}%, worst {f['worst_pct']:.1f}%, Kendall tau {f['kendall_tau']:.3f}")


def report(result: dict[str, Any]) -> str:
    lines = [f"# Latency table fidelity: {result['table']}", "",
             (f"- table hash {result['table_hash']}, backend {result['backend']}, threads {result['threads']}, "
              f"batch {result['batch']}, clock {result['clock']}"),
             (f"- {result['samples']} random subnets (seed {result['seed']}), "
              "measured end to end with the table's backend and settings"), "",
             f"- without correction: {format_figures(result['uncorrected'])}"]
    if result["corrected"]:
        c = result["correction"]
        lines.append(f"- with correction (x{c['scale']:.4f} {c['offset_ms']:+.3f} ms): "
                     f"{format_figures(result['corrected'])}")
    lines += ["", "![predicted vs measured](scatter.png)", ""]
    return "\n".join(lines)


def scatter_plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.array([r["measured_ms"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 5.0), dpi=120)
    lo, hi = 0.9 * m.min(), 1.1 * m.max()
    xs = np.array([lo, hi])
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.92", label="±10%")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="0.82", label="±5%")
    ax.plot(xs, xs, color="0.4", lw=0.8)
    ax.scatter(m, [r["predicted_ms"] for r in rows], s=12, marker="x", color="tab:orange", label="sum of ops")
    if any(r["corrected_ms"] != r["predicted_ms"] for r in rows):
        ax.scatter(m, [r["corrected_ms"] for r in rows], s=12, color="tab:blue", label="corrected")
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted by the table (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
