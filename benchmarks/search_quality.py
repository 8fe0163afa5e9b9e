"""Search quality with error bars: does the search beat random search and uniform width scaling?

Per seed a small supernet (tiny space, 32 px, ``--gumbel``, ``--epochs`` short epochs) is trained on the
data (built-in, or an ImageFolder with ``--data``), and a latency table measured here with onnxruntime
(``cpu-ort-tiny32``, built once) fixes 5 budgets spread over the space's latency range. At each budget
it compares, on a held-out split, the top-1 of

* ``slim``      -- latency-driven slimming with evaluated actions (EfficientFormer);
* ``fast``      -- slimming ranked by alpha alone (no evaluation);
* ``tpe``, ``nsga2`` -- optuna with the budget as a constraint (``--trials`` trials each);
* ``evolution`` -- once-for-all's evolutionary search (``--trials`` subnets scored);
* ``random``    -- the best of N random subnets that fit, N = the number of supernet evaluations the
  default strategy used at that budget and seed (an equal-evaluation baseline);
* ``uniform``   -- the largest subnet with every width scaled by one common factor until it fits.

All candidates use inherited weights with BatchNorm recalibrated on the same training batches, and all are held
to the table's prediction of the budget (the searches do not time their answers here: ``measure=False``). Searches
and the random baseline select on a *search split* of the validation images; the reported top-1 is on
a disjoint *held-out split*. The table gives mean +- standard error over ``--seeds`` seeds (each seed:
its own supernet, search seeds and random draws). Goal: the default strategy >= random within one
standard error (of the per-seed difference) at 5/5 budgets, and > uniform wherever uniform fits.
Results per seed are kept in the run directory, so an interrupted run resumes.

    python benchmarks/search_quality.py --seeds 3 [--data builtin|IMAGEFOLDER] [--trials 40] [--out DIR]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_speed import cpu_table

METHODS = ("slim", "fast", "tpe", "nsga2", "evolution", "random", "uniform")
METHOD_OF = {"slim": "slim", "optuna": "tpe", "evolution": "evolution"}  # search's strategy -> the column it runs as


def uniform_width(space, table, budget):
    """Largest subnet at full depth with widths scaled by one common factor; None if even the narrowest misses."""
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


def best_random(space, table, budget, ns, score, seed) -> dict[int, object]:
    """For each n in ``ns``: the best (on the search split) of the first ``n`` random subnets that fit
    ``budget`` (one stream of draws, so the candidate sets are nested)."""
    rng = random.Random(seed)
    feas, tries = [], 0
    while len(feas) < max(ns) and tries < 50_000:
        c = space.sample(rng)
        tries += 1
        if table.predict(c) <= budget:
            feas.append(c)
    return {n: max(feas[:n], key=lambda c: (score(c), table.predict(c))) if feas else None for n in ns}


def train_supernet_for(data: str, out: Path, *, epochs: int, seed: int, steps_per_epoch: int | None = None) -> Path:
    """The tiny supernet of one seed (``slimformer train --space tiny --gumbel``), resumable."""
    from slimformer.train import TrainConfig, train_supernet

    kw = {"train_size": 2560, "val_size": 512} if data == "builtin" else {}
    cfg = TrainConfig(space="tiny", data=data, epochs=epochs, batch_size=64, seed=seed, workers=0, gumbel=True,
                      quiet=True, device="cpu", eval_batches=4, steps_per_epoch=steps_per_epoch, **kw)
    if (out / "last.pt").is_file():
        cfg.resume = str(out)
    train_supernet(cfg, out)
    return out / "last.pt"


def data_batches(data: str, img_size: int, bs: int, n_recal: int, n_val: int):
    """Fixed recalibration batches and validation batches (the same for every seed and method)."""
    from slimformer.data import build_loaders

    kw = {"train_size": bs * n_recal, "val_size": bs * n_val} if data == "builtin" else {}
    ld = build_loaders(data, img_size=img_size, batch_size=bs, workers=0, seed=1, **kw)
    return list(itertools.islice(iter(ld.train), n_recal)), list(itertools.islice(iter(ld.val), n_val)), ld.num_classes


def one_seed(args, seed: int, out: Path, table, batches) -> dict:
    """All methods at all budgets for one seed; cached as ``seed-<s>.json``."""
    from slimformer._io import atomic_write_json
    from slimformer.search import SupernetAccuracy, search
    from slimformer.search._api import default_strategy
    from slimformer.supernet import load_supernet

    path = out / f"seed-{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    ck = load_supernet(train_supernet_for(args.data, out / f"supernet-{seed}", epochs=args.epochs, seed=seed,
                                        steps_per_epoch=args.steps_per_epoch))
    print(f"seed {seed}: supernet trained in {time.perf_counter() - t0:.0f} s", flush=True)
    sp = ck.space
    recal, val, nc = batches
    search_val, heldout = val[:args.search_batches], val[args.search_batches:]
    loaders = types.SimpleNamespace(train=recal, val=search_val, num_classes=nc)
    sel, test = SupernetAccuracy(ck.model, recal, search_val), SupernetAccuracy(ck.model, recal, heldout)
    lo, hi = table.predict(sp.smallest()), table.predict(sp.largest())
    default = METHOD_OF[default_strategy(has_supernet=True)]
    rows = []
    for f in (float(x) for x in args.fractions.split(",")):
        budget = round(lo + f * (hi - lo), 4)
        # measure=False: every strategy is held to the table's prediction, as the random and uniform baselines
        # are (a search would otherwise time its answer here and search again at a lower budget)
        kw = {"budget_ms": budget, "table": table, "supernet": ck, "loaders": loaders,
              "val_batches": args.search_batches, "seed": seed, "measure": False}
        res, evals = {}, {}
        for name, extra in (("slim", {"strategy": "slim"}), ("fast", {"strategy": "slim", "fast": True}),
                            ("tpe", {"strategy": "optuna", "sampler": "tpe", "trials": args.trials}),
                            ("nsga2", {"strategy": "optuna", "sampler": "nsga2", "trials": args.trials}),
                            ("evolution", {"strategy": "evolution", "trials": args.trials})):
            if name == "fast" and not ck.arch_logits:
                continue
            r = search(**kw, **extra)
            res[name], evals[name] = r.arch, r.options.get("evaluations", 0)
        ns = sorted({max(1, n) for n in evals.values() if n})
        rand = best_random(sp, table, budget, ns, sel, seed * 100_003 + round(budget * 1e4))
        n_eq = max(1, evals[default])
        res["random"] = rand[n_eq]
        res["uniform"] = uniform_width(sp, table, budget)
        acc = {k: (None if c is None else test(c)) for k, c in res.items()}
        by_n = {str(n): (None if c is None else test(c)) for n, c in rand.items()}
        ms = {k: (None if c is None else table.predict(c)) for k, c in res.items()}
        rows.append({"fraction": f, "budget_ms": budget, "heldout_top1": acc, "predicted_ms": ms,
                     "evaluations": evals, "random_n": n_eq,
                     "random_by_evaluations": by_n, "archs": {k: c.summary() for k, c in res.items() if c}})
        line = "  ".join(f"{k} {'-' if a is None else f'{100 * a:5.1f}%'}" for k, a in acc.items())
        print(f"seed {seed} budget {budget:.4f} ms (random of {n_eq}): {line}", flush=True)
    result = {"seed": seed, "default": default, "largest_ms": hi, "smallest_ms": lo, "rows": rows,
              "search_images": sum(len(b[1]) for b in search_val), "heldout_images": sum(len(b[1]) for b in heldout)}
    atomic_write_json(path, result)
    return result


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def summarize(seeds: list[dict], default: str) -> dict:
    """Mean +- SE per method and budget, and the goal checks (paired per-seed differences). ``random`` is
    the best of as many random subnets as ``default`` evaluated at that budget and seed."""
    out = {"default": default, "seeds": [s["seed"] for s in seeds], "budgets": []}
    for i, row in enumerate(seeds[0]["rows"]):
        per = {k: [s["rows"][i]["heldout_top1"].get(k) for s in seeds] for k in METHODS}
        per["random"] = [s["rows"][i]["random_by_evaluations"][str(max(1, s["rows"][i]["evaluations"][default]))]
                         for s in seeds]
        b = {"budget_ms": row["budget_ms"], "fraction": row["fraction"], "methods": {},
             "random_n": [max(1, s["rows"][i]["evaluations"][default]) for s in seeds]}
        for k, xs in per.items():
            if all(x is not None for x in xs) and xs:
                m, se = mean_se([100 * x for x in xs])
                b["methods"][k] = {"mean": m, "se": se, "values": [100 * x for x in xs]}
        d = mean_se([100 * (a - r) for a, r in zip(per[default], per["random"])])
        b["default_minus_random"] = {"mean": d[0], "se": d[1]}
        b["meets_random"] = d[0] >= -(d[1] if math.isfinite(d[1]) else 0.0)
        if "uniform" in b["methods"]:
            b["beats_uniform"] = b["methods"][default]["mean"] > b["methods"]["uniform"]["mean"]
        out["budgets"].append(b)
    return out


def each_against_random(seeds: list[dict]) -> dict[str, dict]:
    """Every search strategy held to the goal as if it were the default: ``{name: {"met": k, "of": n, "diffs":
    [(mean, se), ...]}}``, each against the best of as many random subnets as *it* evaluated (its own N)."""
    out = {}
    for name in ("slim", "fast", "tpe", "nsga2", "evolution"):
        if not all(r["evaluations"].get(name) for s in seeds for r in s["rows"]):
            continue  # absent, or no supernet evaluations (``fast`` ranks by alpha): no random of equal N
        b = summarize(seeds, name)["budgets"]
        out[name] = {"met": sum(x["meets_random"] for x in b), "of": len(b),
                     "diffs": [(x["default_minus_random"]["mean"], x["default_minus_random"]["se"]) for x in b]}
    return out


def plot(path: Path, summary: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimformer._io import atomic_write_bytes, figure_png

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for j, k in enumerate(METHODS):
        pts = [(b["budget_ms"], b["methods"][k]) for b in summary["budgets"] if k in b["methods"]]
        if not pts:
            continue
        x = [p[0] * (1 + 0.006 * (j - 3)) for p in pts]
        ax.errorbar(x, [p[1]["mean"] for p in pts], yerr=[p[1]["se"] for p in pts], marker="o", ms=4, capsize=3,
                    lw=1.6 if k in (summary["default"], "random") else 0.9, label=k)
    ax.set_xlabel("latency budget (ms, cpu-ort-tiny32)")
    ax.set_ylabel("held-out top-1 (%), mean +- SE")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig, dpi=110))


def report(out: Path, summary: dict, args) -> str:
    d = summary["default"]
    lines = [f"# Search quality ({args.data}, {len(summary['seeds'])} seeds)", "",
             (f"Held-out top-1 (%), mean +- SE over seeds {summary['seeds']}; default strategy: `{d}`; "
             "random = best of N random feasible subnets, N = the default strategy's supernet evaluations."), "",
             "| budget ms | " + " | ".join(METHODS) + " | default - random | >= random (1 SE) | > uniform |",
             "|---" * (len(METHODS) + 4) + "|"]
    for b in summary["budgets"]:
        cells = [f"{b['methods'][k]['mean']:.1f} +- {b['methods'][k]['se']:.1f}" if k in b["methods"] else "-"
                 for k in METHODS]
        dr = b["default_minus_random"]
        lines.append(f"| {b['budget_ms']:.4f} | " + " | ".join(cells) + f" | {dr['mean']:+.1f} +- {dr['se']:.1f} | "
                     f"{'yes' if b['meets_random'] else 'no'} | {('yes' if b.get('beats_uniform') else 'no') if 'beats_uniform' in b else 'does not fit'} |")
    if summary.get("each"):
        lines += ["", ("Each strategy against the best of as many random subnets as it evaluated (its own N), "
                       "paired mean +- SE per budget:"), ""]
        for k, e in summary["each"].items():
            lines.append(f"- `{k}`: >= random within one SE at {e['met']}/{e['of']} budgets ("
                         + ", ".join(f"{m:+.1f} +- {se:.1f}" for m, se in e["diffs"]) + ")")
    n_r = sum(b["meets_random"] for b in summary["budgets"])
    fit = [b for b in summary["budgets"] if "beats_uniform" in b]
    n_u = sum(b["beats_uniform"] for b in fit)
    lines += ["", (f"`{d}` >= random within one SE at {n_r}/{len(summary['budgets'])} budgets; "
              f"> uniform at {n_u}/{len(fit)} budgets where uniform scaling fits."), "", "Plot: `search_quality.png`."]
    text = "\n".join(lines) + "\n"
    from slimformer._io import atomic_write_text

    atomic_write_text(out / "report.md", text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST .. FIRST + SEEDS - 1")
    ap.add_argument("--data", default="builtin", help="'builtin' or an ImageFolder root with train/ and val/")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="cap updates per epoch (default: all 40)")
    ap.add_argument("--trials", type=int, default=40, help="optuna trials / evolution subnets scored")
    ap.add_argument("--search-batches", type=int, default=4, help="validation batches the searches select on")
    ap.add_argument("--heldout-batches", type=int, default=12, help="validation batches for the reported top-1")
    ap.add_argument("--fractions", default="0.15,0.3,0.5,0.7,0.85")
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--only-seed", type=int, default=None,
                    help="compute just this seed into --out and stop (run seeds as parallel processes)")
    ap.add_argument("--out", default=None, help="run directory (default: runs/search-quality-<time>); resumes")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from slimformer._io import atomic_write_json, make_run_dir
    from slimformer.supernet import get_space

    out = Path(args.out) if args.out else make_run_dir(None, "search-quality")
    out.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {out}", flush=True)
    table = cpu_table(get_space("tiny"), args.lut_dir)
    batches = data_batches(args.data, 32, 64, 4, args.search_batches + args.heldout_batches)
    if args.only_seed is not None:
        one_seed(args, args.only_seed, out, table, batches)
        print(f"seed {args.only_seed} done; run without --only-seed to summarise")
        return
    seeds = [one_seed(args, s, out, table, batches) for s in range(args.first_seed, args.first_seed + args.seeds)]
    from slimformer.search._api import default_strategy

    summary = summarize(seeds, METHOD_OF[default_strategy(has_supernet=True)])
    summary["each"] = each_against_random(seeds)
    atomic_write_json(out / "results.json", {"summary": summary, "per_seed": seeds, "args": vars(args)})
    plot(out / "search_quality.png", summary, f"search quality, tiny space, {args.data}, {len(seeds)} seeds")
    print(report(out, summary, args))
    print(f"run directory: {out}")


if __name__ == "__main__":
    main()
