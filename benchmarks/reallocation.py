"""MILP vs greedy vs uniform reallocation: importance kept, predicted and measured latency, accuracy.

A small EfficientFormer space at 64 px (MB3D in stages 3 and 4, so attention sees 16 and 4 tokens),
a supernet trained briefly on the built-in data (sandwich rule), Taylor importance over N batches,
reordering, then for each budget the three strategies; each pruned subnet is extracted, BN-recalibrated,
fine-tuned for a few steps on the built-in data and evaluated. The latency table is measured here
(onnxruntime, 1 thread) for exactly the ops the candidates need; measured latency is the extracted
model end to end (median). On a shared machine the timings are noisy: read them as such.

    python benchmarks/reallocation.py [--train-steps 300] [--finetune-steps 100] [--budgets 0.3 0.6]
    python benchmarks/reallocation.py --vit-steps 400      # DeiT-tiny trained here, Taylor-pruned (no hub)

The trained supernet is cached (``--supernet-cache``) so a rerun skips training. Importance kept is
printed for a sweep of budgets (cheap); fine-tuning and end-to-end timing run for ``--budgets``. Every
fine-tune sees the same batches in the same order; the nets are timed in interleaved rounds.
"""
from __future__ import annotations

import argparse
import itertools
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from slimformer.data import BuiltinShapes, evaluate
from slimformer.latency_lut import LatencyTable, arch_ops, build_op, measure_module, measure_overhead
from slimformer.pruning import (
    allocate,
    block_options,
    build_problem,
    expand,
    reorder_by_importance,
    taylor_importance,
)
from slimformer.supernet import ArchConfig, SearchSpace, StageConfig, Supernet, mb3d, mb4d, recalibrate_bn

SPACE = SearchSpace(stage_widths=((16, 32), (32, 48), (48, 64, 80), (64, 96, 128)), depths=(2, 2, 3, 3),
                    stem_widths=(8, 16), mb3d_stages=(2, 3), mlp_ratios=(1.0, 2.0, 3.0, 4.0), heads=(1, 2, 4),
                    qk_dims=(8, 16, 32), v_dims=(8, 16, 32), img_size=64, num_classes=10, distillation=True,
                    name="bench64")
# the "searched" stage-level config: widths, positions and kinds are kept; block dims are reallocated
SEARCHED = ArchConfig(stem_width=16, stages=(
    StageConfig(32, (mb4d(4.0), mb4d(4.0))), StageConfig(48, (mb4d(4.0), mb4d(4.0))),
    StageConfig(80, (mb4d(4.0), mb3d(4, 32, 32, 4.0))), StageConfig(128, (mb3d(4, 32, 32, 4.0),) * 3)),
    img_size=64, num_classes=10, distillation=True, name="searched")


def loaders(batch: int, n_train: int, n_val: int, seed: int = 0):
    tr = BuiltinShapes(img_size=SPACE.img_size, length=n_train, split="train")
    va = BuiltinShapes(img_size=SPACE.img_size, length=n_val, split="val")
    return (DataLoader(tr, batch_size=batch, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(va, batch_size=256))


def cycle(loader):
    while True:
        yield from loader


def opt_for(model, lr, steps):
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=0.05)
    sched, _ = create_scheduler_v2(opt, "cosine", num_epochs=steps, warmup_epochs=min(20, steps // 10),
                                   warmup_lr=lr * 0.01)
    return opt, sched


def train_plain(model, train, lr: float, steps: int, label: str | None = None) -> None:
    """``steps`` AdamW + cosine steps of cross-entropy on ``train`` (cycled); logs every 100 steps if ``label``."""
    opt, sched = opt_for(model, lr, steps)
    model.train()
    it = cycle(train)
    t0 = time.time()
    for step in range(steps):
        x, y = next(it)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step(step + 1)
        if label and (step + 1) % 100 == 0:
            print(f"  {label} step {step + 1}/{steps} ({time.time() - t0:.0f} s)", flush=True)


def train_supernet(sn: Supernet, train, steps: int, seed: int = 0) -> None:
    """Sandwich rule: largest + smallest-by-sampling + 2 random subnets per step, summed losses."""
    rng = random.Random(seed)
    opt, sched = opt_for(sn, 2e-3, steps)
    sn.train()
    it = cycle(train)
    t0 = time.time()
    for step in range(steps):
        x, y = next(it)
        opt.zero_grad()
        for cfg in [expand(SEARCHED, SPACE), SPACE.largest(), SPACE.sample(rng), SPACE.sample(rng)]:
            sn.set_active(cfg)
            F.cross_entropy(sn(x), y).backward()
        opt.step()
        sched.step(step + 1)
        if (step + 1) % 50 == 0:
            print(f"  supernet step {step + 1}/{steps} ({time.time() - t0:.0f} s)", flush=True)


def finetune(net, batch: int, steps: int, seed: int) -> None:
    if steps <= 0:
        return
    train, _ = loaders(batch, 4096, 0, seed)  # same batches, same order for every candidate
    torch.manual_seed(seed)
    train_plain(net, train, 5e-4, steps)
    net.eval()


def measured_table(cfg: ArchConfig, repeats: int) -> LatencyTable:
    """onnxruntime, 1 thread: every op any reallocation of ``cfg`` can use."""
    keys = set()
    per_block = [(si, pos, block_options(SPACE, b.kind)) for si, pos, b in cfg.iter_blocks() if b.kind != "skip"]
    for si, pos, opts in per_block:  # one option varies at a time: with the others fixed, every op key appears
        for o in opts:
            keys.update(arch_ops(cfg.with_block(si, pos, o)))
    overhead = measure_overhead(backend="onnxruntime", threads=1)["median_ms"]
    entries = {}
    t0 = time.time()
    for i, k in enumerate(sorted(keys)):
        m, ex = build_op(k)
        r = measure_module(m.eval(), ex, backend="onnxruntime", threads=1, repeats=repeats)
        entries[k] = {"median_ms": max(r["median_ms"] - overhead, 0.0), "spread_ms": r["spread_ms"],
                      "count": r["count"]}
    print(f"  measured {len(entries)} ops in {time.time() - t0:.0f} s (overhead {overhead:.4f} ms)")
    return LatencyTable.from_entries(entries, name="bench64-cpu-ort", kind="measured", device="cpu-ort",
                                     backend="onnxruntime", space=SPACE, overhead_ms=overhead, threads=1)


def measure_nets(nets: list, repeats: int, rounds: int = 3) -> list[float]:
    """Median over ``rounds`` interleaved rounds (net 1, net 2, ..., net 1, ...) of each net's median."""
    x = torch.randn(1, 3, SPACE.img_size, SPACE.img_size)
    times = [[] for _ in nets]
    for _ in range(rounds):
        for i, net in enumerate(nets):
            times[i].append(measure_module(net.eval(), (x,), backend="onnxruntime", threads=1,
                                           repeats=repeats)["median_ms"])
    return [float(np.median(t)) for t in times]


def trained_supernet(args, train) -> Supernet:
    from pathlib import Path

    from slimformer.supernet import load_supernet, save_supernet

    path = Path(args.supernet_cache)
    if path.is_file():
        ck = load_supernet(path)
        if ck.space.hash == SPACE.hash and ck.meta.get("train_steps") == args.train_steps:
            print(f"supernet from cache {path}")
            return ck.model
    sn = Supernet(SPACE)
    t0 = time.time()
    train_supernet(sn, train, args.train_steps, args.seed)
    print(f"supernet trained {args.train_steps} steps in {time.time() - t0:.0f} s")
    save_supernet(path, sn, meta={"train_steps": args.train_steps, "bench": "reallocation"})
    return sn


def vit_section(args) -> None:
    """DeiT-tiny (timm, random init, 32 px, patch 4) trained on the built-in data, then the same Taylor
    analysis and MILP reallocation at half its parameters, with the EfficientViT-style channel table."""
    import copy

    from slimformer.pruning._report import pattern_verdict
    from slimformer.pruning.vit import create_vit, prune_vit, vit_allocate, vit_importance, vit_rows

    torch.manual_seed(args.seed)
    tr = BuiltinShapes(img_size=32, length=8192, split="train")
    va = BuiltinShapes(img_size=32, length=2048, split="val")
    train = DataLoader(tr, batch_size=args.batch, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(args.seed))
    val = DataLoader(va, batch_size=256)
    kw = {"depth": args.vit_depth} if args.vit_depth else {}
    vit = create_vit("timm:deit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10, **kw)
    train_plain(vit, train, args.vit_lr, args.vit_steps, label="deit")
    acc = evaluate(vit, val)
    imp = vit_importance(vit, itertools.islice(train, args.taylor_batches))
    print(f"\nDeiT-tiny (32 px, patch 4, 65 tokens, depth {len(vit.blocks)}) trained {args.vit_steps} steps "
          f"(lr {args.vit_lr:g}): top-1 {acc:.3f}")
    for frac in (0.5,):
        choices, info = vit_allocate(vit, imp, budget_params=frac)
        rows = vit_rows(vit, choices)
        pruned = prune_vit(copy.deepcopy(vit), imp, choices)
        acc0 = evaluate(pruned, val)
        ft = copy.deepcopy(pruned)
        train_plain(ft, train, 2e-4, args.finetune_steps)
        acc1 = evaluate(ft, val)
        print(f"pruned to {frac:.0%} params ({info['params_before']:,} -> {info['params_after']:,}), importance kept "
              f"{info['importance_kept']:.1%}: top-1 {acc0:.3f} before, {acc1:.3f} after {args.finetune_steps} FT steps")
        print("| block | heads | Q=K | V | FFN | Q/C | V/C | FFN/C |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['block']} | {r['heads']} | {r['Q']} | {r['V']} | {r['FFN']} | {r['Q/C']:.2f} | "
                  f"{r['V/C']:.2f} | {r['FFN/C']:.2f} |")
        print(pattern_verdict(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--taylor-batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--supernet-cache", default="runs/bench-reallocation/supernet.pt")
    ap.add_argument("--sweep", type=int, default=9, help="budgets in the importance-kept sweep")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.6],
                    help="budgets as fractions of the way from the smallest to the largest reallocation")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vit-steps", type=int, default=0, help="instead: train DeiT-tiny this long and Taylor-prune it")
    ap.add_argument("--vit-depth", type=int, default=0, help="fewer DeiT-tiny blocks (0: all 12)")
    ap.add_argument("--vit-lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.vit_steps:
        vit_section(args)
        return
    torch.manual_seed(args.seed)
    train, val = loaders(args.batch, 4096, 2048)
    print(f"space {SPACE.name}: {SPACE.img_size} px, searched {SEARCHED.summary()}")
    sn = trained_supernet(args, train)
    analysed = expand(SEARCHED, SPACE)
    sn.set_active(analysed)
    recalibrate_bn(sn, train, max_batches=8)
    print(f"analysed subnet (every block at its largest): top-1 {evaluate(sn, val):.3f}")
    imp = taylor_importance(sn, itertools.islice(train, args.taylor_batches), cfg=analysed)
    imp = reorder_by_importance(sn, imp)
    table = measured_table(SEARCHED, max(10, args.repeats // 2))
    prob = build_problem(SEARCHED, SPACE, table, imp)
    lo = table.predict(prob.build([int(np.argmin(c)) for c in prob.costs]))
    hi = table.predict(prob.build([int(np.argmax(c)) for c in prob.costs]))
    print(f"table: smallest reallocation {lo:.3f} ms, largest {hi:.3f} ms (predicted)")
    print("\nimportance kept (fraction of the analysed subnet's Taylor importance) over a budget sweep:")
    print("| budget (frac) | budget ms | milp | greedy | uniform |\n|---|---|---|---|---|")
    for frac in np.linspace(0.05, 0.95, args.sweep):
        budget = lo + frac * (hi - lo)
        kept = []
        for strategy in ("milp", "greedy", "uniform"):
            try:
                a = allocate(prob, table, budget, strategy=strategy, space=SPACE)
                kept.append(f"{a.kept:.2%} ({a.predicted_ms:.3f} ms)")
            except Exception as e:  # noqa: BLE001 - a baseline that cannot fit is a result, not a crash
                kept.append(f"infeasible ({type(e).__name__})")
        print(f"| {frac:.2f} | {budget:.3f} | " + " | ".join(kept) + " |", flush=True)

    rows, nets = [], []
    for frac in args.budgets:
        budget = lo + frac * (hi - lo)
        for strategy in ("milp", "greedy", "uniform"):
            a = allocate(prob, table, budget, strategy=strategy, space=SPACE)
            net = sn.extract_subnet(a.cfg)
            recalibrate_bn(net, train, max_batches=8)
            acc0 = evaluate(net, val)
            finetune(net, args.batch, args.finetune_steps, args.seed)
            acc1 = evaluate(net, val)
            blocks = " ".join(f"h{b.heads}q{b.qk_dim}v{b.v_dim}r{b.mlp_ratio:g}" if b.kind == "mb3d"
                              else f"r{b.mlp_ratio:g}" for _, _, b in a.cfg.iter_blocks())
            rows.append([f"{budget:.3f}", strategy, f"{a.kept:.1%}", f"{a.predicted_ms:.3f}", "",
                         f"{acc0:.3f}", f"{acc1:.3f}", blocks])
            nets.append(net)
            print("  " + " | ".join(rows[-1]), flush=True)
    for r, ms in zip(rows, measure_nets(nets, args.repeats)):
        r[4] = f"{ms:.3f}"
    n_val = len(val.dataset)
    head = ("budget ms", "strategy", "importance kept", "predicted ms", "measured ms", "top1 pre-FT",
            f"top1 after {args.finetune_steps} FT steps", "blocks")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n(torch {torch.__version__}, onnxruntime 1 thread, median of 3 interleaved rounds of {args.repeats} "
          f"runs; 2 CPU cores shared with other jobs, so latencies are noisy; top-1 on {n_val} built-in val "
          f"images, binomial std ~{100 * (0.25 / n_val) ** 0.5:.1f} points)")

if __name__ == "__main__":
    main()
