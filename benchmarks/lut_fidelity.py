"""Fidelity of the cpu-ort table: random subnets measured end to end vs the table, with/without correction.

    python benchmarks/lut_fidelity.py                 # table cpu-ort, 100 subnets
    python benchmarks/lut_fidelity.py --build         # build cpu-ort first if it is missing

Target on this machine (onnxruntime, 1 thread): 100% within ±10%, >= 95% within ±5%, Kendall tau >= 0.95.
The primary figure uses the table's build-time correction. The machine is shared, and its speed drifts by
a per cent or two between a build and a validation ten minutes later, so the benchmark also measures 10
of the build's calibration subnets again and reports the figures with that drift (the level) factored out.
Writes a run directory (validate.json, scatter.png, report.md) and prints the figures.
"""
from __future__ import annotations

import argparse
import os

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu-ort")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--out", default=None, help="runs folder (default runs/)")
    ap.add_argument("--build", action="store_true", help="build the table first if it does not exist")
    ap.add_argument("--rounds", type=int, default=2, help="measure every subnet this many times, keep the faster")
    ap.add_argument("--recalibrate", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure 10 of the build's calibration subnets again first and report the figures with "
                         "the machine's level now factored out (default on: it tells table error from machine drift)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from slimformer._errors import SlimformerError
    from slimformer.latency_lut import build_table, get_table, validate_table
    from slimformer.latency_lut._validate import figure_lines

    try:
        table = get_table(args.device, lut_dir=args.lut_dir)
    except SlimformerError:
        if not args.build:
            raise
        table = build_table(name=args.device, lut_dir=args.lut_dir)
    load0 = os.getloadavg()[0]
    r = validate_table(table, samples=args.samples, seed=args.seed, runs_root=args.out, recalibrate=args.recalibrate,
                       rounds=args.rounds)
    print(f"{table.name} ({table.backend}, {table.threads} thread(s), built {table.date}, cpu {table.cpu}): "
          f"{r['samples']} random subnets, faster of {r['rounds']} round(s); load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print("\n".join(figure_lines(r)))
    print(f"  run directory: {r['run_dir']}")


if __name__ == "__main__":
    main()
