"""Latency measurement on this machine: onnxruntime sessions and torch, median over repeats.

All figures are milliseconds per call; a call is one batch. ``spread`` is reported as the 10th and
90th percentiles, so one noisy neighbour on a shared machine does not hide in a mean.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..latency_lut._measure import ort_session  # one session setup for tables and exports


def time_fn(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20) -> dict:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` calls; median and spread in ms."""
    for _ in range(max(0, warmup)):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times)


def summarize(times_ms: list[float]) -> dict:
    a = np.asarray(times_ms, dtype=float)
    return {"median_ms": float(statistics.median(times_ms)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()), "repeats": len(times_ms)}


def ort_runner(session, batch: int, img_size: int, in_chans: int = 3, seed: int = 0) -> Callable[[], object]:
    inp = session.get_inputs()[0]
    x = np.random.default_rng(seed).standard_normal((batch, in_chans, img_size, img_size)).astype(np.float32)
    return lambda: session.run(None, {inp.name: x})


def measure_onnx(path: str | Path, *, img_size: int, batch: int = 1, threads: int = 1, warmup: int = 3,
                 repeats: int = 20, in_chans: int = 3) -> dict:
    sess = ort_session(path, threads=threads)
    out = time_fn(ort_runner(sess, batch, img_size, in_chans), warmup=warmup, repeats=repeats)
    out.update(backend="onnxruntime", batch=batch, threads=threads)
    return out


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_runner(model, batch: int, img_size: int, in_chans: int = 3, device: str = "cpu"):
    import torch

    x = torch.randn(batch, in_chans, img_size, img_size, device=device)
    model = model.to(device).eval()

    def run():
        with torch.inference_mode():
            y = model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return y

    return run


def measure_torch(model, *, img_size: int, batch: int = 1, threads: int = 1, warmup: int = 3, repeats: int = 20,
                  in_chans: int = 3, device: str = "cpu") -> dict:
    with torch_threads(threads):
        out = time_fn(torch_runner(model, batch, img_size, in_chans, device), warmup=warmup, repeats=repeats)
    out.update(backend="torch", batch=batch, threads=threads, device=device)
    return out


def host_description() -> str:
    """A short description of this machine for model cards and benchmark JSON."""
    import os

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()}"
