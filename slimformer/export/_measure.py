"""Latency of exported files and torch models on this machine, timed by the tables' own timer.

All figures are milliseconds per call; a call is one batch. :func:`time_fn` is
:func:`slimformer.latency_lut.measure_callable` (warm-up, repeats, a noisy attempt retried, the
lowest median kept), so ``bench``, an export's check and a table entry are measured the same way; the
spread is reported both as the interquartile range and as the 10th/90th percentiles.
"""
from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..latency_lut._alloc import allocator_policy, steady_allocator  # the tables' malloc policy
from ..latency_lut._measure import measure_callable, ort_session  # one session setup and one timer

NOISE, RETRIES = 0.1, 2  # an attempt with IQR > NOISE x median is taken again, up to RETRIES times
TIMER = (f"median of the timed calls; a noisy attempt (IQR > {NOISE:.0%} of the median) retried up to {RETRIES} "
         "times, the lowest median kept")


def time_fn(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20, noise: float = NOISE,
            retries: int = RETRIES) -> dict:
    """``repeats`` timed calls of ``fn`` after ``warmup`` (retried when noisy); median and spreads in ms.

    ``repeats`` is exact (no minimum timing window), so a figure says how many calls it is the median of."""
    out = measure_callable(fn, warmup=warmup, repeats=repeats, min_time_s=0.0, noise=noise, retries=retries)
    return {**out, "repeats": out["count"]}


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
    if device == "cpu":
        steady_allocator()

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
    if device == "cpu":
        out["allocator"] = allocator_policy()
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
