"""Which reference takes the machine's drift out of a whole-subnet timing? (issue 17: paired timing)

Random default-space subnets are timed over several rounds, each call followed by one call of every
candidate reference (a fixed whole subnet, the space's smallest subnet, a 3x3 convolution at 56 px, an MLP
on 196 tokens). Per subnet it prints how much its median moves from round to round (sd over rounds,
relative to its median) on its own and divided by each reference's median from the same calls. A ratio
that moves less than the median itself is a reference that shares the machine's speed of the moment;
``lut build`` and ``lut validate`` pair whole subnets with a whole subnet of the space
(``slimformer.latency_lut._fidelity.reference_config``) because that is the reference that does.

    python benchmarks/lut_pairing.py --threads 1 --batch 1 --rounds 10
    python benchmarks/lut_pairing.py --threads 2 --batch 4 --rounds 8
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import numpy as np


def candidates(threads: int, batch: int) -> dict:
    """The references, as no-argument callables run with the table's backend (onnxruntime) and settings."""
    import torch
    from torch import nn

    from slimformer.latency_lut._fidelity import reference_config
    from slimformer.latency_lut._measure import runner
    from slimformer.supernet import build_model, get_space

    sp = get_space("default")
    x = torch.randn(1, 3, 224, 224)
    mods = {"subnet": (build_model(reference_config(sp)), x), "smallest": (build_model(sp.smallest()), x),
            "conv56": (nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.GELU()), torch.randn(1, 64, 56, 56)),
            "mlp196": (nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)), torch.randn(1, 196, 256))}
    return {k: runner(m.eval(), (ex,), threads=threads, batch=batch) for k, (m, ex) in mods.items()}


def subnets(n: int, seed: int, threads: int, batch: int) -> list:
    import torch

    from slimformer.latency_lut._measure import runner
    from slimformer.supernet import build_model, get_space

    rng, sp, x = random.Random(seed), get_space("default"), torch.randn(1, 3, 224, 224)
    return [runner(build_model(sp.sample(rng)).eval(), (x,), threads=threads, batch=batch) for _ in range(n)]


def one_call(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rounds(nets: list, refs: dict, n_rounds: int, calls: int) -> tuple[list, dict]:
    """Per subnet, its median of every round, and its ratio to each reference's median in the same calls."""
    own = [[] for _ in nets]
    ratio = {k: [[] for _ in nets] for k in refs}
    t0 = time.time()
    for r in range(n_rounds):
        for i, fn in enumerate(nets):
            ts, tr = [], {k: [] for k in refs}
            for _ in range(calls):
                ts.append(one_call(fn))
                for k, g in refs.items():
                    tr[k].append(one_call(g))
            own[i].append(statistics.median(ts))
            for k in refs:
                ratio[k][i].append(statistics.median(ts) / statistics.median(tr[k]))
        print(f"round {r + 1}/{n_rounds} done at {time.time() - t0:.0f} s", flush=True)
    return own, ratio


def sd_pct(v) -> float:
    v = np.asarray(v)
    return float(100 * np.std(v / np.median(v)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--subnets", type=int, default=6)
    ap.add_argument("--calls", type=int, default=15, help="calls of each subnet per round")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    refs, nets = candidates(args.threads, args.batch), subnets(args.subnets, args.seed, args.threads, args.batch)
    for fn in [*refs.values(), *nets]:
        for _ in range(3):
            fn()
    ms = {k: 1000 * statistics.median(one_call(f) for _ in range(7)) for k, f in refs.items()}
    print(f"{args.threads} thread(s), batch {args.batch}, {args.subnets} subnets (seed {args.seed}), "
          f"load {os.getloadavg()[0]:.1f}; references: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()))
    own, ratio = rounds(nets, refs, args.rounds, args.calls)
    print("sd of a subnet's figure over rounds (median over subnets [min-max]):")
    for name, series in [("own median", own)] + [(f"ratio to {k}", v) for k, v in ratio.items()]:
        s = [sd_pct(v) for v in series]
        print(f"  {name:<18} {np.median(s):5.2f} %  [{min(s):.2f}-{max(s):.2f}]")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
