"""One allocator policy for every eager-torch measurement on glibc (twenty-fourth session).

Eager PyTorch on the CPU takes each activation from ``malloc`` and frees it after use. glibc serves a block
above its *mmap threshold* with a fresh ``mmap``, whose pages the kernel faults in and zeroes on first touch,
and it moves that threshold up each time such a block is freed (to at most 32 MiB). So whether a subnet's
activations cost thousands of page faults per call depends on what the process freed before: the same subnet
at 2 threads / batch 4, timed beside the same reference subnet in four fresh processes, took 5 728 to 25 319 minor
faults per call and its ratio to the reference ranged over 12 % (``benchmarks/torch_allocator.py``). A
table's ops and calibration subnets are timed after minutes of other ops, its validation in a new process:
the torch cells at batch 4 and 16 measured their subnets 3-8 % over their predictions.

:func:`steady_allocator` turns ``mmap`` off for ``malloc`` and never trims the heap, so after warm-up every
activation reuses heap pages (0 faults per call, whatever ran before). The torch backend sets it where a runner
is made (:func:`._measure.runner`); tables record it (``build.allocator``). A user deploying eager torch gets
the same speed with the same setting before start (``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=1073741824``) or with jemalloc/tcmalloc. onnxruntime keeps its own arena and is
left as it is. ``SLIMFORMER_STEADY_MALLOC=0`` in the environment keeps glibc's defaults (tables then record none).
"""
from __future__ import annotations

import ctypes
import os
import platform

#: what a table records in ``build.allocator`` when the policy is on
STEADY = "glibc malloc: mmap_max 0, trim_threshold 1 GiB"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # <malloc.h>
_state: dict[str, str | None] = {}


def steady_allocator() -> str | None:
    """Turn glibc's mmap-backed allocations and heap trimming off for this process (once; it cannot be undone).

    Returns :data:`STEADY`, or ``None`` where the C library is not glibc (macOS, musl) or refuses."""
    if "policy" not in _state:
        _state["policy"] = _apply()
    return _state["policy"]


def allocator_policy() -> str | None:
    """The policy set in this process so far (``None``: glibc's defaults, or not glibc)."""
    return _state.get("policy")


def _apply() -> str | None:
    if os.environ.get("SLIMFORMER_STEADY_MALLOC", "1") == "0":
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    return STEADY if ok else None
