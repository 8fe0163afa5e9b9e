"""Budget precision: does a searched subnet, exported and measured end to end, land on its budget?

For 5 budgets spread over a small space's latency range on a *measured* ``cpu-ort`` table (built here,
resumable), search the subnet (no supernet: latency-driven slimming with the MACs proxy, which packs
the budget), export it (BatchNorm folded, ONNX) and measure it end to end with onnxruntime using the
table's settings (1 thread, batch 1). Prints measured / budget for each (target: every ratio in
[0.95, 1.03]) and measured / predicted. Timings on a shared machine are noisy: run it when it is idle.
A table that keeps a reference subnet (built since the thirteenth session) also has every searched subnet
timed in alternation with it, and prints measured/budget at the build's level (ratio x the reference's
build-time median), the figure its predictions are made for. ``search`` times its own answer on a table
built here and searches again when it misses (``slimformer search --measure``, the default there);
``--no-measure`` scores the table's answer alone.

    python benchmarks/budget_precision.py [--img-size 96] [--lut-dir DIR] [--repeats 30]
    python benchmarks/budget_precision.py --threads 2 --batch 4      # off the default setting
    python benchmarks/budget_precision.py --space default --threads 2 --batch 4 --name matrix-default-2x4-onnxruntime
        # the default space at 224 px, on the fidelity matrix's 2 x 4 table (built by lut_fidelity_matrix.py)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch


def bench_space(img_size: int):
    from slimformer.supernet import get_space

    tiny = get_space("tiny")
    kw = {f.name: getattr(tiny, f.name) for f in dataclasses.fields(tiny)}
    return type(tiny)(**{**kw, "img_size": img_size, "name": f"tiny{img_size}"})


def machine_level(table, args, n: int = 8) -> dict | None:
    """How much slower (>1) this machine runs now than when the table was built, as ``lut validate``'s level
    check measures it: ``n`` of the build's calibration subnets (their faster round) measured again."""
    from slimformer.latency_lut import measure_arch
    from slimformer.latency_lut._fidelity import fastest, fit_level
    from slimformer.supernet import arch_from_dict

    then = sorted((c for c in fastest(table.meta.get("build", {}).get("calibration", [])) if "index" in c),
                  key=lambda c: c["index"])[:n]
    if len(then) < 3:
        return None
    now = [measure_arch(arch_from_dict(c["arch"]), backend="onnxruntime", threads=args.threads, batch=args.batch,
                        repeats=args.repeats)["median_ms"] for c in then]
    return fit_level([c["median_ms"] for c in then], now)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny", help="tiny (at --img-size) or another named space at its own size")
    ap.add_argument("--img-size", type=int, default=96)
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--name", default=None, help="table name (default cpu-ort-tiny<img>)")
    ap.add_argument("--repeats", type=int, default=30, help="timed runs per measurement")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the table and the measurement")
    ap.add_argument("--batch", type=int, default=1, help="batch of the table and the measurement")
    ap.add_argument("--fractions", default="0.15,0.3,0.5,0.7,0.85",
                    help="budgets as fractions of the way from the smallest to the largest subnet")
    ap.add_argument("--no-measure", action="store_true",
                    help="the table's answer alone: search does not time its answer here and search again")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from slimformer._errors import SlimformerError
    from slimformer.export import fold_bn
    from slimformer.latency_lut import build_table, get_table, measure_module
    from slimformer.search import search
    from slimformer.supernet import build_model, get_space

    space = bench_space(args.img_size) if args.space == "tiny" else get_space(args.space)
    name = args.name or f"cpu-ort-{space.name}" + ("" if (args.threads, args.batch) == (1, 1) else
                                                    f"-t{args.threads}b{args.batch}")
    t0 = time.perf_counter()
    try:
        table = get_table(name, lut_dir=args.lut_dir)
        if table.space_hash != space.hash or (table.threads, table.batch) != (args.threads, args.batch):
            raise SlimformerError("stale table")
        print(f"table {name}: {len(table.entries)} entries (already built)")
    except SlimformerError:
        table = build_table(name=name, backend="onnxruntime", threads=args.threads, batch=args.batch, space=space,
                            lut_dir=args.lut_dir, progress=True)
        print(f"built table {name}: {len(table.entries)} entries in {time.perf_counter() - t0:.0f} s")
    lo, hi = table.predict(space.smallest()), table.predict(space.largest())
    print(f"{args.threads} thread(s), batch {args.batch}; load average {os.getloadavg()[0]:.1f}")
    print(f"space {space.name}: predicted {lo:.3f} .. {hi:.3f} ms; correction {table.correction}")
    from slimformer.latency_lut._fidelity import table_reference

    rows, paired = [], []
    ref_fn, ref_ms = table_reference(table, backend="onnxruntime", threads=args.threads, batch=args.batch) or (None, None)
    for f in (float(x) for x in args.fractions.split(",")):
        budget = round(lo + f * (hi - lo), 3)
        try:
            r = search(budget_ms=budget, table=table, measure=False if args.no_measure else None)
        except SlimformerError as e:  # counted as a miss, said in one line
            print(f"budget {budget:7.3f} ms  no subnet found: {e}", flush=True)
            rows.append((budget, float("nan"), float("inf"), float("nan"), "none"))
            continue
        net = fold_bn(build_model(r.arch).eval())
        x = torch.randn(1, 3, space.img_size, space.img_size, generator=torch.Generator().manual_seed(0))
        m = measure_module(net, (x,), backend="onnxruntime", threads=args.threads, batch=args.batch,
                           repeats=args.repeats, reference=ref_fn)
        if ref_fn is not None:
            paired.append(m["ratio"] * ref_ms / budget)
        rows.append((budget, r.predicted_ms, m["median_ms"], m["spread_ms"], r.arch.summary()))
        print(f"budget {budget:7.3f} ms  predicted {r.predicted_ms:7.3f}  measured {m['median_ms']:7.3f} "
              f"(spread {m['spread_ms']:.3f})  measured/budget {m['median_ms'] / budget:5.3f}  "
              f"measured/predicted {m['median_ms'] / r.predicted_ms:5.3f}  {r.arch.summary()}", flush=True)
        if r.measured:
            print(f"    the search timed {len(r.measured)} subnet(s): measured/budget "
                  + ", ".join(f"{c['ratio']:.3f}{' (kept)' if c['chosen'] else ''}" for c in r.measured), flush=True)
    ratios = [m / b for b, _, m, _, _ in rows]
    inside = sum(0.95 <= q <= 1.03 for q in ratios)
    print(f"\nmeasured/budget: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}; "
          f"{inside}/{len(ratios)} in [0.95, 1.03]")
    if paired:
        print(f"paired with the table's reference subnet (at the build's level): measured/budget "
              f"{', '.join(f'{q:.3f}' for q in paired)}; median {statistics.median(paired):.3f}; "
              f"{sum(0.95 <= q <= 1.03 for q in paired)}/{len(paired)} in [0.95, 1.03]")
    level = machine_level(table, args)
    if level is not None:
        lv = [q / level["factor"] for q in ratios]
        print(f"machine level now vs the build: x{level['factor']:.3f} (noise {level['noise']:.3f}); "
              f"measured/(budget x level): "
              f"{', '.join(f'{q:.3f}' for q in lv)}; {sum(0.95 <= q <= 1.03 for q in lv)}/{len(lv)} in [0.95, 1.03]")


if __name__ == "__main__":
    main()
