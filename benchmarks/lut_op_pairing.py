"""Do the table's entries repeat, and does pairing each op with a reference op make them repeat better? (issue 17)

At 2 threads the per-kind oracle of ``lut_noise_floor.py`` stays near 66 % within ±5 %: what is left is in
the entries themselves. This script takes the ops of a few random default-space subnets (their union of
table keys), measures every op twice, in two rounds of different shuffled order, the way ``lut build`` does
(:func:`slimformer.latency_lut._measure.measure_callable`, overhead not taken off), each time both alone and
timed in alternation with each candidate reference op. It prints:

- per op, how much round 2 differs from round 1 (sd and share within ±5 %), alone and as a ratio to each
  reference;
- per subnet, how much the *sum* of its entries differs between rounds: the table-level noise that entries
  timed at different moments of a build carry into every prediction.

    python benchmarks/lut_op_pairing.py --threads 2 --batch 1 --subnets 12
    python benchmarks/lut_op_pairing.py --space efficientvit --threads 1 --batch 1 --subnets 4 --seed 11
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np

# another candidate (2 x 1: the best of the median ops of three kinds, MB4D, MB3D MLP, downsample); the table's own reference op
# (slimformer.latency_lut._fidelity.reference_op) is added in front
REFERENCES = ("mb4d-r28-c128-mlp256",)


def runners(keys, threads: int, batch: int) -> dict:
    from slimformer.latency_lut._measure import runner
    from slimformer.latency_lut._ops import build_op

    out = {}
    for k in keys:
        m, ex = build_op(k)
        out[k] = runner(m, ex, threads=threads, batch=batch)
    return out


def wholes(sp, cfgs, threads: int, batch: int) -> list[float]:
    """Each whole subnet's latency at one level: timed in alternation with the space's reference subnet
    (as ``lut validate`` times samples), its ratio times the reference's median over all of them."""
    from slimformer.latency_lut._fidelity import measure_arch, reference_config, reference_runner

    ref = reference_runner(reference_config(sp), threads=threads, batch=batch)
    rs = [measure_arch(c, threads=threads, batch=batch, reference=ref) for c in cfgs]
    level = float(np.median([r["ref_ms"] for r in rs]))
    return [r["ratio"] * level for r in rs]


def one_round(keys, fns: dict, refs: dict, order_seed: int) -> dict:
    """Per key: its median alone and its ratio to each reference (paired calls)."""
    from slimformer.latency_lut._measure import measure_callable

    order = list(keys)
    random.Random(order_seed).shuffle(order)
    out = {}
    for i, k in enumerate(order):
        row = {"alone": measure_callable(fns[k])["median_ms"]}
        for name, g in refs.items():
            for warm in (0, 1):
                r = measure_callable(fns[k], reference=g, ref_warm=warm)
                col = name + (" (warm)" if warm else "")
                row[col] = r["ratio"]
                row[col + ":ref_ms"] = r["ref_ms"]
                row[col + ":own"] = r["median_ms"]
        out[k] = row
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(order)}", flush=True)
    return out


def repeat(a: np.ndarray, b: np.ndarray) -> str:
    d = b / a
    d = d / np.median(d)
    return f"sd {100 * d.std():5.2f} %, within ±5 % {100 * np.mean(np.abs(d - 1) <= 0.05):3.0f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--subnets", type=int, default=6)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--space", default="default")
    args = ap.parse_args()

    from slimformer.latency_lut import arch_ops
    from slimformer.latency_lut._fidelity import reference_op
    from slimformer.latency_lut._runner import warmed
    from slimformer.supernet import get_space

    sp, rng = get_space(args.space), random.Random(args.seed)
    cfgs = [sp.sample(rng) for _ in range(args.subnets)]
    keys = sorted({k for c in cfgs for k in arch_ops(c)})
    t0 = time.time()
    fns = runners(keys, args.threads, args.batch)
    candidates = list(dict.fromkeys([reference_op(sp), *(REFERENCES if args.space == "default" else ())]))
    refs = {k: warmed(f) for k, f in runners(candidates, args.threads, args.batch).items()}  # references run warm
    print(f"{len(keys)} ops of {len(cfgs)} subnets, {args.threads} threads, batch {args.batch}; "
          f"sessions ready in {time.time() - t0:.0f} s", flush=True)
    whole = wholes(sp, cfgs, args.threads, args.batch)
    r1 = one_round(keys, fns, refs, 1)
    print(f"round 1 done at {time.time() - t0:.0f} s", flush=True)
    r2 = one_round(keys, fns, refs, 2)
    print(f"round 2 done at {time.time() - t0:.0f} s", flush=True)
    cols = ["alone", *(c + w for c in candidates for w in ("", " (warm)"))]
    print("\nper op, round 2 / round 1:")
    for c in cols:
        a, b = (np.array([r[k][c] for k in keys]) for r in (r1, r2))
        print(f"  {c:36s} {repeat(a, b)}")
    print("\nthe reference's median beside each op: correlation with log(op alone) (a large op before it slows it):")
    for c in cols[1:]:
        own = np.log([r1[k]["alone"] for k in keys])
        print(f"  {c:36s} {np.corrcoef([r1[k][c + ':ref_ms'] for k in keys], own)[0, 1]:+.2f}")
    print("\nper subnet, sum of its entries, round 2 / round 1 (paired: ratio x the reference's median over the round):")
    for c in cols:
        level = {id(r): (1.0 if c == "alone" else float(np.median([r[k][c + ":ref_ms"] for k in keys])))
                 for r in (r1, r2)}
        sums = [[sum(r[k][c] * level[id(r)] for k in arch_ops(cfg)) for cfg in cfgs] for r in (r1, r2)]
        print(f"  {c:36s} {repeat(np.array(sums[0]), np.array(sums[1]))}")
    print("\nper subnet, whole subnet (paired with the reference subnet) / sum of its entries, one scale taken out:")
    for c in cols:
        level = float(np.median([r1[k][c + ":ref_ms"] for k in keys])) if c != "alone" else 1.0
        sums = np.array([sum(r1[k][c] * level for k in arch_ops(cfg)) for cfg in cfgs])
        print(f"  {c:36s} {repeat(sums, np.array(whole))}")


if __name__ == "__main__":
    main()
