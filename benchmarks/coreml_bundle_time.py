"""How long ``slimformer lut bundle --format coreml`` takes for the default space (1964 ops + 10 calibration
subnets), measured on a stratified sample of its ops and extrapolated per op kind.

    python benchmarks/coreml_bundle_time.py [--per-kind 6] [--calibration 2] [--all]

Converts ``--per-kind`` ops of every op kind and ``--calibration`` calibration subnets exactly as the bundle
does (trace, coremltools ML Program, save), times each (wall clock and this process's CPU time), and
prints the mean per op kind and the extrapolated total for the whole space. ``--all`` converts every op
instead (the real figure; about as long as the bundle). On a busy machine the CPU-time column is the
steadier one.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from slimformer.latency_lut import build_op, space_ops
from slimformer.latency_lut._build import calibration_configs
from slimformer.latency_lut._bundle import _calibration_net, _coreml, _save_coreml
from slimformer.latency_lut._keys import parse_key
from slimformer.supernet import get_space


def _time(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=6)
    ap.add_argument("--calibration", type=int, default=2)
    ap.add_argument("--all", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ct = _coreml()
    space = get_space("default")
    keys = space_ops(space)
    by_kind: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        by_kind[parse_key(k)[0]].append(k)
    rng = random.Random(0)
    sample = {kind: (ks if args.all else rng.sample(ks, min(args.per_kind, len(ks)))) for kind, ks in by_kind.items()}
    cals = calibration_configs(space, 10)[: args.calibration]
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for kind, ks in sample.items():
            ts = [_time(lambda k=k: _save_coreml(ct, *build_op(k), Path(d) / f"{k}.mlpackage", what=k)) for k in ks]
            rows.append((kind, len(by_kind[kind]), len(ks), sum(t[0] for t in ts) / len(ts),
                         sum(t[1] for t in ts) / len(ts)))
        cal_ts = [_time(lambda i=i, c=c: _save_coreml(ct, *_calibration_net(c), Path(d) / f"cal{i}.mlpackage",
                                                      what=f"calibration subnet {i}")) for i, c in enumerate(cals)]
    print(f"{'op kind':10s} {'ops':>5s} {'timed':>5s} {'wall s/op':>9s} {'cpu s/op':>9s}")
    for kind, n, m, w, c in rows:
        print(f"{kind:10s} {n:5d} {m:5d} {w:9.3f} {c:9.3f}")
    tot_w = sum(n * w for _, n, _, w, _ in rows)
    tot_c = sum(n * c for _, n, _, _, c in rows)
    if cal_ts:
        cw, cc = (sum(t[i] for t in cal_ts) / len(cal_ts) for i in (0, 1))
        print(f"{'subnet':10s} {10:5d} {len(cal_ts):5d} {cw:9.3f} {cc:9.3f}")
        tot_w, tot_c = tot_w + 10 * cw, tot_c + 10 * cc
    how = "measured" if args.all and args.calibration >= 10 else "extrapolated per op kind"
    print(f"default space, {len(keys)} ops + 10 calibration subnets: {tot_w / 60:.1f} min wall, "
          f"{tot_c / 60:.1f} min CPU ({how}; coremltools {ct.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
