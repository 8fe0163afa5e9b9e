"""Does timing an op alone pay for its output's memory? Sum of ops alone vs the whole net, two ways.

``lut build`` times each op alone with ``session.run(None, feeds)``, which allocates the op's output every call
and hands it back as a new numpy array; inside a whole net onnxruntime keeps intermediates in its arena. At
batch 16 an op's output is megabytes, so the allocation (and its first-touch page faults) may be a large share
of a small op's time. This script times, for a few random default-space subnets at one setting:

- the whole net (``session.run``, as validation does),
- the sum of its ops alone with ``session.run`` (as the table is built),
- the sum of its ops alone with I/O binding: input and a preallocated output bound once, ``run_with_iobinding``.

and prints sum / whole for both. A ratio far above 1 that I/O binding brings down points at output allocation.

    python benchmarks/lut_output_alloc.py --threads 2 --batch 16 --subnets 3
"""
from __future__ import annotations

import argparse
import random
import statistics

import numpy as np


def _bound_call(sess, feeds: dict):
    """A no-argument callable running ``sess`` on bound inputs into outputs allocated once."""
    import onnxruntime as ort

    io = sess.io_binding()
    for name, x in feeds.items():
        io.bind_cpu_input(name, x)
    for o, y in zip(sess.get_outputs(), sess.run(None, feeds)):  # one call for the output shapes
        io.bind_ortvalue_output(o.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(y)))
    return lambda: sess.run_with_iobinding(io)


def _op_times(key: str, threads: int, batch: int) -> tuple[float, float]:
    from slimformer.latency_lut._measure import export_onnx, ort_session, time_calls
    from slimformer.latency_lut._ops import build_op

    module, example = build_op(key, batch=batch)
    sess = ort_session(export_onnx(module, example), threads=threads)
    feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), example)}
    plain = statistics.median(time_calls(lambda: sess.run(None, feeds)))
    bound = statistics.median(time_calls(_bound_call(sess, feeds)))
    return plain, bound


def main() -> None:
    import torch

    from slimformer.latency_lut._keys import arch_ops
    from slimformer.latency_lut._measure import runner, time_calls
    from slimformer.supernet import build_model, get_space

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--subnets", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng, cache = random.Random(a.seed), {}
    print(f"threads {a.threads}, batch {a.batch}; times are medians of at least 15 calls (ms)")
    for i in range(a.subnets):
        cfg = get_space("default").sample(rng)
        fn = runner(build_model(cfg).eval(), (torch.randn(1, 3, 224, 224),), threads=a.threads, batch=a.batch)
        whole = statistics.median(time_calls(fn))
        for key in arch_ops(cfg):
            if key not in cache:
                cache[key] = _op_times(key, a.threads, a.batch)
        plain = sum(cache[k][0] for k in arch_ops(cfg))
        bound = sum(cache[k][1] for k in arch_ops(cfg))
        print(f"subnet {i}: whole {whole:.2f}; ops alone, run: {plain:.2f} (x{plain / whole:.2f}); "
              f"ops alone, I/O binding: {bound:.2f} (x{bound / whole:.2f}); {len(arch_ops(cfg))} ops")


if __name__ == "__main__":
    main()
