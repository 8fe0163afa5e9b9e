"""Latency-table fidelity off the tuned setting: threads x batch x backend.

For each cell of threads {1, 2} x batch {1, 4, 16} x backend {onnxruntime, torch}, build (or reuse) a table
of the space and validate it on random subnets drawn with a seed the build never used (its calibration
subnets come from seed 1 000 003). One row per cell: within ±5 %, within ±10 %, MAPE, worst, Kendall tau
(the headline figures: the build's correction, re-scaled by the machine's level when the level check found
it moved beyond its noise), build time, the machine's level, how well the measurement repeats (the sd of
round 2 / round 1 of the same subnets, and the share of subnets whose two rounds agree within ±5 %), and
the load average beside it. ``--cells ''`` only prints the matrix of the finished cells.

Tables built since the thirteenth session time their calibration subnets, and their validations every
sample, in alternation with a reference subnet (``slimformer.latency_lut._fidelity``): the headline is
then ``paired`` (each sample at the build's level), and the row also keeps the figures without the pairing
(the build's correction, re-scaled when the level moved) and how well the paired ratios repeat.
``--rounds 2`` measures every sample twice so both repeat figures are printed.

    python benchmarks/lut_fidelity_matrix.py                                 # all 12 cells, default space
    python benchmarks/lut_fidelity_matrix.py --cells 2x4-onnxruntime,1x1-onnxruntime
    python benchmarks/lut_fidelity_matrix.py --space tiny@96 --out runs/lut-matrix-tiny96
    python benchmarks/lut_fidelity_matrix.py --cells 1x1-torch-cuda,1x64-torch-cuda   # on a CUDA GPU

Resumable: every finished cell is kept in ``<out>/matrix.json``; a killed cell resumes its build (the
table's journal) and its validation (``<out>/<cell>/``). ``--max-time-s`` is the timing cap of builds and
validations (``slimformer lut build --max-time-s``; 0 for none, the rule of the rows before it). Targets per cell: >= 95 % within ±5 %, 100 %
within ±10 %, tau >= 0.95; build <= 5 min at batch <= 4, <= 10 min at batch 16.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time
from pathlib import Path

CELLS = [f"{t}x{b}-{be}" for be, t, b in itertools.product(("onnxruntime", "torch"), (1, 2), (1, 4, 16))]
#: Cells that need a CUDA GPU (``--cells 1x1-torch-cuda,1x64-torch-cuda``: scripts/gpu_session.sh runs them there).
CUDA_CELLS = ["1x1-torch-cuda", "1x64-torch-cuda"]
VALIDATION_SEED = 2026  # never used by a build


def space_of(spec: str):
    """``default``, ``tiny`` or ``NAME@IMG`` (the named space at another input size)."""
    from slimformer.supernet import get_space

    name, _, img = spec.partition("@")
    sp = get_space(name)
    if not img:
        return sp
    kw = {f.name: getattr(sp, f.name) for f in dataclasses.fields(sp)}
    return type(sp)(**{**kw, "img_size": int(img), "name": f"{name}{img}"})


def parse_cell(cell: str) -> tuple[int, int, str]:
    tb, _, backend = cell.partition("-")
    t, _, b = tb.partition("x")
    return int(t), int(b), backend


def run_cell(cell: str, args, space) -> dict:
    from slimformer._errors import SlimformerError
    from slimformer.latency_lut import build_table, get_table, repeatability, validate_table

    threads, batch, backend = parse_cell(cell)
    name = f"matrix-{space.name}-{cell}"
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    try:
        table = get_table(name, lut_dir=args.lut_dir)
        build_s, reused = table.meta.get("build", {}).get("seconds"), True
    except SlimformerError:
        table = build_table(name=name, backend=backend, threads=threads, batch=batch, space=space,
                            lut_dir=args.lut_dir, calibration=args.calibration, progress=not args.quiet,
                            max_time_s=args.max_time_s or None, pair_ops=args.pair_ops)
        # the build's own sum over its journal (every segment of a resumed build), else this call's time
        build_s, reused = table.meta.get("build", {}).get("seconds") or time.perf_counter() - t0, False
    load1, t1 = os.getloadavg(), time.perf_counter()
    r = validate_table(table, samples=args.samples, seed=VALIDATION_SEED, run_dir=Path(args.out) / cell,
                       progress=not args.quiet, max_time_s=args.max_time_s or None, rounds=args.rounds,
                       repeats=args.repeats)
    head = r[r["headline"]]
    unpaired = r["recalibrated"] if r["level"] and r["level"].get("moved") else r["corrected"] or r["uncorrected"]
    ctx = table.meta.get("context") or {}
    return {"cell": cell, "threads": threads, "batch": batch, "backend": backend, "table": name,
            "samples": r["samples"], "headline": r["headline"], **{k: head[k] for k in
            ("within_5pct", "within_10pct", "mape_pct", "worst_pct", "kendall_tau")},
            "corrected": r["corrected"], "uncorrected": r["uncorrected"], "recalibrated": r["recalibrated"],
            "paired": r.get("paired"), "unpaired": unpaired,
            "paired_repeat_sd": repeatability(r["rows"], "ratio")["repeat_sd"],
            "level": (r["level"] or {}).get("factor"), "level_noise": (r["level"] or {}).get("noise"),
            **repeatability(r["rows"]), "build_s": build_s, "reused": reused, "in_context_kept": ctx.get("kept"),
            "build_timing": table.meta.get("build", {}).get("timing"),
            "op_repeats": table.meta.get("build", {}).get("op_repeats"), "validate_timing": r.get("timing"),
            "validate_s": round(time.perf_counter() - t1, 1),
            "loadavg_build": [round(x, 2) for x in load0], "loadavg_validate": [round(x, 2) for x in load1],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "run_dir": r["run_dir"],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def markdown(rows: dict, space_name: str) -> str:
    out = [(f"| threads × batch, backend ({space_name}) | ±5 % | ±10 % | MAPE | worst | τ | build | level | "
            "repeat: sd / ±5 % | load (1-min avg: build / validate) | without pairing: ±5 % / ±10 % / τ | "
            "paired repeat sd |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in CELLS + [c for c in CUDA_CELLS if c in rows]:
        r = rows.get(cell)
        if r is None:
            out.append(f"| {cell.replace('-', ', ', 1)} | not run | | | | | | | | | | |")
            continue
        build = f"{r['build_s']:.0f} s" if r.get("build_s") else "reused"
        if r.get("validate_s"):  # this call's validation time (a resumed one: its last segment)
            build += f" (+ {r['validate_s']:.0f} s validation)"
        cap = (r.get("build_timing") or {}).get("max_time_s")
        build += f", cap {cap:g} s" if cap else ""
        lv = f"×{r['level']:.3f}" if r.get("level") else "–"
        lv += " (re-scaled)" if r.get("headline") == "recalibrated" else ""
        rep = (f"{100 * r['repeat_sd']:.1f} % / {100 * r['repeat_within_5pct']:.0f} %"
               if r.get("repeat_sd") is not None else "–")
        w5 = f"{100 * r['within_5pct']:.0f} %"
        if r.get("headline") == "recalibrated":  # what the build's correction alone gave
            w5 += f" ({100 * r['corrected']['within_5pct']:.0f} % before)"
        out.append(f"| {cell.replace('-', ', ', 1)} | {w5} | {100 * r['within_10pct']:.0f} % | "
                   f"{r['mape_pct']:.2f} % | {r['worst_pct']:.1f} % | {r['kendall_tau']:.3f} | {build} | {lv} | {rep} | "
                   f"{r['loadavg_build'][0]:.1f} / {r['loadavg_validate'][0]:.1f} | {_unpaired(r)} |")
    return "\n".join(out)


def _unpaired(r: dict) -> str:
    """The last two columns: a paired row's figures without the pairing, and how its ratios repeat."""
    u = r.get("unpaired") if r.get("headline") == "paired" else None
    if not u:
        return "– | –"
    sd = r.get("paired_repeat_sd")
    return (f"{100 * u['within_5pct']:.0f} % / {100 * u['within_10pct']:.0f} % / {u['kendall_tau']:.3f} | "
            + (f"{100 * sd:.1f} %" if sd is not None else "–"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells THREADSxBATCH-BACKEND")
    ap.add_argument("--space", default="default", help="default, tiny, or NAME@IMG (default: default)")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--calibration", type=int, default=30)
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--out", default=None, help="matrix folder (default runs/lut-matrix-<space>)")
    ap.add_argument("--max-time-s", type=float, default=1.0,
                    help="seconds of timed calls per measurement before repeats are cut (default 1; 0: no cap, "
                         "the rule before the eighth session)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per validation sample (default: 1 for paired tables, 2 otherwise)")
    ap.add_argument("--repeats", type=int, default=15,
                    help="timed calls per validation sample (at least, unless --max-time-s cuts them; default 15)")
    ap.add_argument("--pair-ops", action=argparse.BooleanOptionalAction, default=None,
                    help="time every op in alternation with the reference op in builds (default: as lut build, "
                         "at more than one thread)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    from slimformer._io import atomic_write_json, atomic_write_text, read_json
    from slimformer.latency_lut import repeatability

    space = space_of(args.space)
    args.out = args.out or f"runs/lut-matrix-{space.name}"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    state_path = Path(args.out) / "matrix.json"
    rows = read_json(state_path, "matrix state")["rows"] if state_path.is_file() else {}
    for row in rows.values():  # cells finished before the repeat column existed
        val = Path(row["run_dir"]) / "validate.json"
        if "repeat_sd" not in row and val.is_file():
            row.update(repeatability(read_json(val, "validation")["rows"]))
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
        if cell not in CELLS + CUDA_CELLS:
            raise SystemExit(f"unknown cell {cell!r}: choose from {', '.join(CELLS + CUDA_CELLS)}")
        if cell in rows:
            print(f"{cell}: done before ({rows[cell]['date']})")
            continue
        print(f"{cell}: building/validating on {space.name} (load {os.getloadavg()[0]:.1f})", flush=True)
        rows[cell] = run_cell(cell, args, space)
        atomic_write_json(state_path, {"space": space.name, "rows": rows})
        print(next(x for x in markdown({cell: rows[cell]}, space.name).splitlines()
                   if x.startswith(f"| {cell.replace('-', ', ', 1)} |")), flush=True)
    table = markdown(rows, space.name)
    atomic_write_text(Path(args.out) / "matrix.md", table + "\n")
    print(table)
    print(f"wrote {state_path} and matrix.md")


if __name__ == "__main__":
    main()
