"""CLI for latency tables: ``slimformer lut build|validate|list|show|profile`` (+ bundle/import)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .._validate import NONNEG_FLOAT, NONNEG_INT, POSITIVE_INT, SEED
from ..latency_lut._runner import BACKENDS, OP_REPEATS
from . import _lut_remote
from ._options import add_json, add_quiet, add_run_folder, add_table, print_json


def register(sub) -> None:
    p = sub.add_parser("lut", help="build, inspect and validate per-device latency lookup tables")
    lut_sub = p.add_subparsers(dest="lut_command", metavar="ACTION", required=True)

    b = lut_sub.add_parser("build", help="measure every op of a search space on this machine")
    add_table(b, required=True, help="table name (e.g. cpu-ort) or path NAME.json to write")
    b.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="runtime the ops are measured with")
    b.add_argument("--threads", type=POSITIVE_INT, default=1, help="intra-op threads (default 1)")
    b.add_argument("--batch", type=POSITIVE_INT, default=1, help="batch size of each measured op")
    b.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default), or the thread's CPU time (one thread only: leaves out time the "
                        "scheduler gives other processes on a shared machine)")
    b.add_argument("--space", default="default", help="space name (default, tiny) or JSON file")
    b.add_argument("--lut-dir", default=None, help="user table folder (default ~/.cache/slimformer/luts)")
    b.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue an interrupted build (default) or start over")
    b.add_argument("--calibration", type=NONNEG_INT, default=30, help="whole subnets measured to fit the correction")
    b.add_argument("--rounds", type=POSITIVE_INT, default=None,
                   help="times each calibration subnet is measured, minutes apart: the ratios to the table's "
                        "reference subnet averaged (unpaired: the faster kept); default 1, the reference taking the "
                        "machine's drift out (3 for a space of short subnets at 2 threads, e.g. efficientvit)")
    b.add_argument("--repeats", type=POSITIVE_INT, default=15,
                   help="timed runs per calibration subnet (at least, unless --max-time-s cuts them; default 15)")
    b.add_argument("--op-repeats", type=POSITIVE_INT, default=OP_REPEATS,
                   help=f"timed runs per op (default {OP_REPEATS}: a network sums many ops, so their noise averages out)")
    b.add_argument("--pair-ops", action=argparse.BooleanOptionalAction, default=None,
                   help="time every op in alternation with a reference op (default: at more than one thread)")
    _add_time_cap(b)
    add_quiet(b)
    add_json(b, "the table's summary")
    b.set_defaults(func=_build)

    _add_inspection(lut_sub)
    _lut_remote.register(lut_sub)



def _add_time_cap(p) -> None:
    from ..latency_lut._runner import MIN_REPEATS, TIME_CAP_S

    p.add_argument("--max-time-s", type=NONNEG_FLOAT, default=TIME_CAP_S,
                   help=f"seconds of timed calls per measurement (default {TIME_CAP_S:g}): longer calls get fewer "
                        f"repeats, never under {MIN_REPEATS}; 0 for no cap")


def _time_cap(args) -> float | None:
    return args.max_time_s or None


def _add_inspection(lut_sub) -> None:
    """``lut validate``, ``list``, ``show`` and ``profile``."""
    v = lut_sub.add_parser("validate", help="measure random subnets end to end and compare with the table")
    add_table(v, required=True, help="table name or path (built on this machine)")
    v.add_argument("--samples", type=POSITIVE_INT, default=100, help="random subnets to measure end to end")
    v.add_argument("--seed", type=SEED, default=0, help="random seed of the sampled subnets")
    v.add_argument("--lut-dir", default=None, help="user table folder (default ~/.cache/slimformer/luts)")
    add_run_folder(v, "lut-validate", old="--run-dir",
                   help="exactly the validation folder to write into (an earlier one is resumed)")
    v.add_argument("--rounds", type=POSITIVE_INT, default=None,
                   help="times each subnet is measured (all once, then all again); the faster is kept, or for a "
                        "table paired with a reference subnet the ratios averaged (default 1 for paired tables, 2 "
                        "for others)")
    v.add_argument("--recalibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="level check (default on when the table holds calibration subnets): measure 10 of the "
                        "build's calibration subnets again; when the machine's speed moved beyond the noise, the "
                        "headline figures are re-scaled by it")
    _add_time_cap(v)
    v.add_argument("--threads", type=int, default=None, help="measure at these threads (default: the table's)")
    v.add_argument("--batch", type=int, default=None, help="measure at this batch (default: the table's)")
    v.add_argument("--backend", choices=BACKENDS, default=None,
                   help="measure with this backend (default: the table's)")
    add_quiet(v)
    add_json(v, "the validation figures")
    v.set_defaults(func=_validate)

    ls = lut_sub.add_parser("list", help="shipped and user tables")
    ls.add_argument("--lut-dir", default=None, help="user table folder (default ~/.cache/slimformer/luts)")
    ls.add_argument("--json", action="store_true", help="print the tables as JSON instead of the text summary")
    ls.set_defaults(func=_list)

    s = lut_sub.add_parser("show", help="metadata, error figures and a per-op-kind breakdown")
    s.add_argument("name", help="table name or path")
    s.add_argument("--arch", default="l1", help="preset or arch JSON to break down (default l1; 'none' to skip)")
    add_json(s, "the table's metadata")
    s.add_argument("--lut-dir", default=None, help="user table folder (default ~/.cache/slimformer/luts)")
    s.set_defaults(func=_show)

    pr = lut_sub.add_parser("profile", help="bar chart PNG of latency by op kind and by stage")
    pr.add_argument("name", help="table name or path")
    pr.add_argument("--arch", default="l1", help="preset or arch JSON (default l1)")
    pr.add_argument("--lut-dir", default=None, help="user table folder (default ~/.cache/slimformer/luts)")
    add_run_folder(pr, "lut-profile")
    add_json(pr, "the profile figures")
    pr.set_defaults(func=_profile)


def _build(args) -> int:
    from ..latency_lut import build_table
    from ..latency_lut._registry import build_target

    name, folder = build_target(args.table, args.lut_dir)
    t0 = time.monotonic()
    t = build_table(name=name, backend=args.backend, threads=args.threads, batch=args.batch, clock=args.clock,
                    space=args.space,
                    lut_dir=folder, resume=args.resume, progress=not args.quiet, calibration=args.calibration,
                    rounds=args.rounds, repeats=args.repeats, op_repeats=args.op_repeats, max_time_s=_time_cap(args), pair_ops=args.pair_ops)
    if args.json:
        return print_json({"name": t.name, "path": str(t.path), "space": t.space.name, "entries": len(t.entries),
                           "backend": t.backend, "threads": t.threads, "batch": t.batch, "clock": t.clock,
                           "overhead_ms": t.overhead_ms, "correction": t.correction, "error": t.error,
                           "seconds": round(time.monotonic() - t0, 1)})
    print(f"built latency table {t.name!r}: {len(t.entries)} ops of space {t.space.name!r} in "
          f"{time.monotonic() - t0:.0f} s ({t.backend}, {t.threads} thread(s), batch {t.batch}, {t.clock} clock), "
          f"overhead {t.overhead_ms:.4f} ms/call")
    if t.error:
        from ..latency_lut._fidelity import correction_text
        from ..latency_lut._validate import format_figures

        print(f"  calibration ({t.error['samples']} subnets), without correction: "
              f"{format_figures(t.error['uncorrected'])}")
        print(f"  with correction {correction_text(t.correction)}: "
              f"{format_figures(t.error['corrected'])}")
    print(f"wrote {t.path}")
    return 0


def _validate(args) -> int:
    from ..latency_lut import get_table
    from ..latency_lut._validate import figure_lines, rounds_text, validate_table

    t = get_table(args.table, lut_dir=args.lut_dir)
    line = t.mismatch(threads=args.threads, batch=args.batch, backend=args.backend)
    if line:
        print(line, file=sys.stderr, flush=True)
    r = validate_table(t, samples=args.samples, seed=args.seed, run_dir=args.out, runs_root=args.runs_root,
                       progress=not args.quiet, recalibrate=args.recalibrate, rounds=args.rounds,
                       threads=args.threads, batch=args.batch, backend=args.backend, max_time_s=_time_cap(args))
    if args.json:
        return print_json(r)
    print(f"{t.name}: {r['samples']} random subnets measured end to end ({args.backend or t.backend}, "
          f"{args.threads or t.threads} thread(s), batch {args.batch or t.batch}, {t.clock} clock; {rounds_text(r)})")
    print("\n".join(figure_lines(r)))
    print(f"wrote {r['run_dir']} (validate.json, scatter.png, report.md)")
    return 0


def _list(args) -> int:
    from ..latency_lut import list_tables

    rows = list_tables(args.lut_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no latency tables (build one with `slimformer lut build --device cpu-ort`)")
    for r in rows:
        print(f"{r['name']:20s} {r['kind']!s:9s} {r['source']:7s} {r['entries']:5d} ops  {r['device']}  "
              f"[{r['backend']}]  {r['path']}")
    return 0


def _show(args) -> int:
    from ..latency_lut import get_table
    from ..latency_lut._report import describe
    from ..supernet import get_arch

    t = get_table(args.name, lut_dir=args.lut_dir)
    cfg = None if str(args.arch).lower() == "none" else get_arch(args.arch)
    if args.json:
        return print_json({"name": t.name, "kind": t.kind, "device": t.device, "backend": t.backend,
                           "path": str(t.path), "space": t.space.name, "entries": len(t.entries),
                           "overhead_ms": t.overhead_ms, "correction": t.correction, "error": t.error,
                           "arch": None if cfg is None else {"summary": cfg.summary(),
                                                             "predicted_ms": float(t.predict(cfg))}})
    print(describe(t, cfg))
    return 0


def _profile(args) -> int:
    from ..latency_lut import get_table
    from ..latency_lut._report import parts_text, profile
    from ..supernet import get_arch

    t = get_table(args.name, lut_dir=args.lut_dir)
    r = profile(t, get_arch(args.arch), run_dir=args.out, runs_root=args.runs_root)
    if args.json:
        return print_json(r)
    top = sorted(r["by_kind_ms"].items(), key=lambda kv: -kv[1])[:3]
    print(f"{args.arch} on {t.name} ({t.kind}): predicted {parts_text(r['parts'])}; largest ops: "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in top))
    print(f"wrote {r['png']}")
    return 0
