"""Where a paired table build spends its time per op, and whether the per-call ratio would judge noise better.

For ``--ops`` random ops of ``--space`` (default: the default space; seed ``--seed``) at ``--threads`` x ``--batch``, each op is built,
exported to ONNX, opened in a session and measured as ``lut build`` measures it (paired with the space's
reference op, ``--ref-warm`` untimed reference calls before each timed one, ``--repeats`` timed calls, default
``OP_REPEATS``, and ``--retries`` retries of a spread over 10 %, default none; ``--repeats 15 --retries 2`` is how
builds timed ops before the twentieth session). Prints the seconds of each phase, the attempts, and the phases scaled to the 1964 ops of a
table. Then each op once more, 15 paired calls: the median over ops of the spread (interquartile range / median)
of the op's own times, of the reference's, and of the per-call ratios op / reference: a noise retry judged by
the ratio would fire as often as the ratio's spread is over 10 %.

    python benchmarks/lut_op_cost.py --threads 2 --batch 4 --ops 80
    python benchmarks/lut_op_cost.py --threads 2 --batch 4 --ops 80 --seed 4 --repeats 15 --retries 2
    python benchmarks/lut_op_cost.py --threads 2 --batch 4 --ops 80 --ref-warm 0
    python benchmarks/lut_op_cost.py --threads 2 --batch 16 --ops 40 --ref-op mb4d-r14-c320-mlp320
    python benchmarks/lut_op_cost.py --threads 2 --batch 4 --ops 20 --context 6
    python benchmarks/lut_op_cost.py --threads 2 --batch 4 --ops 80 --subnets 6 [--export-batched]
    python benchmarks/lut_op_cost.py --space efficientvit --threads 2 --batch 16 --ops 40 --subnets 4 --compare-graphs

``--subnets N`` also times the first N random calibration subnets as a build times them (paired with the
reference subnet) and scales each phase to a build's 30 subnets (one round since the nineteenth session;
figures quoted before it were scaled to two). ONNX is exported on one image and
fed the batch, as builds do since the eighteenth session; ``--export-batched`` traces at the table's batch, as
they did before (the graph is the same; the trace is not). ``--compare-graphs`` also exports each op and subnet
the other way and counts the graphs that differ (:func:`slimformer.latency_lut._measure.onnx_nodes`), outside the
timed phases. The first line names the reference op with its share of the FLOPs of the reference subnet's median op
(``REF_OP_MIN_SHARE``).
"""
from __future__ import annotations

import argparse
import functools
import random
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ops", type=int, default=80)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--space", default="default", help="the search space whose ops are timed (default: default)")
    ap.add_argument("--ref-warm", type=int, default=None, help="untimed reference calls (default: the build's)")
    ap.add_argument("--retries", type=int, default=0, help="noise retries per op (default 0, a build's; 2 before the "
                    "twentieth session)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls per op (default: a build's, OP_REPEATS; 15 before the twentieth session)")
    ap.add_argument("--ref-op", default=None, help="the op to pair with (default: the build's reference op)")
    ap.add_argument("--context", type=int, default=0,
                    help="also time the in-context profile of this many calibration subnets (default 0)")
    ap.add_argument("--subnets", type=int, default=0,
                    help="also time this many calibration subnets as a build does (default 0)")
    ap.add_argument("--export-batched", action="store_true",
                    help="export at the table's batch (builds before the eighteenth session) instead of one image")
    ap.add_argument("--compare-graphs", action="store_true",
                    help="also export the other way and count the ops and subnets whose graphs differ")
    args = ap.parse_args()

    import torch

    from slimformer.latency_lut._fidelity import reference_op, reference_subnet_flops
    from slimformer.latency_lut._keys import space_ops
    from slimformer.latency_lut._measure import (
        _as_tuple,
        _batched,
        export_onnx,
        measure_callable,
        onnx_nodes,
        ort_session,
        runner,
        time_paired_calls,
    )
    from slimformer.latency_lut._ops import build_op
    from slimformer.latency_lut._runner import (
        OP_REPEATS,
        REF_WARM,
        TIME_CAP_S,
        paired_figures,
        summary,
        warmed,
    )
    from slimformer.supernet import get_space

    torch.set_num_threads(args.threads)
    ref_warm = REF_WARM if args.ref_warm is None else args.ref_warm
    args.repeats = OP_REPEATS if args.repeats is None else args.repeats
    space = get_space(args.space)
    all_keys = sorted(space_ops(space))
    keys = random.Random(args.seed).sample(all_keys, args.ops)
    ref_key = args.ref_op or reference_op(space, args.batch)
    flops = {k: f for f, k in reference_subnet_flops(space)}
    median = sorted(flops.values())[len(flops) // 2]
    if ref_key in flops:
        print(f"reference op {ref_key}: {flops[ref_key] / 1e6:.1f} MFLOPs, {flops[ref_key] / median:.3f} of the "
              f"reference subnet's median op ({median / 1e6:.1f} MFLOPs); x batch {args.batch}: "
              f"{flops[ref_key] * args.batch / 1e6:.0f} MFLOPs a call")
    differ = 0
    ref = warmed(runner(*build_op(ref_key), threads=args.threads, batch=args.batch))
    phases = dict.fromkeys(("build_op", "export", "session", "measure"), 0.0)
    attempts, spreads, repeat = 0, [], []
    for k in keys:
        t = [time.perf_counter()]
        module, example = build_op(k)
        t.append(time.perf_counter())
        example = _as_tuple(example)
        batched = _batched(example, args.batch)
        onnx = export_onnx(module, batched if args.export_batched else example)
        t.append(time.perf_counter())
        sess = ort_session(onnx, threads=args.threads)
        feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), batched)}
        t.append(time.perf_counter())
        fn = functools.partial(sess.run, None, feeds)
        r = measure_callable(fn, repeats=args.repeats, min_time_s=0.02, max_time_s=TIME_CAP_S, noise=0.1,
                             retries=args.retries, reference=ref, ref_warm=ref_warm)
        t.append(time.perf_counter())
        attempts += r["attempts"]
        for name, a, b in zip(phases, t, t[1:]):
            phases[name] += b - a
        if args.compare_graphs:  # outside the timed phases
            differ += onnx_nodes(onnx) != onnx_nodes(export_onnx(module, example if args.export_batched else batched))
        a, b = time_paired_calls(fn, ref, repeats=15, min_time_s=0.02, max_time_s=TIME_CAP_S, ref_warm=ref_warm)
        per_call = summary([x / y for x, y in zip(a, b)])
        spreads.append((summary(a)["spread_ms"] / summary(a)["median_ms"],
                        summary(b)["spread_ms"] / summary(b)["median_ms"],
                        per_call["spread_ms"] / per_call["median_ms"], paired_figures(a, b)["ratio"]))
        repeat.append(abs(paired_figures(a, b)["ratio"] / r["ratio"] - 1))
    total, scale = sum(phases.values()), len(all_keys) / len(keys)
    print(f"{args.threads} x {args.batch}, {len(keys)} ops (seed {args.seed}), reference op {ref_key}, ref_warm {ref_warm}, repeats {args.repeats}, retries "
          f"{args.retries}: {total:.1f} s = " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
          + f"; {attempts} attempts ({attempts - len(keys)} retries)")
    if args.compare_graphs:
        print(f"graphs exported on one image and at batch {args.batch}: {differ} of {len(keys)} ops differ")
    print(f"scaled to the {len(all_keys)} ops of the space: " + ", ".join(f"{k} {v * scale:.0f} s" for k, v in phases.items())
          + f", in all {total * scale:.0f} s")
    own, refs, ratio = (statistics.median(s[i] for s in spreads) for i in range(3))
    print(f"spread (IQR / median) over {len(keys)} ops, median: the op's own times {100 * own:.1f} %, the reference's "
          f"{100 * refs:.1f} %, the per-call ratios {100 * ratio:.1f} %; over 10 %: own "
          f"{sum(s[0] > 0.1 for s in spreads)}, ratio {sum(s[2] > 0.1 for s in spreads)} of {len(keys)}")
    print(f"the op's ratio to the reference measured twice, one after the other: median |change| "
          f"{100 * statistics.median(repeat):.2f} %, 90th percentile {100 * float(np.percentile(repeat, 90)):.2f} %")
    if args.subnets:
        subnet_cost(args.subnets, args.threads, args.batch, space, args.export_batched, args.compare_graphs)
    if args.context:
        context_cost(args.context, args.threads, args.batch, space)


def subnet_cost(n: int, threads: int, batch: int, space, export_batched: bool, compare: bool) -> None:
    """Seconds per phase of timing ``n`` calibration subnets as a build does, scaled to its 30 subnets and rounds
    (``compare``: also count the subnets whose graph differs when exported the other way)."""
    from slimformer.latency_lut._build import calibration_configs, calibration_rounds
    from slimformer.latency_lut._fidelity import _example, reference_config, reference_runner
    from slimformer.latency_lut._measure import (
        _batched,
        export_onnx,
        measure_callable,
        onnx_nodes,
        ort_session,
    )
    from slimformer.latency_lut._runner import TIME_CAP_S
    from slimformer.supernet import build_model

    ref = reference_runner(reference_config(space), threads=threads, batch=batch)
    phases, differ = dict.fromkeys(("build", "export", "session", "measure"), 0.0), 0
    for cfg in calibration_configs(space, n + 1)[1:]:  # the first is the smallest subnet: typical ones instead
        t = [time.perf_counter()]
        module, x = build_model(cfg).eval(), (_example(cfg),)
        t.append(time.perf_counter())
        xb = _batched(x, batch)
        onnx = export_onnx(module, xb if export_batched else x)
        t.append(time.perf_counter())
        sess = ort_session(onnx, threads=threads)
        fn = functools.partial(sess.run, None, {sess.get_inputs()[0].name: xb[0].numpy()})
        t.append(time.perf_counter())
        measure_callable(fn, repeats=15, min_time_s=0.02, max_time_s=TIME_CAP_S, noise=0.1, retries=2, reference=ref)
        t.append(time.perf_counter())
        for name, a, b in zip(phases, t, t[1:]):
            phases[name] += b - a
        if compare:
            differ += onnx_nodes(onnx) != onnx_nodes(export_onnx(module, x if export_batched else xb))
    rounds = calibration_rounds(None, paired=True)
    scale = 30 * rounds / n
    print(f"{n} calibration subnets ({'export at the batch' if export_batched else 'export on one image'}): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
          + f"; scaled to a build's 30 x {rounds} round(s): " + ", ".join(f"{k} {v * scale:.0f} s" for k, v in phases.items())
          + f", in all {sum(phases.values()) * scale:.0f} s"
          + (f"; graphs exported on one image and at batch {batch}: {differ} of {n} subnets differ" if compare else ""))


def context_cost(n: int, threads: int, batch: int, space) -> None:
    """Seconds of onnxruntime's per-node profile of the first ``n`` calibration subnets, as a build (unpaired)
    profiles half of its 30."""
    from slimformer.latency_lut._build import calibration_configs
    from slimformer.latency_lut._context import profile_arch

    cfgs, secs = calibration_configs(space, 30), []
    for cfg in cfgs[:n]:
        t = time.perf_counter()
        profile_arch(cfg, threads=threads, batch=batch)
        secs.append(time.perf_counter() - t)
    print(f"in-context profile of {n} calibration subnets: " + ", ".join(f"{x:.1f}" for x in secs)
          + f" s; scaled to the {len(cfgs) // 2} a build profiles {statistics.mean(secs) * len(cfgs) / 2:.0f} s")


if __name__ == "__main__":
    main()
