"""EfficientViT's parameter-allocation observation, reproduced (or not) on a trained toy supernet.

The paper (Liu et al., CVPR 2023, Sec. 3.3) prunes a Swin-T/DeiT-T by Taylor importance and finds that
Q and K are trimmed hard, V is kept near the input width, and the FFN is trimmed. Here: the
``efficientvit-tiny`` supernet trained on the built-in data (sandwich rule + in-place KD), a latency
table of its space measured here (onnxruntime, 1 thread), and ``prune_supernet`` (Taylor importance,
reordering, MILP) of the largest subnet at several budgets between its cheapest reallocation and itself.
Reported per budget: the share of the offered maximum each block keeps of Q/K (per head), V (per head,
of what its chunk allows) and FFN (of the largest ratio), and whether Q/K keep less than V.

    python benchmarks/evit_allocation.py [--epochs 6] [--steps 30] [--budgets 0.4 0.6 0.8] [--seed 0] [--out runs/]

The trained supernet and the table are cached under ``--out`` (a rerun skips them). Timings may come from
a shared machine (the report prints the load): read the shares as a tendency.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from slimformer._io import atomic_write_json, atomic_write_text, make_run_dir
from slimformer.latency_lut import build_table, get_table
from slimformer.pruning import prune_supernet
from slimformer.pruning._realloc import smallest_predicted_ms
from slimformer.supernet import get_space
from slimformer.train import TrainConfig, train_supernet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=30, help="updates per epoch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.4, 0.6, 0.8],
                    help="fractions of the way from the cheapest reallocation to the largest subnet")
    ap.add_argument("--taylor-batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="supernet training seed (cached per --out)")
    ap.add_argument("--out", default="runs")
    args = ap.parse_args()
    space = get_space("efficientvit-tiny")
    cache = Path(args.out) / "evit-allocation-cache"
    ckpt = cache / "train" / "best.pt"
    if not ckpt.is_file():
        train_supernet(TrainConfig(space=space.name, data="builtin", epochs=args.epochs, steps_per_epoch=args.steps,
                                   batch_size=args.batch_size, workers=0, seed=args.seed), cache / "train")
    name = "cpu-ort-efficientvit-tiny"
    try:
        table = get_table(name, lut_dir=cache / "luts")
    except Exception:  # noqa: BLE001 - not built yet
        table = build_table(name=name, space=space, lut_dir=cache / "luts", calibration=10, rounds=1, repeats=7)
    run = make_run_dir(args.out, "evit-allocation")
    cfg = space.largest()
    lo, hi = smallest_predicted_ms(cfg, space, table), table.predict(cfg)
    rows = []
    for f in args.budgets:
        budget = lo + f * (hi - lo)
        s = prune_supernet(supernet=ckpt, arch=cfg, table=table, budget_ms=budget, data="builtin",
                           batches=args.taylor_batches, batch_size=args.batch_size, eval_batches=4,
                           out=run / f"prune-{f:g}", progress=False).to_dict()
        ch = [json.loads(line) for line in _csv_rows(run / f"prune-{f:g}" / "channels.csv")]
        def mean(k, ch=ch):
            return sum(r[k] for r in ch) / len(ch)
        rows.append({"fraction": f, "budget_ms": budget, "predicted_ms": s["predicted_ms"],
                     "importance_kept": s["importance_kept"], "qk_kept": mean("qk_kept"), "v_kept": mean("v_kept"),
                     "ffn_kept": mean("ffn_kept"), "qk_below_v_blocks": sum(r["qk_kept"] < r["v_kept"] for r in ch),
                     "blocks": len(ch), "top1_largest": s["top1_source"], "top1_pruned": s["top1_pruned_no_finetune"],
                     "verdict": s["verdict"]})
        print(f"budget {budget:.3f} ms: Q/K kept {rows[-1]['qk_kept']:.0%}, V kept {rows[-1]['v_kept']:.0%}, "
              f"FFN kept {rows[-1]['ffn_kept']:.0%}; {s['verdict']}")
    atomic_write_json(run / "allocation.json", {"table": table.name, "table_hash": table.hash, "rows": rows,
                                                "largest_ms": hi, "cheapest_ms": lo})
    lines = ["# EfficientViT parameter allocation on the trained efficientvit-tiny supernet", "",
             (f"table {table.name} (measured here; 1-min load {os.getloadavg()[0]:.1f} at the end); largest "
              f"subnet {hi:.3f} ms, cheapest reallocation {lo:.3f} ms; supernet seed {args.seed}"), "",
             ("| budget ms | Q/K kept | V kept | FFN kept | blocks with Q/K < V | importance kept | top-1 largest | "
              "top-1 pruned (no fine-tune) |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['budget_ms']:.3f} | {r['qk_kept']:.0%} | {r['v_kept']:.0%} | {r['ffn_kept']:.0%} | "
                     f"{r['qk_below_v_blocks']}/{r['blocks']} | {r['importance_kept']:.1%} | "
                     f"{r['top1_largest']:.1%} | {r['top1_pruned']:.1%} |")
    lines += ["", *(f"- {r['budget_ms']:.3f} ms: {r['verdict']}" for r in rows)]
    atomic_write_text(run / "report.md", "\n".join(lines) + "\n")
    print(f"wrote {run}/report.md, allocation.json")


def _csv_rows(path: Path):
    head, *body = path.read_text().strip().splitlines()
    keys = head.split(",")
    for line in body:
        vals = line.split(",")
        yield json.dumps({k: _num(v) for k, v in zip(keys, vals)})


def _num(v: str):
    try:
        return float(v)
    except ValueError:
        return v


if __name__ == "__main__":
    main()
