"""What the one export path changed: op and subnet latency under the old table export (opset 17, static
shapes) against the one every measurement now uses (opset 18, dynamic batch, as ``slimformer export``
deploys).

    python benchmarks/onnx_export_settings.py [--ops 40] [--subnets 4] [--threads 1] [--batch 1]

Exports each sampled op of the default space and a few whole subnets both ways, times the two sessions
interleaved (A, B, A, B, ... so load on a shared machine falls on both alike) with the package's timer,
and prints the median ratio dynamic/static with its 10th-90th percentile range. CPU only, a few minutes.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import warnings

import numpy as np
import torch

from slimformer.latency_lut import build_op, space_ops
from slimformer.latency_lut._build import calibration_configs
from slimformer.latency_lut._measure import _as_tuple, _batched, export_onnx, ort_session, time_calls
from slimformer.supernet import build_model, get_space


def static_onnx(module, example) -> bytes:
    """The table export before the one path: opset 17, every shape fixed."""
    f = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, f, dynamo=False, opset_version=17, do_constant_folding=True,
                          input_names=[f"x{i}" for i in range(len(example))])
    return f.getvalue()


def ratio(module, example, threads: int, rounds: int = 5) -> float:
    """Median over ``rounds`` interleaved rounds of (dynamic median / static median)."""
    runs = []
    for onnx in (static_onnx(module, example), export_onnx(module, example)):
        sess = ort_session(onnx, threads=threads)
        feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), example)}
        runs.append(lambda s=sess, fd=feeds: s.run(None, fd))
    out = []
    for _ in range(rounds):
        a, b = (float(np.median(time_calls(r, repeats=15, min_time_s=0.02))) for r in runs)
        out.append(b / a)
    return float(np.median(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=40)
    ap.add_argument("--subnets", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = get_space("default")
    keys = random.Random(0).sample(space_ops(space), args.ops)
    r_ops = [ratio(*_prep(*build_op(k), args.batch), args.threads) for k in keys]
    r_nets = []
    for cfg in calibration_configs(space, args.subnets):
        x = torch.randn(1, 3, cfg.img_size, cfg.img_size)
        r_nets.append(ratio(*_prep(build_model(cfg).eval(), (x,), args.batch), args.threads))
    for what, r in (("ops", r_ops), ("subnets", r_nets)):
        p10, med, p90 = np.percentile(r, [10, 50, 90])
        print(f"{len(r):3d} {what:8s} dynamic/static latency: median {med:.3f} (p10 {p10:.3f}, p90 {p90:.3f})")
    print(f"threads {args.threads}, batch {args.batch}, load average {os.getloadavg()[0]:.1f} at the end")


def _prep(module, example, batch):
    return module.eval(), _batched(_as_tuple(example), batch)


if __name__ == "__main__":
    main()
