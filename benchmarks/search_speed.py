"""Search speed: wall times of the main job, of ``--fast`` slimming and of an optuna run, predictions/s.

* the README's main job: ``search(budget_ms=1.6, table="iphone-lut")`` (default space, no supernet);
* ``--fast`` slimming (alpha only) and evaluated slimming from a briefly trained tiny supernet
  (``--supernet PATH`` to reuse one; otherwise one is trained on the built-in data first, not timed);
* an optuna TPE run (accuracy of inherited weights, budget as constraint, in-memory storage);
* table predictions per second on random subnets of the default space (iphone-lut).

Medians of ``--repeats`` runs, 1 torch thread. On this 2-core machine shared with other jobs the times
are noisy upper bounds. Target: fast slimming <= 5 s.

    python benchmarks/search_speed.py [--repeats 3] [--supernet PATH] [--trials 30]
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch


def trained_tiny_supernet(out_dir: Path, *, epochs: int = 3, seed: int = 0) -> Path:
    """A tiny supernet trained briefly on the built-in data with Gumbel alpha (``slimformer train --gumbel``)."""
    from slimformer.train import TrainConfig, train_supernet

    cfg = TrainConfig(space="tiny", data="builtin", epochs=epochs, batch_size=64, train_size=2560,
                      val_size=512, seed=seed, workers=0, gumbel=True, quiet=True)
    return Path(train_supernet(cfg, out_dir))


def builtin_loaders(img_size: int, bs: int, n_train: int, n_val: int):
    """Built-in data as fixed lists of batches (rendered once, so timings exclude image rendering)."""
    from slimformer.data import build_loaders

    ld = build_loaders("builtin", img_size=img_size, batch_size=bs, workers=0, seed=1, train_size=n_train,
                       val_size=n_val)
    train, val, nc = ld.train, ld.val, ld.num_classes
    return types.SimpleNamespace(train=list(train)[: n_train // bs], val=list(val)[: n_val // bs], num_classes=nc)


def cpu_table(space, lut_dir=None):
    """The measured onnxruntime table of ``space`` on this machine (built once, about 10 s for tiny)."""
    from slimformer._errors import SlimformerError
    from slimformer.latency_lut import build_table, get_table

    name = f"cpu-ort-{space.name}{space.img_size}"
    try:
        table = get_table(name, lut_dir=lut_dir)
        if table.space_hash == space.hash:
            return table
    except SlimformerError:
        pass
    return build_table(name=name, backend="onnxruntime", threads=1, space=space, lut_dir=lut_dir, progress=False,
                       resume=False)


def default_space_fast(table, repeats: int) -> None:
    """--fast slimming on the default space: the slimming itself (alpha ranking + table), with an untrained
    120 M-parameter supernet holding random alpha (timing does not depend on training). Checkpoint loading
    and BN recalibration of the result are excluded (both scale with the data and the disk, not the search)."""
    from slimformer.search import search
    from slimformer.supernet import Supernet, SupernetCheckpoint, arch_key

    sp = table.space
    g = torch.Generator().manual_seed(0)
    logits = {arch_key(si, p): torch.randn(len(sp.kinds_at(si)), generator=g)
              for si in range(4) for p in range(sp.depths[si])}
    ck = SupernetCheckpoint(model=Supernet(sp).eval(), space=sp, arch_logits=logits)
    empty = types.SimpleNamespace(train=[], val=[], num_classes=sp.num_classes)
    t, r = _median_time(lambda: search(budget_ms=1.6, table=table, supernet=ck, fast=True, loaders=empty,
                                       recal_batches=0), repeats)
    print(f"--fast slimming, default space, iphone-lut, 1.6 ms: {t:.2f} s median (incl. extracting subnet.pt "
          f"weights; excl. checkpoint loading and BN recalibration) -> {r.arch.summary()}, {r.predicted_ms:.3f} ms")


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--supernet", default=None, help="a trained tiny supernet (default: train one first)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs when training the tiny supernet")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--val-batches", type=int, default=4)
    ap.add_argument("--default-space", action="store_true",
                    help="also time --fast slimming on the default space (untrained supernet, random alpha)")
    ap.add_argument("--lut-dir", default=None, help="where the tiny cpu-ort table is kept (default: cache)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from slimformer.latency_lut import get_table
    from slimformer.search import search
    from slimformer.supernet import get_space, load_supernet

    iphone = get_table("iphone-lut")
    t, r = _median_time(lambda: search(budget_ms=1.6, table=iphone), args.repeats)
    print(f"main job (default space, iphone-lut, 1.6 ms, no supernet): {t:.2f} s median "
          f"-> {r.arch.summary()}, {r.predicted_ms:.3f} ms")

    rng = random.Random(0)
    cfgs = [get_space("default").sample(rng) for _ in range(2000)]
    iphone.predict(cfgs[0])
    t0 = time.perf_counter()
    for c in cfgs:
        iphone.predict(c)
    dt = time.perf_counter() - t0
    print(f"predictions: {len(cfgs) / dt:,.0f} per s (2000 random default-space subnets, iphone-lut, warm cache)")

    if args.default_space:
        default_space_fast(iphone, args.repeats)
    work = Path(tempfile.mkdtemp(prefix="search_speed-"))
    path = args.supernet
    if path is None:
        t0 = time.perf_counter()
        path = trained_tiny_supernet(work / "train", epochs=args.epochs)
        print(f"trained a tiny supernet in {time.perf_counter() - t0:.0f} s (not part of the search timings)")
    ck = load_supernet(path)
    table = cpu_table(ck.space, args.lut_dir)
    lo, hi = table.predict(ck.space.smallest()), table.predict(ck.space.largest())
    budget = round(lo + 0.5 * (hi - lo), 4)
    print(f"tiny space on table {table.name}: {lo:.3f} .. {hi:.3f} ms, budget {budget} ms")
    loaders = builtin_loaders(ck.space.img_size, 64, 64 * 4, 64 * args.val_batches)
    kw = {"budget_ms": budget, "table": table, "val_batches": args.val_batches, "loaders": loaders}
    if ck.arch_logits:
        t, r = _median_time(lambda: search(supernet=path, fast=True, **kw), args.repeats)
        print(f"--fast slimming (alpha, incl. loading the checkpoint and BN recalibration of the result): "
              f"{t:.2f} s median -> {r.arch.summary()}")
    else:
        print("the checkpoint holds no alpha: --fast slimming not timed")
    t, r = _median_time(lambda: search(supernet=path, strategy="slim", **kw), 1)
    print(f"evaluated slimming: {t:.1f} s, {len([x for x in r.trace if x['phase'] == 'slim'])} steps "
          f"-> {r.score_text}, {r.arch.summary()}")
    t, r = _median_time(lambda: search(supernet=path, strategy="optuna", trials=args.trials, **kw), 1)
    print(f"optuna tpe, {args.trials} trials: {t:.1f} s ({t / args.trials:.2f} s/trial) -> {r.score_text}")


if __name__ == "__main__":
    main()
