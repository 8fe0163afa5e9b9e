"""Which paired statistic repeats best: the ratio of two medians, or the median of the pairs' ratios? (issue 17)

A paired measurement times a subnet and the table's reference subnet call by call in alternation
(``_runner.time_paired``). This measures ``--subnets`` random subnets of a space, each again in every one of
``--rounds`` rounds (exported anew and in a new session each time, as a validation measures them), and prints
how much each statistic of the same subnet moves between rounds (sd over rounds in %, the median over subnets):

* ``own median``: the subnet's own median, unpaired;
* ``ratio of medians``: its median over the reference's median in the same calls (tables before the
  twenty-third session);
* ``median of pair ratios``: each call over the reference call beside it, then the median
  (``_runner.paired_figures`` since the twenty-third session).

    python benchmarks/paired_ratio.py --space efficientvit --threads 2 --batch 1 --subnets 20 --rounds 6

Writes ``paired_ratio.json`` (every measurement) and ``report.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

STATS = ("own median", "ratio of medians", "median of pair ratios")


def statistics_of(a: list, b: list) -> dict:
    """The three statistics of one paired measurement (``a`` the subnet's calls in ms, ``b`` the reference's); the
    last is the package's own (:func:`slimformer.latency_lut._runner.paired_figures`)."""
    from slimformer.latency_lut._runner import paired_figures

    return {"own median": statistics.median(a), "ratio of medians": statistics.median(a) / statistics.median(b),
            "median of pair ratios": paired_figures(a, b)["ratio"]}


def measure_round(cfgs: list, ref, *, threads: int, batch: int, pairs: int) -> list[dict]:
    """Each subnet exported anew, warmed up and timed ``pairs`` times beside ``ref``."""
    from slimformer.latency_lut._fidelity import _example
    from slimformer.latency_lut._measure import runner
    from slimformer.latency_lut._runner import time_paired, warmed
    from slimformer.supernet import build_model

    out = []
    for cfg in cfgs:  # as measure_arch makes a subnet's runner, warmed as a reference is
        fn = warmed(runner(build_model(cfg).eval(), (_example(cfg),), threads=threads, batch=batch))
        out.append(statistics_of(*time_paired(fn, ref, pairs)))
    return out


def sd_over_rounds(rounds: list[list[dict]], stat: str) -> list[float]:
    """Per subnet: the sd of ``stat`` over the rounds, in % of its mean."""
    v = np.array([[r[i][stat] for r in rounds] for i in range(len(rounds[0]))])
    return list(100 * v.std(axis=1) / v.mean(axis=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=15, help="timed pairs per measurement (a validation's default)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default="runs/paired-ratio")
    args = ap.parse_args(argv)

    import torch

    from slimformer._io import atomic_write_json, atomic_write_text
    from slimformer.latency_lut._fidelity import reference_config, reference_runner
    from slimformer.supernet import get_space

    torch.manual_seed(0)
    space, rng = get_space(args.space), random.Random(args.seed)
    cfgs = [space.sample(rng) for _ in range(args.subnets)]
    ref = reference_runner(reference_config(space), threads=args.threads, batch=args.batch)
    load, rounds, t0 = os.getloadavg()[0], [], time.time()
    for r in range(args.rounds):
        rounds.append(measure_round(cfgs, ref, threads=args.threads, batch=args.batch, pairs=args.pairs))
        print(f"round {r + 1}/{args.rounds} done, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    sds = {s: sd_over_rounds(rounds, s) for s in STATS}
    head = (f"{args.space} space, {args.threads} threads, batch {args.batch}: {args.subnets} subnets (seed {args.seed}), "
            f"{args.rounds} rounds of {args.pairs} pairs; load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end")
    lines = [head, "", "| statistic | sd over rounds, median over subnets | 90th percentile |", "|---|---|---|"]
    lines += [f"| {s} | {np.median(sds[s]):.2f} % | {np.percentile(sds[s], 90):.2f} % |" for s in STATS]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "paired_ratio.json", {"args": vars(args), "rounds": rounds, "sd_pct": sds})
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/paired_ratio.json and report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
