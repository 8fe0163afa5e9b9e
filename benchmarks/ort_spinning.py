"""Do onnxruntime's spinning intra-op threads cost latency and repeatability here? (issue 17: threads > 1)

onnxruntime's intra-op threads spin for a while after each parallel section, waiting for the next
(``session.intra_op.allow_spinning``, on by default). With every core given to intra-op threads, a spinning
thread holds a core the work needs. For each setting (spinning on, off) this times 4 random default-space
subnets paired with the tables' reference subnet, and a 3x3 convolution alone, over several rounds, and
prints the subnets' medians, how much each moves between rounds on its own and paired, and the same for
the convolution. ``slimformer`` sessions are made without spinning (``_runner.ALLOW_SPINNING``) since this
measurement.

    python benchmarks/ort_spinning.py --threads 2 --batch 4 --rounds 8
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import statistics

import numpy as np


def session(module, example, *, threads: int, batch: int, spin: bool):
    """A no-argument callable running ``module`` in an onnxruntime session made as slimformer makes them,
    with spinning on or off."""
    import onnxruntime as ort

    from slimformer.latency_lut._measure import _batched, export_onnx

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    ex = _batched((example,), batch)
    s = ort.InferenceSession(export_onnx(module, ex), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(s.get_inputs(), ex)}
    return lambda: s.run(None, feeds)


def sd_pct(v) -> float:
    v = np.asarray(v)
    return float(100 * np.std(v / np.median(v)))


def workloads(make, *, seed: int, subnets: int) -> tuple[list, object, object]:
    """``subnets`` random default-space subnets, the tables' reference subnet and a 3x3 convolution, each as
    the no-argument callable ``make(module, example)`` returns, warmed up (also used by torch_omp_wait.py)."""
    import torch
    from torch import nn

    from slimformer.latency_lut._fidelity import reference_config
    from slimformer.supernet import build_model, get_space

    sp, x, rng = get_space("default"), torch.randn(1, 3, 224, 224), random.Random(seed)
    nets = [make(build_model(sp.sample(rng)).eval(), x) for _ in range(subnets)]
    ref = make(build_model(reference_config(sp)).eval(), x)
    conv = make(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.GELU()).eval(), torch.randn(1, 64, 56, 56))
    for f in [*nets, ref, conv]:
        for _ in range(3):
            f()
    return nets, ref, conv


def repeatability(nets, ref, conv, rounds: int) -> str:
    """The subnets' medians and how much each moves between ``rounds`` rounds, on its own and paired with
    ``ref`` (the tables' paired timer), and the same for the convolution alone."""
    from slimformer.latency_lut._measure import time_calls
    from slimformer.latency_lut._runner import paired_figures, time_paired

    own, paired, cv = [[] for _ in nets], [[] for _ in nets], []
    for _ in range(rounds):
        for i, f in enumerate(nets):
            p = paired_figures(*time_paired(f, ref, 7))
            own[i].append(p["ratio"] * p["ref_ms"])
            paired[i].append(p["ratio"])
        cv.append(statistics.median(time_calls(conv, warmup=0, repeats=15, min_time_s=0.0)))
    ms = ", ".join(f"{np.median(v):.1f}" for v in own)
    return (f"subnets {ms} ms; between rounds sd {np.median([sd_pct(v) for v in own]):.2f} % "
            f"(paired {np.median([sd_pct(v) for v in paired]):.2f} %); 3x3 conv alone {np.median(cv):.2f} ms, "
            f"sd {sd_pct(cv):.2f} %")


def one_setting(spin: bool, args) -> str:
    make = functools.partial(session, threads=args.threads, batch=args.batch, spin=spin)
    nets, ref, conv = workloads(make, seed=args.seed, subnets=args.subnets)
    return f"spinning {'on ' if spin else 'off'}: " + repeatability(nets, ref, conv, args.rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--subnets", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print(f"{args.threads} thread(s), batch {args.batch}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
          flush=True)
    for spin in (True, False):
        print(one_setting(spin, args), flush=True)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
