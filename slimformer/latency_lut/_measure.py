"""Measuring one module: export (ONNX for onnxruntime), warm up, repeat, median and spread.

This module is the package's one ONNX export path (:func:`export_onnx`: TorchScript exporter, opset
:data:`OPSET`, axis 0 of every input and output dynamic, as ``slimformer export`` deploys a model) and
its one timer (:func:`time_calls` and :func:`summarize`: median, interquartile range, 10th/90th
percentiles). Table entries, calibration and validation subnets, budget precision, bundles, exports and
``bench`` all go through them, so an entry and a deployed model are measured the same way. Timing uses ``time.perf_counter_ns`` around one ``run``/forward call (``clock="wall"``, the default), or
``time.thread_time_ns`` (``clock="cpu"``, one thread only): with one intra-op thread all the work runs on
the calling thread, so its CPU time equals the wall time on an idle machine but leaves out the time the
scheduler gives to other processes; on a shared machine that keeps tables and validations from
measuring the neighbours' load.
A measurement whose spread (interquartile range) exceeds ``noise`` times its median is taken again (up
to ``retries`` times) and the attempt with the lowest median is kept: on a shared machine interference
only ever adds time.
Tables and validations also cap each attempt's timed calls at about ``max_time_s`` (:data:`._runner.TIME_CAP_S`):
a whole subnet at batch 16 takes 0.1-2 s a call here, and 15 of them, three times over when noisy, made a
batch-16 table take 20 min and its validation 40. Calls that long get fewer repeats (never under
:data:`._runner.MIN_REPEATS`) and fewer warm-ups (never under 2); calls under 1/15 s keep all 15 repeats.
What the cap changed is measured in docs/lut-fidelity.md's matrices (the rows say which rule they were built with).
A measurement paired with a reference (:func:`time_paired_calls`) warms up only the module it measures and counts
its pairs from the first timed one; the reference is warmed once, where it is made.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import SlimformerError
from ._alloc import steady_allocator
from ._runner import (  # the timing cap and the paired timer are the runner's, so devices time alike
    ALLOW_SPINNING,
    BACKENDS,
    capped,
    onnx_session,
    paired_figures,
    time_paired_sized,
    warm_up,
)

CLOCKS = ("wall", "cpu")
OPSET = 18
#: How every ONNX file is exported; tables and ``bench`` JSON record it next to their figures.
ONNX_EXPORT = {"exporter": "torchscript", "opset": OPSET, "dynamic_axes": "batch (axis 0 of every input and output)"}


def _as_tuple(example) -> tuple[torch.Tensor, ...]:
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _batched(example: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """``example`` (inputs of one image) at ``batch`` images: axis 0 of every input repeated ``batch`` times, so an
    input that stacks an image's attention windows on axis 0 (EfficientViT's heads) holds ``batch x`` windows."""
    if batch == 1:
        return example
    return tuple(x.repeat(batch, *[1] * (x.dim() - 1)) for x in example)


def export_onnx(module: nn.Module, example, *, input_names: Sequence[str] | None = None,
                output_names: Sequence[str] | None = None) -> bytes:
    """ONNX bytes of ``module`` on ``example``, exported as :data:`ONNX_EXPORT` says.

    The TorchScript exporter (fast, and mature for these convolution/attention graphs); where a torch
    lacks it, the dynamo exporter with the same dynamic batch. Names default to ``x0..`` and ``y0..``."""
    example = _as_tuple(example)
    module = module.eval()
    with torch.no_grad():
        out = module(*example)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    ins = list(input_names or [f"x{i}" for i in range(len(example))])
    outs = list(output_names or [f"y{i}" for i in range(n_out)])
    f = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, f, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                              input_names=ins, output_names=outs,
                              dynamic_axes={name: {0: "batch"} for name in ins + outs})
        except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter
            f = io.BytesIO()
            batch = torch.export.Dim("batch", min=1)
            prog = torch.onnx.export(module, example, input_names=ins, output_names=outs, dynamo=True,
                                     opset_version=OPSET, dynamic_shapes=tuple({0: batch} for _ in example))
            prog.save(f)
    return f.getvalue()


def onnx_nodes(model: bytes) -> list[tuple[str, list[tuple[str, str]]]]:
    """The nodes of an ONNX model as ``(op type, [(attribute, value)])`` in graph order, constants' tensors
    included: two exports with equal lists run the same graph (how a one-image trace is checked against a
    batched one)."""
    import onnx

    return [(n.op_type, [(a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute])
            for n in onnx.load_from_string(model).graph.node]


def ort_session(model: bytes | str | os.PathLike, *, threads: int = 1):
    """An onnxruntime CPU session (ONNX bytes or a file) with ``threads`` intra-op threads, all optimisations on
    (the bundle runner's, so that tables built here and on a device open sessions alike)."""
    return onnx_session(model, threads)


def runner(module: nn.Module, example, *, backend: str = "onnxruntime", threads: int = 1,
           batch: int = 1) -> Callable[[], Any]:
    """A no-argument callable that runs ``module`` once on ``example`` with the given backend."""
    if backend not in BACKENDS:
        raise SlimformerError(f"unknown backend {backend!r}: choose {' or '.join(BACKENDS)}")
    if threads < 1 or batch < 1:
        raise SlimformerError("threads and batch must be at least 1")
    one = _as_tuple(example)
    batched = _batched(one, batch)
    if backend == "onnxruntime":
        # exported on one image: axis 0 is dynamic, so the graph is the one a batched trace gives (tested), and
        # tracing does 1/batch of the work (benchmarks/lut_op_cost.py --subnets N [--export-batched];
        # docs/lut-fidelity.md)
        sess = ort_session(export_onnx(module, one), threads=threads)
        feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), batched)}
        run, outs = sess.run, None
        return lambda: run(outs, feeds)
    module = module.eval()
    torch.set_num_threads(threads)
    if backend == "torch-cuda":
        return _cuda_runner(module, batched)
    steady_allocator()  # eager torch's activations: no per-call page faults, whatever the process ran before

    def fwd():
        with torch.inference_mode():
            return module(*batched)
    return fwd


def cuda_device() -> torch.device:
    """The CUDA GPU the ``torch-cuda`` backend runs on, or one clear line where this machine has none."""
    if not torch.cuda.is_available():
        raise SlimformerError("backend torch-cuda needs a CUDA GPU and this machine has none (torch "
                              f"{torch.__version__}); use onnxruntime or torch here")
    return torch.device("cuda", torch.cuda.current_device())


def _cuda_runner(module: nn.Module, example: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    dev = cuda_device()
    module = module.to(dev)
    example = tuple(x.to(dev) for x in example)

    def fwd():
        with torch.inference_mode():
            out = module(*example)
        torch.cuda.synchronize(dev)
        return out
    return fwd


def check_clock(clock: str, threads: int) -> None:
    if clock not in CLOCKS:
        raise SlimformerError(f"unknown clock {clock!r}: choose {' or '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise SlimformerError("the cpu clock measures the calling thread only: use it with --threads 1")


def _count(per_call_s: float, repeats: int, min_time_s: float, max_repeats: int, max_time_s: float | None) -> int:
    """How many calls of ``per_call_s`` seconds to time (see :func:`time_calls`)."""
    per_call_s = max(per_call_s, 1e-7)
    return capped(int(min(max_repeats, max(repeats, min_time_s / per_call_s))), per_call_s, max_time_s)


def _now(clock: str):
    return time.thread_time_ns if clock == "cpu" else time.perf_counter_ns


def time_calls(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 15, min_time_s: float = 0.02,
               max_repeats: int = 300, max_time_s: float | None = None, clock: str = "wall") -> list[float]:
    """Per-call times in ms after warm-up; at least ``repeats`` calls and about ``min_time_s`` of timing,
    but with ``max_time_s`` no more than about that much timing (and never under :data:`._runner.MIN_REPEATS` calls)."""
    n = _count(warm_up(fn, max(1, warmup), max_time_s), repeats, min_time_s, max_repeats, max_time_s)
    out = []
    now = _now(clock)
    for _ in range(n):
        a = now()
        fn()
        out.append((now() - a) / 1e6)
    return out


def time_paired_calls(fn: Callable[[], Any], ref: Callable[[], Any], *, warmup: int = 3, repeats: int = 15,
                      min_time_s: float = 0.02, max_repeats: int = 300, max_time_s: float | None = None,
                      clock: str = "wall", ref_warm: int = 0) -> tuple[list[float], list[float]]:
    """Per-call ms of ``fn`` and of the reference ``ref``, called in alternation (:func:`._runner.time_paired`,
    ``ref_warm`` untimed reference calls before each timed one); ``fn`` is warmed up alone (``ref`` must be
    :func:`._runner.warmed`) and the number of pairs is counted as :func:`time_calls` counts calls, from the
    first timed pair (:func:`._runner.time_paired_sized`)."""
    warm_up(fn, max(1, warmup), max_time_s)
    return time_paired_sized(fn, ref, lambda s: _count(s, repeats, min_time_s, max_repeats, max_time_s),
                             _now(clock), ref_warm)


def summarize(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, interquartile range (``spread_ms``), 10th/90th percentiles, minimum and count of ``times_ms``."""
    q = np.percentile(np.asarray(times_ms, dtype=float), [10, 25, 50, 75, 90])
    return {"median_ms": float(statistics.median(times_ms)), "spread_ms": float(q[3] - q[1]),
            "p10_ms": float(q[0]), "p90_ms": float(q[4]), "min_ms": float(min(times_ms)), "count": len(times_ms)}


def measure_callable(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 15, min_time_s: float = 0.02,
                     noise: float = 0.1, retries: int = 2, clock: str = "wall",
                     max_time_s: float | None = None, reference: Callable[[], Any] | None = None,
                     ref_warm: int = 0) -> dict[str, Any]:
    """Median/spread/count of ``fn``; noisy attempts are retried (see the module docstring). With a
    ``reference`` callable, ``fn``'s calls alternate with it and ``ref_ms`` and ``ratio`` are added
    (:func:`._runner.paired_figures`)."""
    best = None
    tkw = {"warmup": warmup, "repeats": repeats, "min_time_s": min_time_s, "max_time_s": max_time_s, "clock": clock}
    for attempt in range(retries + 1):
        if reference is None:
            s = summarize(time_calls(fn, **tkw))
        else:
            a, b = time_paired_calls(fn, reference, ref_warm=ref_warm, **tkw)
            s = {**summarize(a), **paired_figures(a, b)}
        s["attempts"] = attempt + 1
        if best is None or s["median_ms"] < best["median_ms"]:
            best = {**s}
        best["attempts"] = attempt + 1
        if s["spread_ms"] <= noise * s["median_ms"]:
            break
    return best


def measure_module(module: nn.Module, example, *, backend: str = "onnxruntime", threads: int = 1, batch: int = 1,
                   warmup: int = 3, repeats: int = 15, min_time_s: float = 0.02, noise: float = 0.1,
                   retries: int = 2, clock: str = "wall", max_time_s: float | None = None,
                   reference: Callable[[], Any] | None = None, ref_warm: int = 0) -> dict[str, Any]:
    """Latency of one call of ``module(*example)``: ``{median_ms, spread_ms, count, attempts}`` (and
    ``ref_ms``, ``ratio`` when timed in alternation with a ``reference`` callable).

    ``backend="onnxruntime"`` exports to ONNX and runs a CPU session with ``threads`` intra-op threads;
    ``"torch"`` runs eager PyTorch in inference mode with ``torch.set_num_threads(threads)``; ``"torch-cuda"``
    the same on the CUDA GPU, synchronising after each call.
    ``clock`` is ``"wall"`` or ``"cpu"`` (see the module docstring)."""
    check_clock(clock, threads)
    fn = runner(module, example, backend=backend, threads=threads, batch=batch)
    return measure_callable(fn, warmup=warmup, repeats=repeats, min_time_s=min_time_s, noise=noise, retries=retries,
                            clock=clock, max_time_s=max_time_s, reference=reference, ref_warm=ref_warm)


class _Identity(nn.Module):
    def forward(self, x):
        return torch.relu(x)


def measure_overhead(*, backend: str = "onnxruntime", threads: int = 1, batch: int = 1, **kw) -> dict[str, Any]:
    """The fixed cost of one call (an identity-like op on 8 numbers): subtracted from every entry."""
    kw = {"repeats": 200, "min_time_s": 0.05, **kw}
    return measure_module(_Identity(), (torch.zeros(1, 8),), backend=backend, threads=threads, batch=batch, **kw)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_versions(backend: str) -> dict[str, str]:
    v = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform()}
    if backend == "onnxruntime":
        import onnx
        import onnxruntime

        v.update(onnxruntime=onnxruntime.__version__, onnx=onnx.__version__, opset=str(OPSET),
                 dynamic_axes=ONNX_EXPORT["dynamic_axes"], allow_spinning=ALLOW_SPINNING)
    if backend == "torch-cuda":
        dev = cuda_device()
        v.update(gpu=torch.cuda.get_device_name(dev), cuda=str(torch.version.cuda),
                 cudnn=str(torch.backends.cudnn.version()))
    v["cpu_count"] = str(os.cpu_count())
    return v
