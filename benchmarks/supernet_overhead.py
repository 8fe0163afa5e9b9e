"""Forward time of the supernet running an active subnet over the extracted standalone subnet.

Same config, same weights, CPU, eval mode, batch 1 at 224 px by default; the two are timed interleaved
(A, B, A, B, ...) so machine noise hits both alike, and the ratio of medians is printed per preset.

    python benchmarks/supernet_overhead.py [--repeats 30] [--threads 1] [--batch 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from slimformer.supernet import SearchSpace, Supernet, get_arch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["l1", "l3", "l7"])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sup = Supernet(SearchSpace()).eval()
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, 224 px, "
          f"median of {args.repeats} interleaved runs")
    print(f"{'preset':8} {'supernet ms':>12} {'extracted ms':>13} {'ratio':>7}")
    x = torch.randn(args.batch, 3, 224, 224)
    for name in args.presets:
        cfg = get_arch(name)
        sup.set_active(cfg)
        sub = sup.extract_subnet(cfg).eval()
        times = {"sup": [], "sub": []}
        with torch.inference_mode():
            for _ in range(3):
                sup(x), sub(x)
            for _ in range(args.repeats):
                for key, model in (("sup", sup), ("sub", sub)):
                    t0 = time.perf_counter()
                    model(x)
                    times[key].append((time.perf_counter() - t0) * 1e3)
        a, b = statistics.median(times["sup"]), statistics.median(times["sub"])
        print(f"{name:8} {a:12.2f} {b:13.2f} {a / b:7.2f}")


if __name__ == "__main__":
    main()
