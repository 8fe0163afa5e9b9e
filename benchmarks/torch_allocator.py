"""Does glibc's malloc make eager-torch subnets' speed depend on the process's history? (issue 17)

Eager PyTorch takes every activation from ``malloc``. glibc maps blocks above its (moving) mmap threshold anew
each call, and the kernel faults their pages in, so a subnet's speed can depend on what its process freed before
(``slimformer/latency_lut/_alloc.py``). This times ``--subnets`` random subnets, each beside the space's reference
subnet as tables and validations do, in ``--processes`` fresh processes per allocator policy, the two policies
alternating: glibc's defaults (``SLIMFORMER_STEADY_MALLOC=0``) and the policy torch measurements use since the
twenty-fourth session (no mmap, no trimming). It prints, per policy, the minor page faults per call, how much a
subnet's paired ratio to the reference moves between processes (sd in %, the median over subnets) and its own
median time.

    python benchmarks/torch_allocator.py --threads 2 --batch 4 --subnets 7 --processes 4

Writes ``torch_allocator.json`` (every measurement) and ``report.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

POLICIES = {"glibc defaults": "0", "no mmap, no trim": "1"}


def child(args) -> None:
    """One process: each subnet timed ``--pairs`` times beside the reference, then its page faults per call."""
    from slimformer.latency_lut._alloc import allocator_policy
    from slimformer.latency_lut._fidelity import _example, reference_config, reference_runner
    from slimformer.latency_lut._measure import runner, time_paired_calls
    from slimformer.latency_lut._runner import paired_figures
    from slimformer.supernet import build_model, get_space

    space, rng = get_space(args.space), random.Random(args.seed)
    cfgs = [space.sample(rng) for _ in range(args.subnets)]
    ref = reference_runner(reference_config(space), threads=args.threads, batch=args.batch, backend="torch")
    out = []
    for cfg in cfgs:
        fn = runner(build_model(cfg).eval(), (_example(cfg),), backend="torch", threads=args.threads,
                    batch=args.batch)
        a, b = time_paired_calls(fn, ref, repeats=args.pairs)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            fn()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 3
        out.append({"ratio": paired_figures(a, b)["ratio"], "ms": statistics.median(a), "faults": faults})
    print(json.dumps({"policy": allocator_policy(), "subnets": out}))


def run_child(argv: list, flag: str) -> dict:
    env = {**os.environ, "SLIMFORMER_STEADY_MALLOC": flag}
    r = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    """Faults per call, the sd of each subnet's ratio over processes (% of its mean) and its own median ms."""
    ratio = np.array([[s["ratio"] for s in r["subnets"]] for r in runs])
    ms = np.array([[s["ms"] for s in r["subnets"]] for r in runs])
    sd = 100 * ratio.std(axis=0) / ratio.mean(axis=0)
    return {"faults_per_call": float(np.median([s["faults"] for r in runs for s in r["subnets"]])),
            "faults_max": float(max(s["faults"] for r in runs for s in r["subnets"])),
            "ratio_sd_pct": float(np.median(sd)), "ratio_sd_p90_pct": float(np.percentile(sd, 90)),
            "ms": list(np.median(ms, axis=0)), "policy": runs[0]["policy"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--subnets", type=int, default=7)
    ap.add_argument("--processes", type=int, default=4, help="fresh processes per policy")
    ap.add_argument("--pairs", type=int, default=15, help="timed pairs per subnet (a validation's default)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default="runs/torch-allocator")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    from slimformer._io import atomic_write_json, atomic_write_text

    same = ["--space", args.space, "--threads", str(args.threads), "--batch", str(args.batch), "--subnets",
            str(args.subnets), "--pairs", str(args.pairs), "--seed", str(args.seed)]
    runs: dict[str, list] = {p: [] for p in POLICIES}
    load, t0 = os.getloadavg()[0], time.time()
    for i in range(args.processes):
        for name, flag in POLICIES.items():  # alternating, so the machine's moods fall on both
            runs[name].append(run_child(same, flag))
        print(f"process {i + 1}/{args.processes} of each policy done, {time.time() - t0:.0f} s", file=sys.stderr,
              flush=True)
    s = {p: summary(r) for p, r in runs.items()}
    base = s["glibc defaults"]["ms"]
    lines = [(f"{args.space} space, torch, {args.threads} threads, batch {args.batch}: {args.subnets} subnets (seed "
             f"{args.seed}), each beside the reference subnet, {args.pairs} pairs, in {args.processes} fresh processes "
             f"per policy; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"), "",
             ("| malloc | page faults per call (median / most) | paired ratio's sd over processes (median / 90th pct) "
             "| own time against glibc's defaults (median) |"), "|---|---|---|---|"]
    for p, v in s.items():
        rel = np.median(np.array(v["ms"]) / np.array(base))
        lines.append(f"| {p} | {v['faults_per_call']:.0f} / {v['faults_max']:.0f} | {v['ratio_sd_pct']:.2f} % / "
                     f"{v['ratio_sd_p90_pct']:.2f} % | x{rel:.3f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "torch_allocator.json", {"args": vars(args), "runs": runs, "summary": s})
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/torch_allocator.json and report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
