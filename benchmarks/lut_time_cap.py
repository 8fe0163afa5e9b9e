"""Does the timing cap cost precision? The same subnets timed in alternation with and without it.

``lut build`` and ``lut validate`` cap each measurement at about ``--max-time-s`` of timed calls (default 1 s):
a whole subnet at batch 16 takes 0.1-2 s a call here, so it gets 5 timed calls after 2 warm-ups instead of
15 after 3. This script asks what that costs. For ``--subnets`` random default-space subnets (one session
each, exported once) it takes two capped and two uncapped measurements, interleaved (each rule first half the time) so
that the machine's drift falls on both rules alike, and prints for each rule:

- seconds per measurement (warm-up + timed calls + retries), the cost the cap saves;
- how well it repeats: the sd of measurement 2 / measurement 1 of the same subnet, and the share of
  subnets whose two agree within ±5 % (the matrix's *repeat* column, for this rule alone);
- and, across rules, the median of capped / uncapped medians (a bias would show here).

    python benchmarks/lut_time_cap.py --threads 2 --batch 16 --subnets 20
    python benchmarks/lut_time_cap.py --threads 1 --batch 4 --subnets 20 --seed 11
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time


def _session_fn(cfg, threads: int, batch: int, backend: str):
    import torch

    from slimformer.latency_lut._measure import runner
    from slimformer.supernet import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, cfg.in_chans, cfg.img_size, cfg.img_size), generator=g)
    return runner(build_model(cfg).eval(), (x,), backend=backend, threads=threads, batch=batch)


def _timed(fn, max_time_s: float | None) -> tuple[float, float]:
    """(median ms, seconds the measurement took) with the build's settings and this cap."""
    from slimformer.latency_lut._measure import measure_callable

    t0 = time.perf_counter()
    r = measure_callable(fn, warmup=3, repeats=15, min_time_s=0.02, noise=0.1, retries=2, max_time_s=max_time_s)
    return r["median_ms"], time.perf_counter() - t0


def _pairs(a: list[float], b: list[float]) -> tuple[float, float]:
    """sd of b/a and the share of |b/a - 1| <= 5 %."""
    ratios = [y / x for x, y in zip(a, b)]
    return statistics.stdev(ratios), sum(abs(r - 1) <= 0.05 for r in ratios) / len(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    ap.add_argument("--subnets", type=int, default=20)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--max-time-s", type=float, default=1.0)
    args = ap.parse_args()
    if args.subnets < 2 or args.threads < 1 or args.batch < 1 or not args.max_time_s > 0:
        raise SystemExit("--subnets >= 2, --threads >= 1, --batch >= 1 and --max-time-s > 0, please")
    from slimformer.supernet import get_space

    space, rng = get_space("default"), random.Random(args.seed)
    res = {"cap": ([], [], []), "none": ([], [], [])}  # first medians, second medians, seconds
    print(f"{args.subnets} subnets, {args.threads} thread(s), batch {args.batch}, {args.backend}; cap "
          f"{args.max_time_s:g} s; load {os.getloadavg()[0]:.1f}", flush=True)
    for i in range(args.subnets):
        fn = _session_fn(space.sample(rng), args.threads, args.batch, args.backend)
        rules = [("cap", args.max_time_s), ("none", None)]
        for k in range(2):
            for rule, cap in rules if (i + k) % 2 == 0 else rules[::-1]:  # each rule goes first half the time
                med, sec = _timed(fn, cap)
                res[rule][k].append(med)
                res[rule][2].append(sec)
        print(f"  subnet {i + 1}/{args.subnets}: {res['none'][0][-1]:.1f} ms a call", flush=True)
    for rule, (a, b, sec) in res.items():
        sd, w5 = _pairs(a, b)
        print(f"{rule:>4}: {statistics.median(sec):.2f} s per measurement (median; total {sum(sec):.0f} s); repeat "
              f"sd {100 * sd:.1f} %, {100 * w5:.0f} % within ±5 %")
    bias = [min(c1, c2) / min(n1, n2) for c1, c2, n1, n2 in zip(res["cap"][0], res["cap"][1], res["none"][0],
                                                                   res["none"][1])]
    print(f"capped / uncapped (the faster of 2 each, as validation keeps): median {statistics.median(bias):.3f}, "
          f"range {min(bias):.3f}-{max(bias):.3f}; load now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
