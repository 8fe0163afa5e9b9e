"""Probe (issue 17): whole tiny-space subnets at 96 px vs the sum of their ops alone, at the median and low
quantiles of calls, and a 3-parameter fit on them.  python benchmarks/lut_composition_probe.py THREADS BATCH"""
import random
import sys

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from lut_fidelity_matrix import space_of

from slimformer.latency_lut import arch_ops, build_op
from slimformer.latency_lut._measure import runner, time_calls
from slimformer.supernet import EfficientFormerNet

T, B = int(sys.argv[1]), int(sys.argv[2])
sp = space_of("tiny@96")
def calls(m, ex, n=40):
    return np.array(time_calls(runner(m, ex, threads=T, batch=B), repeats=n, min_time_s=0.0))
ovc = calls(torch.nn.ReLU(), (torch.zeros(1, 8),), 200)
cache, rows = {}, []
for s in range(12):
    cfg = sp.sample(random.Random(500 + s))
    net = calls(EfficientFormerNet(cfg).eval(), (torch.randn(1, 3, 96, 96),))
    ops = arch_ops(cfg)
    for k in ops:
        if k not in cache:
            cache[k] = calls(*build_op(k))
    row = []
    for q in (50, 20, 5):
        ov = np.percentile(ovc, q)
        row += [np.percentile(net, q), sum(np.percentile(cache[k], q) - ov for k in ops) + ov]
    rows.append(row + [len(ops)])
    print(cfg.summary(), " ".join(f"{x:.3f}" for x in row), flush=True)
r = np.array(rows)
for i, q in enumerate((50, 20, 5)):
    net, pred, n = r[:, 2 * i], r[:, 2 * i + 1], r[:, -1]
    A = np.stack([pred, np.ones_like(pred), n], 1)
    z, *_ = np.linalg.lstsq(A / net[:, None], np.ones_like(net), rcond=None)
    fit = A @ z
    err = np.abs(fit - net) / net
    print(f"q{q}: ratio net/sum median {np.median(net / pred):.3f} cv {np.std(net / pred) / np.mean(net / pred):.3f}; "
          f"after scale+offset+per-op fit (in-sample): MAPE {100 * err.mean():.2f}% within5 {np.mean(err <= .05):.2f}")
