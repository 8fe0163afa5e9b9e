"""Search quality: is the searched subnet better than random search and than uniform width scaling?

A small supernet (tiny space, 32 px) trained briefly on the built-in data (or ``--supernet``), a
latency table measured here with onnxruntime (``cpu-ort-tiny32``, built once). For 5 budgets spread
over the space's latency range it compares, on held-out images, the top-1 of

* ``slim``      -- latency-driven slimming with evaluated actions (the default strategy with alpha);
* ``fast``      -- slimming ranked by alpha alone;
* ``optuna``    -- TPE with the budget as a constraint (``--trials``);
* ``random``    -- the best of 100 random feasible subnets (chosen on the search split, like the searches);
* ``uniform``   -- the largest subnet with every width scaled down uniformly until it fits.

All candidates use inherited weights with BatchNorm recalibrated on the same training batches. Searches
and the random baseline select on a *search split* of the validation images; the table reports a
disjoint *held-out split*, so no method is scored on the images it selected with. Toy data, tiny
supernet: the figures show whether the search machinery beats the baselines, not ImageNet accuracy.

    python benchmarks/search_quality.py [--supernet PATH] [--trials 40] [--epochs 6]
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_speed import builtin_loaders, cpu_table, trained_tiny_supernet


def uniform_width(space, table, budget):
    """Largest subnet at full depth with widths scaled by one common factor; None if even the narrowest misses."""
    from dataclasses import replace

    big = space.largest()
    for step in range(100, 0, -1):
        f = step / 100
        cfg = big
        for si, ws in enumerate(space.stage_widths):
            fit = [w for w in ws if w <= f * ws[-1]] or [ws[0]]
            cfg = cfg.with_width(si, fit[-1])
        stems = [w for w in space.stem_widths if w <= f * space.stem_widths[-1]] or [space.stem_widths[0]]
        cfg = replace(cfg, stem_width=stems[-1])
        if table.predict(cfg) <= budget:
            return cfg
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernet", default=None)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--random", type=int, default=100, help="random feasible subnets per budget")
    ap.add_argument("--search-batches", type=int, default=4, help="validation batches the searches select on")
    ap.add_argument("--heldout-batches", type=int, default=12, help="validation batches for the reported top-1")
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--fractions", default="0.15,0.3,0.5,0.7,0.85")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from slimformer.search import SupernetAccuracy, search
    from slimformer.supernet import load_supernet

    work = Path(tempfile.mkdtemp(prefix="search_quality-"))
    path = args.supernet
    if path is None:
        t0 = time.perf_counter()
        path = trained_tiny_supernet(work / "train", epochs=args.epochs)
        print(f"trained a tiny supernet in {time.perf_counter() - t0:.0f} s: {path}")
    ck = load_supernet(path)
    sp = ck.space
    table = cpu_table(sp, args.lut_dir)
    bs = 64
    loaders = builtin_loaders(sp.img_size, bs, bs * 4, bs * (args.search_batches + args.heldout_batches))
    recal = list(itertools.islice(iter(loaders.train), 4))
    val = list(loaders.val)
    search_val, heldout = val[:args.search_batches], val[args.search_batches:]
    fake = types.SimpleNamespace(train=recal, val=search_val, num_classes=loaders.num_classes)
    sel = SupernetAccuracy(ck.model, recal, search_val)
    test = SupernetAccuracy(ck.model, recal, heldout)
    lo, hi = table.predict(sp.smallest()), table.predict(sp.largest())
    print(f"space {sp.name} on {table.name}: {lo:.3f} .. {hi:.3f} ms; supernet alpha: {bool(ck.arch_logits)}; "
          f"search split {len(search_val) * bs} images, held-out {len(heldout) * bs} images")
    pool = [sp.sample(random.Random(i)) for i in range(5000)]
    rows = []
    for f in (float(x) for x in args.fractions.split(",")):
        budget = round(lo + f * (hi - lo), 4)
        res = {}
        kw = {"budget_ms": budget, "table": table, "supernet": ck, "loaders": fake,
              "val_batches": args.search_batches}
        t0 = time.perf_counter()
        res["slim"] = search(strategy="slim", **kw).arch
        t_slim = time.perf_counter() - t0
        if ck.arch_logits:
            res["fast"] = search(strategy="slim", fast=True, **kw).arch
        res["optuna"] = search(strategy="optuna", trials=args.trials, **kw).arch
        feas = [c for c in pool if table.predict(c) <= budget][:args.random]
        res["random"] = max(feas, key=lambda c: (sel(c), table.predict(c))) if feas else None
        res["uniform"] = uniform_width(sp, table, budget)
        accs = {k: (None if c is None else test(c)) for k, c in res.items()}
        rows.append((budget, accs, len(feas)))
        line = "  ".join(f"{k} {'-' if a is None else f'{100 * a:5.1f}%'}" for k, a in accs.items())
        print(f"budget {budget:.4f} ms ({len(feas)} random feasible, slim {t_slim:.0f} s): {line}", flush=True)
    print("\nheld-out top-1 (%) per budget:")
    keys = list(rows[0][1])
    print("budget_ms  " + "  ".join(f"{k:>7}" for k in keys))
    for budget, accs, _ in rows:
        print(f"{budget:9.4f}  " + "  ".join(f"{'-' if accs[k] is None else f'{100 * accs[k]:.1f}':>7}" for k in keys))
    for k in ("slim", "optuna"):
        wins = sum(1 for _, a, _ in rows if all(a[k] >= (a[b] if a[b] is not None else -1)
                                                for b in ("random", "uniform")))
        print(f"{k}: >= random and >= uniform at {wins}/{len(rows)} budgets")


if __name__ == "__main__":
    main()
