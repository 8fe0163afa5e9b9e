"""EfficientFormer MetaBlock space vs EfficientViT space at equal ``cpu-ort`` budgets, plus the timm presets.

Both toy spaces at 64 px and 10 classes (``tiny`` re-sized to 64 px, ``efficientvit-tiny``): each supernet
is trained here on the built-in data (or an ImageFolder, ``--data``) with the same recipe (sandwich rule + in-place KD), each space gets
a latency table measured here (onnxruntime, 1 thread), and at 5 budgets spread over the latency range the
two spaces share, an accuracy-driven search (optuna TPE, inherited weights) picks each space's subnet.
Every answer is measured end to end (onnxruntime, 1 thread, median) and evaluated on the held-out split
with its own BN statistics. EfficientFormer-L1 and EfficientViT-M0 (at 64 px, 10 classes) are trained from
scratch for ``--preset-steps`` on the same data and drawn as points. One Pareto PNG, a JSON and a report.

    python benchmarks/space_vs_space.py [--epochs 4] [--steps 25] [--trials 12] [--preset-steps 150] [--out runs/]
        [--data builtin|IMAGEFOLDER]   (e.g. data/photo10 from scripts/photo_patches_imagefolder.py)

Supernets and tables are cached under ``--out``. The machine is shared: latencies are noisy, toy accuracy
after minutes of CPU training says little about ImageNet; read the figure as a smoke test of the pipeline.
"""
from __future__ import annotations

import argparse
import itertools
import os
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from slimformer._io import atomic_write_bytes, atomic_write_json, atomic_write_text, figure_png, make_run_dir
from slimformer.data import build_loaders, evaluate
from slimformer.latency_lut import build_table, get_table, measure_arch
from slimformer.search import search
from slimformer.supernet import SearchSpace, build_model, get_arch, get_space, recalibrate_bn
from slimformer.train import TrainConfig, train_supernet

IMG = 64
SEARCH_BATCHES, HELD_OUT_BATCHES = 2, 8  # validation batches the search selects on; the next ones report top-1


def spaces(cache: Path) -> dict[str, Path]:
    """Space name -> space JSON file (the trainer takes a file for a space that is not shipped)."""
    ef = SearchSpace.from_dict({**get_space("tiny").to_dict(), "img_size": IMG, "name": "tiny64"})
    out = {}
    for sp in (ef, get_space("efficientvit-tiny")):
        p = cache / f"{sp.name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, sp.to_dict())
        out[sp.name] = p
    return out


def prepare(name: str, path: Path, cache: Path, args):
    ckpt = cache / f"train-{name}" / "best.pt"
    if not ckpt.is_file():
        train_supernet(TrainConfig(space=str(path), data=args.data, epochs=args.epochs, steps_per_epoch=args.steps,
                                   batch_size=32, workers=0), cache / f"train-{name}")
    table_name = f"cpu-ort-{name}"
    try:
        table = get_table(table_name, lut_dir=cache / "luts")
    except Exception:  # noqa: BLE001 - not built yet
        table = build_table(name=table_name, space=get_space(path), lut_dir=cache / "luts", calibration=10,
                            rounds=1, repeats=7)
    return ckpt, table


def held_out(model, loaders, recal: bool = True) -> float:
    """Top-1 on the validation batches after those the search selected on (disjoint since the twelfth session),
    after BN recalibration on 8 training batches: searched subnets and presets alike (before the twelfth
    session searched subnets kept the search's 2-batch statistics, which on photo10 cost them half their top-1)."""
    if recal:
        recalibrate_bn(model, itertools.islice(iter(loaders.train), 8))
    batches = itertools.islice(iter(loaders.val), SEARCH_BATCHES, SEARCH_BATCHES + HELD_OUT_BATCHES)
    return float(evaluate(model.eval(), batches))


def train_preset(cfg, loaders, steps: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    it = itertools.cycle(loaders.train)
    for _ in range(steps):
        x, y = next(it)
        opt.zero_grad()
        out = model(x)
        out = (out[0] + out[1]) / 2 if isinstance(out, tuple) else out
        F.cross_entropy(out, y).backward()
        opt.step()
        sched.step()
    return model.eval()


def pareto_png(points: list[dict], data: str = "builtin") -> bytes:

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for group, style in (("tiny64", "o-"), ("efficientvit-tiny", "s-")):
        pts = sorted((p for p in points if p["group"] == group), key=lambda p: p["measured_ms"])
        ax.plot([p["measured_ms"] for p in pts], [100 * p["top1"] for p in pts], style, label=f"searched, {group}")
    for p in points:
        if p["group"] == "preset":
            ax.plot(p["measured_ms"], 100 * p["top1"], "k*", ms=10)
            ax.annotate(p["name"], (p["measured_ms"], 100 * p["top1"]), fontsize=8)
    ax.set_xlabel("measured latency, ms (onnxruntime, 1 thread)")
    ax.set_ylabel(f"held-out top-1 %, {'built-in data' if data == 'builtin' else Path(data).name} 64 px")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--preset-steps", type=int, default=150)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--data", default="builtin", help="'builtin' or an ImageFolder root with train/ and val/ (10 classes)")
    args = ap.parse_args()
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    cache = Path(args.out) / "space-vs-space-cache"
    prepared = {name: prepare(name, p, cache, args) for name, p in spaces(cache).items()}
    ranges = {n: (t.predict(t.space.smallest()), t.predict(t.space.largest())) for n, (_, t) in prepared.items()}
    lo, hi = max(r[0] for r in ranges.values()), min(r[1] for r in ranges.values())
    shared = lo < hi
    loaders = build_loaders(args.data, img_size=IMG, batch_size=32, seed=1)
    run = make_run_dir(args.out, "space-vs-space")
    points = []
    for name, (ckpt, table) in prepared.items():
        a, b = (lo, hi) if shared else ranges[name]
        for i in range(5):
            budget = a + (b - a) * (0.1 + 0.8 * i / 4)
            r = search(budget_ms=budget, table=table, supernet=ckpt, strategy="optuna", trials=args.trials,
                       batch_size=32, recal_batches=2, val_batches=SEARCH_BATCHES)
            net = build_model(r.arch)
            net.load_state_dict(r.subnet_state)
            points.append({"group": name, "name": r.arch.summary(), "budget_ms": budget, "predicted_ms": r.predicted_ms,
                           "measured_ms": measure_arch(r.arch)["median_ms"], "top1": held_out(net, loaders),
                           "params": sum(p.numel() for p in net.parameters())})
            print(f"{name} @ {budget:.3f} ms: {points[-1]}", flush=True)
    for preset in ("l1", "m0"):
        cfg = replace(get_arch(preset), img_size=IMG, num_classes=10)
        net = train_preset(cfg, loaders, args.preset_steps)
        points.append({"group": "preset", "name": cfg.name, "budget_ms": None, "predicted_ms": None,
                       "measured_ms": measure_arch(cfg)["median_ms"], "top1": held_out(net, loaders),
                       "params": sum(p.numel() for p in net.parameters())})
        print(f"preset {cfg.name}: {points[-1]}", flush=True)
    atomic_write_json(run / "results.json", {"points": points, "shared_range_ms": [lo, hi] if shared else None,
                                             "ranges_ms": ranges, "args": vars(args), "load_at_start": load})
    atomic_write_bytes(run / "pareto.png", pareto_png(points, args.data))
    lines = [f"# Space vs space at equal cpu-ort budgets (64 px, {args.data} data; 1-min load {load:.1f} at the start)",
             "", ("| space | budget ms | predicted ms | measured ms | measured / predicted | held-out top-1 | "
                  "params M | subnet |"), "|---|---|---|---|---|---|---|---|"]
    for p in points:
        bud = "-" if p["budget_ms"] is None else f"{p['budget_ms']:.3f}"
        pred, ratio = ("-", "-") if p["predicted_ms"] is None else (
            f"{p['predicted_ms']:.3f}", f"{p['measured_ms'] / p['predicted_ms']:.2f}")
        lines.append(f"| {p['group']} | {bud} | {pred} | {p['measured_ms']:.3f} | {ratio} | {p['top1']:.1%} | "
                     f"{p['params'] / 1e6:.2f} | {p['name']} |")
    atomic_write_text(run / "report.md", "\n".join(lines) + "\n\n![pareto](pareto.png)\n")
    print(f"wrote {run}/report.md, results.json, pareto.png")


if __name__ == "__main__":
    main()
