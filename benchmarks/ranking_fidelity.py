"""Ranking fidelity: does the supernet order subnets the way stand-alone training would?

"Train once, rank many" holds only if inherited-weight accuracy orders subnets like training each one
alone. This script

1. picks ``--subnets`` subnets of a small space spread evenly over its latency range on the measured
   ``cpu-ort-<space><px>`` table (the smallest and the largest included);
2. trains each one **stand-alone from scratch** with the supernet's recipe (the same ``TrainConfig``:
   optimiser, cosine schedule, warm-up, label smoothing, batch size, number of updates; labels only,
   since there is no teacher), results cached per subnet in the run directory;
3. trains a supernet on the same data for the same number of updates (``train_supernet``, the product's
   trainer, resumable) and scores every subnet with inherited weights after BatchNorm recalibration;
4. prints Kendall tau and Spearman rho with percentile-bootstrap 95 % intervals (resampling subnets),
   and writes ``scatter-<tag>.png``, ``results-<tag>.json`` and ``report.md`` into the run directory.

Rerunning with the same ``--out`` reuses the stand-alone results and any finished supernet, so a
supernet-training variant (``--tag`` plus the recipe options below) costs one supernet training only.
Stand-alone accuracies are one training seed each unless ``--standalone-seeds K`` trains every subnet with K
seeds and ranks by the mean; then the script also prints the stand-alone ranking's own consistency (tau
between two seeds), the ceiling any ranker can reach against a single seed, and a simulated ceiling
against the K-seed mean (a perfect ranker scored against a reference with the measured seed noise).
Stand-alone runs can be split over processes: ``--shard 0/2`` and ``--shard 1/2`` at once, same ``--out``.

    python benchmarks/ranking_fidelity.py --out runs/ranking-builtin [--data builtin|IMAGEFOLDER]
        [--epochs 8 --steps-per-epoch 75] [--subnets 12] [--tag base] [--num-random 2] [--kd-weight 0.5]
        [--standalone-seeds 3] [--supernet-epochs 32]

Goal: tau >= 0.7.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


# ----------------------------------------------------------------- data


def fixed_batches(data: str, *, img_size: int, batch_size: int, n_val: int, seed: int):
    """(training loaders for stand-alone runs, fixed recalibration batches, fixed validation batches).

    Built-in data is rendered once into tensors (the same images and order as ``build_loaders``); an
    ImageFolder keeps its loaders (random augmentation per epoch, like ``slimformer train``)."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from slimformer.data import build_datasets, build_loaders

    if data == "builtin":
        train, val, _ = build_datasets("builtin", img_size=img_size, seed=seed, val_size=n_val)
        xs = torch.stack([train[i][0] for i in range(len(train))])
        ys = torch.tensor([train[i][1] for i in range(len(train))])
        ds = TensorDataset(xs, ys)
        sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=seed)
        tl = DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=True)
        vx = torch.stack([val[i][0] for i in range(len(val))])
        vy = torch.tensor([val[i][1] for i in range(len(val))])
        val_b = [(vx[i:i + 256], vy[i:i + 256]) for i in range(0, len(vx), 256)]
    else:
        ld = build_loaders(data, img_size=img_size, batch_size=batch_size, seed=seed)
        tl = ld.train
        val_b = list(build_loaders(data, img_size=img_size, batch_size=256, seed=seed).val)
    recal = list(itertools.islice(iter(tl), 20))
    return tl, recal, val_b


# ----------------------------------------------------------------- subnets and training


def pick_subnets(space, table, n: int, seed: int = 0) -> list:
    """``n`` distinct subnets whose predicted latencies are closest to n evenly spaced targets between the
    smallest and the largest subnet (both included)."""
    pool = [space.smallest(), space.largest()] + [space.sample(random.Random(seed * 7919 + i)) for i in range(3000)]
    ms = np.array([table.predict(c) for c in pool])
    picked, keys = [0, 1], {pool[0].key(), pool[1].key()}
    for t in np.linspace(ms[0], ms[1], n)[1:-1]:
        i = next(int(i) for i in np.argsort(np.abs(ms - t)) if pool[int(i)].key() not in keys)
        picked.append(i)
        keys.add(pool[i].key())
    picked.sort(key=lambda i: ms[i])
    return [pool[i] for i in picked]


def train_standalone(arch, cfg, loader) -> torch.nn.Module:
    """Train ``arch`` from scratch with ``cfg``'s recipe (:func:`fit`, seeded with ``cfg.seed``)."""
    from slimformer.supernet import EfficientFormerNet

    torch.manual_seed(cfg.seed)
    return fit(EfficientFormerNet(arch), arch, cfg, loader)


def fit(net, arch, cfg, loader) -> torch.nn.Module:
    """Train ``net`` for ``cfg``'s updates with its recipe (``Optim``/``Targets``/``finetune_step``, labels only,
    no teacher); returns it in eval mode."""
    from slimformer.train import Optim, Targets, finetune_step

    net.set_distilled_training(True)
    net.train()
    steps = min(len(loader), cfg.steps_per_epoch or len(loader))
    optim = Optim(net, cfg, updates_per_epoch=steps, device=torch.device("cpu"))
    targets = Targets(cfg, arch.num_classes)
    step = 0
    for epoch in range(cfg.epochs):
        loader.sampler.set_epoch(epoch)
        for x, y in itertools.islice(iter(loader), steps):
            x, t = targets(x, y)
            finetune_step(net, None, optim, x, t, kd_weight=0.0, step=step)
            step += 1
    return net.eval()


def recipe(args, out: Path):
    from slimformer.train import TrainConfig

    return TrainConfig(space=args.space, data=args.data, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                       num_random=args.num_random, kd_weight=args.kd_weight, gumbel=args.gumbel, sampling=args.sampling,
                       seed=args.seed, eval_batches=4, val_size=512 if args.data == "builtin" else None,
                       quiet=True, workers=0, device="cpu", run_root=str(out))


def updates(cfg, loader) -> int:
    """How many optimiser steps ``cfg`` trains for on ``loader``."""
    return cfg.epochs * min(len(loader), cfg.steps_per_epoch or len(loader))


def same_recipe(cfg) -> dict:
    """The recipe fields a cached stand-alone result must share with this run to be reused."""
    return {k: getattr(cfg, k) for k in ("data", "epochs", "steps_per_epoch", "batch_size", "lr", "warmup_epochs", "seed")}


def standalone_row(i: int, arch, cfg, loader, val, out: Path, table) -> dict:
    """Stand-alone top-1 of subnet ``i`` (first seed), cached in ``out/standalone/<i>.json``."""
    from slimformer._io import atomic_write_json
    from slimformer.data import evaluate
    from slimformer.supernet import count_macs

    path, same = out / "standalone" / f"{i:02d}.json", same_recipe(cfg)
    if path.is_file():
        row = json.loads(path.read_text())
        if row["key"] == arch.key() and row.get("recipe", same) == same:
            return row
    t0 = time.perf_counter()
    acc = evaluate(train_standalone(arch, cfg, loader), val)
    row = {"index": i, "key": arch.key(), "summary": arch.summary(), "arch": arch.to_dict(),
           "predicted_ms": float(table.predict(arch)), "macs_m": count_macs(arch) / 1e6,
           "standalone_top1": acc, "train_s": time.perf_counter() - t0, "recipe": same}
    atomic_write_json(path, row)
    print(f"  stand-alone {i + 1} {arch.summary()}: {100 * acc:.1f}% ({row['train_s']:.0f} s)", flush=True)
    return row


def standalone_results(subnets, cfg, loader, val, out: Path, table) -> list[dict]:
    """Stand-alone top-1 per subnet (:func:`standalone_row`; resumable, one file per subnet)."""
    return [standalone_row(i, arch, cfg, loader, val, out, table) for i, arch in enumerate(subnets)]


def seed_row(i: int, subnet, cfg, seed: int, first: float | None, loader, val, out: Path) -> dict:
    """Subnet ``i`` trained stand-alone with ``seed`` instead of ``cfg.seed`` (cached in
    ``out/standalone/<i>-seed<seed>.json``): ``{index, seed, standalone_top1, first_seed_top1}``."""
    from slimformer._io import atomic_write_json
    from slimformer.data import evaluate

    path, same = out / "standalone" / f"{i:02d}-seed{seed}.json", same_recipe(cfg)
    if path.is_file():
        row = json.loads(path.read_text())
        if row.get("key", subnet.key()) == subnet.key() and row.get("recipe", same) == same:
            return {**row, "first_seed_top1": first if first is not None else row.get("first_seed_top1")}
    acc = evaluate(train_standalone(subnet, replace(cfg, seed=seed), loader), val)
    row = {"index": i, "seed": seed, "key": subnet.key(), "standalone_top1": acc, "first_seed_top1": first,
           "recipe": same}
    atomic_write_json(path, row)
    print(f"  subnet {i} with seed {seed}: {100 * acc:.1f}%", flush=True)
    return row


def shard_arg(text: str) -> tuple[int, int]:
    """``I/N`` with 0 <= I < N, for ``--shard``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 0/2)") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return i, n


def shard_runs(shard: tuple[int, int], n_subnets: int, seeds: int) -> list[tuple[int, int]]:
    """This shard's (seed offset, subnet index) stand-alone runs: every N-th from the I-th, seed-major."""
    i, n = shard
    return [(s, j) for s in range(seeds) for j in range(n_subnets)][i::n]


def train_shard(shard: tuple[int, int], subnets, cfg, loader, val, out: Path, table, seeds: int) -> None:
    """Train only this shard's stand-alone runs (``I/N``: every N-th of the (seed, subnet) runs from the
    I-th), caching them; N processes with the same ``--out`` then share the work, and a final run without
    ``--shard`` finds every stand-alone result cached."""
    for s, j in shard_runs(shard, len(subnets), seeds):
        if s == 0:
            standalone_row(j, subnets[j], cfg, loader, val, out, table)
        else:
            seed_row(j, subnets[j], cfg, cfg.seed + s, None, loader, val, out)


def more_seeds(rows, subnets, cfg, loader, val, out: Path, k: int) -> dict | None:
    """Train every subnet again with seeds ``seed+1 .. seed+k-1`` (:func:`seed_row`, one seed round over all
    subnets at a time) and make each row's ``standalone_top1`` the mean over its ``k`` seeds.

    Returns the reference's own consistency: Kendall tau between the first two seeds' rankings (the ceiling
    any ranker can reach against one seed) and the median per-subnet seed range, in points."""
    if k <= 1:
        return None
    for r in rows:
        r["standalone_seeds"] = {str(cfg.seed): r["standalone_top1"]}
    for seed in range(cfg.seed + 1, cfg.seed + k):
        for i, r in enumerate(rows):
            first = r["standalone_seeds"][str(cfg.seed)]
            r["standalone_seeds"][str(seed)] = seed_row(i, subnets[i], cfg, seed, first, loader, val,
                                                        out)["standalone_top1"]
    for r in rows:
        r["standalone_top1"] = float(np.mean(list(r["standalone_seeds"].values())))
    first, second = ([r["standalone_seeds"][str(cfg.seed + j)] for r in rows] for j in (0, 1))
    spans = [100 * (max(r["standalone_seeds"].values()) - min(r["standalone_seeds"].values())) for r in rows]
    return {"seeds": k, "seed_vs_seed": rank_stats(first, second), "median_range_pts": float(np.median(spans)),
            "max_range_pts": float(max(spans)), "ceiling": reference_ceiling(rows, k)}


def reference_ceiling(rows, k: int, *, n_sim: int = 4000, seed: int = 0) -> dict:
    """Kendall tau a perfect ranker would reach against a mean-of-``k``-seeds reference this noisy.

    The per-subnet seed sd is pooled over subnets; the true accuracies are the seed means shrunk toward
    their average so that their spread excludes the means' own noise (var_true = var_means - sd^2 / k);
    each simulated reference adds fresh noise of sd / sqrt(k) to them. Returns the median tau and its
    5-95 % range over ``n_sim`` simulated references."""
    from scipy.stats import kendalltau

    runs = np.array([[100 * v for v in r["standalone_seeds"].values()] for r in rows])
    means, sd = runs.mean(axis=1), float(np.sqrt(runs.var(axis=1, ddof=1).mean()))
    true_var = means.var(ddof=1) - sd ** 2 / k
    if true_var <= 0:  # the means differ no more than their own noise: no order to recover
        return {"seed_sd_pts": sd, "true_spread_sd_pts": 0.0, "median_tau": 0.0, "tau_5_95": [0.0, 0.0]}
    shrink = np.sqrt(true_var / means.var(ddof=1))
    truth = means.mean() + shrink * (means - means.mean())
    rng = np.random.default_rng(seed)
    taus = [kendalltau(truth, truth + rng.normal(0, sd / np.sqrt(k), len(truth))).statistic for _ in range(n_sim)]
    return {"seed_sd_pts": sd, "true_spread_sd_pts": float(truth.std(ddof=1)), "median_tau": float(np.median(taus)),
            "tau_5_95": [float(v) for v in np.percentile(taus, [5, 95])]}


def seed_noise(subnets, indices, cfg, loader, val, out: Path, rows: list[dict]) -> list[dict]:
    """Stand-alone top-1 of the subnets ``indices`` trained again with seed + 1 (:func:`seed_row`): the
    seed-to-seed spread of the stand-alone figures, i.e. how far a perfect ranker could still disagree."""
    return [seed_row(i, subnets[i], cfg, cfg.seed + 1, rows[i]["standalone_top1"], loader, val, out)
            for i in indices]


def trained_supernet(cfg, run_dir: Path) -> Path:
    """Train (or resume, or reuse) the supernet in ``run_dir``; returns its final checkpoint ``last.pt``."""
    from slimformer.train import train_supernet

    if (run_dir / "last.pt").is_file():
        cfg.resume = str(run_dir)
    train_supernet(cfg, run_dir)
    return run_dir / "last.pt"


def split_by_stem(space, out: Path) -> dict[int, str]:
    """Few-shot NAS on the stem width: one sub-space (a JSON file in ``out``) per stem-width choice, each
    the whole space with that stem width only; ``{stem width: space file}``."""
    from dataclasses import replace as dc_replace

    from slimformer._io import atomic_write_json

    files = {}
    for w in space.stem_widths:
        sub = dc_replace(space, stem_widths=(w,), name=f"{space.name}-stem{w}")
        files[w] = str(atomic_write_json(out / f"space-{sub.name}.json", sub.to_dict()))
    return files


def split_inherited_top1(sn_cfg, space, subnets, recal, val, out: Path, tag: str, tune=None) -> list[float]:
    """Inherited top-1 of each subnet in the supernet of its own stem width (:func:`split_by_stem`; one
    supernet per stem width, each trained with ``sn_cfg``), in the order of ``subnets``."""
    from slimformer.supernet import load_supernet

    accs: dict[int, float] = {}
    for w, path in split_by_stem(space, out).items():
        mine = [i for i, a in enumerate(subnets) if a.stem_width == w]
        if not mine:
            continue
        ck = load_supernet(trained_supernet(replace(sn_cfg, space=path), out / f"supernet-{tag}-stem{w}"))
        accs.update(zip(mine, inherited_top1(ck, [subnets[i] for i in mine], recal, val, tune)))
    return [accs[i] for i in range(len(subnets))]


def inherited_top1(ck, subnets, recal, val, tune=None) -> list[float]:
    """Top-1 of each subnet's inherited weights, extracted, with its own BatchNorm statistics; with
    ``tune`` (a ``(TrainConfig, loader)`` pair) each extracted subnet is first fine-tuned by :func:`fit`."""
    from slimformer.data import evaluate
    from slimformer.supernet import recalibrate_bn

    accs = []
    for arch in subnets:
        net = ck.model.extract_subnet(arch)
        if tune is not None:
            torch.manual_seed(tune[0].seed)
            net = fit(net, arch, tune[0], tune[1])
        recalibrate_bn(net, recal)
        accs.append(evaluate(net, val))
    return accs


def finetune_recipe(cfg, steps: int, lr: float, per_epoch: int):
    """The short fine-tune before scoring: about ``steps`` updates from the inherited weights (as many passes
    over a loader of ``per_epoch`` batches as that takes), cosine from ``lr`` with no warm-up, otherwise
    ``cfg``'s recipe."""
    epochs = -(-steps // per_epoch)
    return replace(cfg, epochs=epochs, steps_per_epoch=-(-steps // epochs), warmup_epochs=0.0, lr=lr)


# ----------------------------------------------------------------- statistics and output


def rank_stats(x, y, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Kendall tau-b and Spearman rho of (x, y), each with a percentile-bootstrap 95 % interval over pairs."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    out = {"n": len(x), "kendall_tau": float(kendalltau(x, y).statistic), "spearman_rho": float(spearmanr(x, y).statistic)}
    taus, rhos = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(set(x[idx])) < 2 or len(set(y[idx])) < 2:
            continue
        taus.append(kendalltau(x[idx], y[idx]).statistic)
        rhos.append(spearmanr(x[idx], y[idx]).statistic)
    out["kendall_tau_ci95"] = [float(v) for v in np.nanpercentile(taus, [2.5, 97.5])]
    out["spearman_rho_ci95"] = [float(v) for v in np.nanpercentile(rhos, [2.5, 97.5])]
    return out


def scatter(path: Path, rows: list[dict], stats: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimformer._io import atomic_write_bytes, figure_png

    x = [100 * r["standalone_top1"] for r in rows]
    y = [100 * r["inherited_top1"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    sc = ax.scatter(x, y, c=[r["predicted_ms"] for r in rows], cmap="viridis", s=40)
    fig.colorbar(sc, label="predicted latency (ms)")
    for r, xi, yi in zip(rows, x, y):
        ax.annotate(str(r["index"]), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lo, hi = min(x + y) - 1, max(x + y) + 1
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("stand-alone top-1 (%)")
    ax.set_ylabel("inherited top-1, BN recalibrated (%)")
    t, tc, r_, rc = stats["kendall_tau"], stats["kendall_tau_ci95"], stats["spearman_rho"], stats["spearman_rho_ci95"]
    ax.set_title(f"{title}\nKendall tau {t:.2f} [{tc[0]:.2f}, {tc[1]:.2f}], Spearman {r_:.2f} [{rc[0]:.2f}, {rc[1]:.2f}]",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig, dpi=110))


def write_report(out: Path) -> Path:
    """``report.md``: one row per supernet variant (tag) found in the run directory."""
    from slimformer._io import atomic_write_text

    lines = ["# Ranking fidelity", "", ("Stand-alone top-1 (trained from scratch, same recipe and updates) vs "
             "inherited top-1 (BN recalibrated). Intervals: percentile bootstrap over subnets, 95 %."), "",
             "| tag | supernet recipe | Kendall tau [95 %] | Spearman rho [95 %] | stand-alone range | inherited range |",
             "|---|---|---|---|---|---|"]
    for p in sorted(out.glob("results-*.json")):
        r = json.loads(p.read_text())
        s, rows = r["stats"], r["subnets"]
        sa = [100 * x["standalone_top1"] for x in rows]
        ih = [100 * x["inherited_top1"] for x in rows]
        lines.append(f"| {r['tag']} | {r['recipe_text']} | {s['kendall_tau']:.3f} [{s['kendall_tau_ci95'][0]:.2f}, "
                     f"{s['kendall_tau_ci95'][1]:.2f}] | {s['spearman_rho']:.3f} [{s['spearman_rho_ci95'][0]:.2f}, "
                     f"{s['spearman_rho_ci95'][1]:.2f}] | {min(sa):.1f}-{max(sa):.1f}% | {min(ih):.1f}-{max(ih):.1f}% |")
        for n in r.get("seed_noise", []):
            lines.append(f"|  | seed noise, subnet {n['index']} | {100 * n['first_seed_top1']:.1f}% vs "
                         f"{100 * n['standalone_top1']:.1f}% (seed {n['seed']}) | | | |")
        c = r.get("standalone_consistency")
        if c:
            sv = c["seed_vs_seed"]
            lines.append(f"|  | stand-alone seed vs seed ({c['seeds']} seeds) | {sv['kendall_tau']:.3f} "
                         f"[{sv['kendall_tau_ci95'][0]:.2f}, {sv['kendall_tau_ci95'][1]:.2f}] | | per-subnet range "
                         f"median {c['median_range_pts']:.1f}, max {c['max_range_pts']:.1f} pts | |")
            if "ceiling" in c:
                ce = c["ceiling"]
                lines.append(f"|  | a perfect ranker against the {c['seeds']}-seed mean (simulated) | "
                             f"{ce['median_tau']:.2f} [5-95 %: {ce['tau_5_95'][0]:.2f}, {ce['tau_5_95'][1]:.2f}] | | "
                             f"seed sd {ce['seed_sd_pts']:.2f} pts | |")
    lines += ["", "Scatter plots: `scatter-<tag>.png`; per-subnet figures: `results-<tag>.json`."]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="run directory (default: runs/ranking-<time>); reused when it exists")
    ap.add_argument("--data", default="builtin", help="'builtin' or an ImageFolder root with train/ and val/")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=75)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--val-images", type=int, default=5000, help="built-in validation images scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="base", help="name of this supernet variant in the run directory")
    ap.add_argument("--num-random", type=int, default=2, help="random subnets per sandwich step")
    ap.add_argument("--kd-weight", type=float, default=0.5)
    ap.add_argument("--gumbel", action="store_true")
    ap.add_argument("--sampling", choices=("sandwich", "uniform"), default="sandwich",
                    help="the supernet's rule: sandwich + in-place KD, or 2 + --num-random uniform subnets, no teacher")
    ap.add_argument("--supernet-seed", type=int, default=None,
                    help="train the supernet with this seed (default: --seed; the subnets and stand-alone runs keep --seed)")
    ap.add_argument("--supernet-epochs", type=int, default=None,
                    help="train the supernet this many epochs (default: --epochs, the stand-alone runs' length)")
    ap.add_argument("--split-stem", action="store_true",
                    help="few-shot NAS: one supernet per stem width, each subnet scored in its own")
    ap.add_argument("--finetune-steps", type=int, default=0,
                    help="fine-tune each extracted subnet this many updates (labels only) before scoring it")
    ap.add_argument("--finetune-lr", type=float, default=None, help="peak LR of that fine-tune (default: --lr / 4)")
    ap.add_argument("--noise-subnets", default="",
                    help="comma-separated subnet indices to train again with seed+1 (seed-to-seed spread)")
    ap.add_argument("--standalone-seeds", type=int, default=1,
                    help="train each subnet stand-alone with this many seeds and rank by their mean")
    ap.add_argument("--shard", type=shard_arg, default=None, metavar="I/N",
                    help="train only the I-th of N shares of the stand-alone runs, then stop (run N at once)")
    ap.add_argument("--lut-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from search_speed import cpu_table

    from slimformer._io import atomic_write_json, make_run_dir
    from slimformer.supernet import get_space, load_supernet

    out = Path(args.out) if args.out else make_run_dir(None, "ranking")
    out.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {out}", flush=True)
    space = get_space(args.space)
    table = cpu_table(space, args.lut_dir)
    subnets = pick_subnets(space, table, args.subnets, args.seed)
    cfg = recipe(args, out)
    loader, recal, val = fixed_batches(args.data, img_size=space.img_size, batch_size=args.batch_size,
                                       n_val=args.val_images, seed=args.seed)
    n_val = sum(len(b[1]) for b in val)
    total = updates(cfg, loader)
    print(f"{len(subnets)} subnets of {space.name!r} from {table.predict(subnets[0]):.3f} to "
          f"{table.predict(subnets[-1]):.3f} ms on {table.name}; {total} updates of batch {cfg.batch_size} each; "
          f"scored on {n_val} validation images", flush=True)
    if args.shard:
        train_shard(args.shard, subnets, cfg, loader, val, out, table, args.standalone_seeds)
        print(f"shard {args.shard[0]}/{args.shard[1]} done; run again without --shard to finish: {out}")
        return
    rows = standalone_results(subnets, cfg, loader, val, out, table)
    noise = seed_noise(subnets, [int(i) for i in args.noise_subnets.split(",") if i], cfg, loader, val, out, rows)
    consistency = more_seeds(rows, subnets, cfg, loader, val, out, args.standalone_seeds)
    if consistency:
        sv = consistency["seed_vs_seed"]
        print(f"stand-alone seed {args.seed} vs seed {args.seed + 1}: Kendall tau {sv['kendall_tau']:.3f} "
              f"[{sv['kendall_tau_ci95'][0]:.2f}, {sv['kendall_tau_ci95'][1]:.2f}]; per-subnet range over "
              f"{args.standalone_seeds} seeds: median {consistency['median_range_pts']:.1f}, max "
              f"{consistency['max_range_pts']:.1f} points", flush=True)
        c = consistency["ceiling"]
        print(f"a perfect ranker against this {args.standalone_seeds}-seed mean: Kendall tau {c['median_tau']:.2f} "
              f"(5-95 % {c['tau_5_95'][0]:.2f}..{c['tau_5_95'][1]:.2f}; seed sd {c['seed_sd_pts']:.2f} points, "
              f"true spread sd {c['true_spread_sd_pts']:.2f})", flush=True)
    t0 = time.perf_counter()
    sn_cfg = replace(recipe(args, out), epochs=args.supernet_epochs or args.epochs,
                     seed=args.seed if args.supernet_seed is None else args.supernet_seed)
    sn_total = updates(sn_cfg, loader)
    ft_lr = args.finetune_lr if args.finetune_lr is not None else args.lr / 4
    tune = (finetune_recipe(cfg, args.finetune_steps, ft_lr, len(loader)), loader) if args.finetune_steps > 0 else None
    ft_updates = updates(tune[0], loader) if tune else 0
    tag = args.tag + (f"-ft{ft_updates}-lr{ft_lr:g}" if tune else "")
    if args.split_stem:
        accs = split_inherited_top1(sn_cfg, space, subnets, recal, val, out, args.tag, tune)
    else:
        ck = load_supernet(trained_supernet(sn_cfg, out / f"supernet-{args.tag}"))
        print(f"supernet {args.tag!r} ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        accs = inherited_top1(ck, subnets, recal, val, tune)
    print(f"scored {len(subnets)} subnets as {tag!r} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for row, acc in zip(rows, accs):
        row["inherited_top1"] = acc
    stats = rank_stats([r["standalone_top1"] for r in rows], [r["inherited_top1"] for r in rows])
    text = (f"{total} updates" + (f" ({sn_total} for the supernet)" if sn_total != total else "")
            + (f", sandwich of {2 + args.num_random}{' + Gumbel' if args.gumbel else ''}, KD weight {args.kd_weight:g}"
               if args.sampling == "sandwich" else f", {2 + args.num_random} uniform subnets per update, no KD")
            + (f", one supernet per stem width ({len(space.stem_widths)})" if args.split_stem else "")
            + (f", each subnet fine-tuned {ft_updates} updates (LR {ft_lr:g}) before scoring" if tune else "")
            + (f"; stand-alone mean of {args.standalone_seeds} seeds" if args.standalone_seeds > 1 else ""))
    atomic_write_json(out / f"results-{tag}.json", {"tag": tag, "data": args.data, "space": space.name,
                                                           "table": table.name, "updates": total,
                                                           "supernet_updates": sn_total, "val_images": n_val,
                                                           "recipe": cfg.to_dict(), "recipe_text": text,
                                                           "stats": stats, "subnets": rows,
                                                           "seed_noise": noise,
                                                           "standalone_consistency": consistency})
    scatter(out / f"scatter-{tag}.png", rows, stats, f"{space.name} space, {args.data} data, {tag}")
    write_report(out)
    rank = {k: {r["index"]: n + 1 for n, r in enumerate(sorted(rows, key=lambda r: -r[k]))}
            for k in ("standalone_top1", "inherited_top1")}
    for r in rows:
        print(f"  {r['index']:2d} {r['predicted_ms']:6.3f} ms  stand-alone {100 * r['standalone_top1']:5.1f}% "
              f"(#{rank['standalone_top1'][r['index']]:2d})  inherited {100 * r['inherited_top1']:5.1f}% "
              f"(#{rank['inherited_top1'][r['index']]:2d})  {r['summary']}")
    print(f"Kendall tau {stats['kendall_tau']:.3f} (95 % {stats['kendall_tau_ci95'][0]:.2f}..{stats['kendall_tau_ci95'][1]:.2f}), "
          f"Spearman rho {stats['spearman_rho']:.3f} (95 % {stats['spearman_rho_ci95'][0]:.2f}.."
          f"{stats['spearman_rho_ci95'][1]:.2f}); goal tau >= 0.7: {'met' if stats['kendall_tau'] >= 0.7 else 'NOT met'}")
    print(f"run directory: {out}")


if __name__ == "__main__":
    main()
