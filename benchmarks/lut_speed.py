"""Latency-table speed: build time of a space's table on this machine, and predictions per second.

    python benchmarks/lut_speed.py                      # build the default space (onnxruntime, 1 thread) + throughput
    python benchmarks/lut_speed.py --skip-build --table iphone-lut   # throughput only

The build goes to a scratch folder (never over your cpu-ort table) unless --lut-dir is given. Prints medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch


def throughput(table, space, n: int, passes: int) -> tuple[float, float, float]:
    """(cold-cache rate, median warm rate per wall second, median rate per CPU second of this process)."""
    cfgs = [space.sample(i) for i in range(n)]
    table.clear_cache()
    t0 = time.perf_counter()
    for c in cfgs:
        table.predict(c)
    cold = n / (time.perf_counter() - t0)
    rates, cpu_rates = [], []
    for p in range(passes):
        cfgs = [space.sample(10_000_000 * (p + 1) + i) for i in range(n)]  # fresh random configs each pass
        t0, c0 = time.perf_counter(), time.process_time()
        for c in cfgs:
            table.predict(c)
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / (time.process_time() - c0))
    return cold, statistics.median(rates), statistics.median(cpu_rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="default")
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    ap.add_argument("--name", default="lut-speed", help="name of the built table")
    ap.add_argument("--lut-dir", default=None, help="keep the built table here (default: a scratch folder)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--table", default=None, help="table for the throughput part (default: the one just built)")
    ap.add_argument("--predictions", type=int, default=20000)
    ap.add_argument("--passes", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from slimformer.latency_lut import build_table, get_table, space_ops
    from slimformer.supernet import get_space

    space = get_space(args.space)
    load = os.getloadavg()
    print(f"space {space.name!r}: {len(space_ops(space))} ops; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at start")
    table = None
    if not args.skip_build:
        with tempfile.TemporaryDirectory() as scratch:
            t0, c0 = time.monotonic(), time.process_time()
            table = build_table(name=args.name, backend=args.backend, threads=args.threads, clock=args.clock,
                                space=space, lut_dir=args.lut_dir or scratch, resume=False)
            took, cpu = time.monotonic() - t0, time.process_time() - c0
        print(f"build: {took:.0f} s wall for {len(table.entries)} ops + {table.correction['samples']} calibration "
              f"subnets ({len(table.entries) / took:.1f} ops/s, {args.clock} clock; target <= 300 s); the process "
              f"used {cpu:.0f} s of CPU (what the build takes on an idle core); load average now "
              f"{os.getloadavg()[0]:.1f}")
    if args.table:
        table = get_table(args.table)
    if table is None:
        table = get_table("iphone-lut")
    cold, warm, per_cpu = throughput(table, table.space, args.predictions, args.passes)
    print(f"predict ({table.name}): {cold:,.0f} predictions/s on a cold cache, median {warm:,.0f}/s over "
          f"{args.passes} passes of {args.predictions} fresh random configs ({per_cpu:,.0f} per CPU second of "
          f"this process; target >= 100,000/s); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
