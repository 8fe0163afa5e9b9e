"""Ops timed in context: onnxruntime's per-node profiler on whole subnets, node times attributed to table keys.

An entry of a table is its op measured alone, over and over. Inside a network the same op runs after
other ops (its weights and inputs no longer in cache, the thread pool woken by the op before) and, at
several threads or a batch above 1, its cost relative to the others changes: ops too small to
parallelise gain nothing from a second thread, memory-bound ops (GELU, adds, layout reorders) grow with
the batch while convolutions and matrix products amortise. :func:`profile_arch` runs a whole subnet
with onnxruntime's profiler on and sums the kernel time of every node into the key of the op it belongs
to (:func:`node_key`: by the module path the exporter writes into node names; nodes the optimiser made
up, such as layout reorders and fused GELUs, belong to the op of the named node before them).

:func:`context_factors` turns that into one factor per op kind (in-context time / time alone, summed
over the profiled subnets): ``lut build`` multiplies every entry by its kind's factor, keeping the
op-alone time as ``alone_ms`` (table format 2).
"""
from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..supernet import ArchConfig, build_model
from ._keys import FAMILY_KEYS, arch_ops_by_stage, op_kind
from ._measure import _batched, export_onnx, ort_session
from ._runner import PROFILE_RUNS, PROFILE_WARMUP, profile_onnx, profile_runs

_STAGE = re.compile(r"^/stages/stages\.(\d+)/(downsample|blocks/blocks\.(\d+))(/|$)(.*)")
_MB3D_PART = (("norm1", 0), ("token_mixer/qkv", 0), ("token_mixer/proj", 2), ("ls1", 2), ("norm2", 3),
              ("mlp", 3), ("ls2", 3), ("Add_1", 3), ("Add", 2), ("token_mixer", 1))


def stage_modules(cfg: ArchConfig) -> list[list[tuple[str, list[str]]]]:
    """Per stage, ``(module, keys)`` in network order: ``("downsample", [ds])``, then one per block module
    (``"blocks.J"``: a flatten, an MB4D or the four parts of an MB3D). Mirrors ``EfficientFormerNet``."""
    by_stage: dict[int, list[str]] = {}
    for part, k in arch_ops_by_stage(cfg):
        if part.startswith("stage"):
            by_stage.setdefault(int(part[5:]) - 1, []).append(k)
    out = []
    for si in range(len(cfg.stages)):
        keys, mods, j = by_stage.get(si, []), [], 0
        i = 0
        if si > 0:
            mods.append(("downsample", [keys[0]]))
            i = 1
        while i < len(keys):
            n = 4 if op_kind(keys[i]) == "mb3d.qkv" else 1
            mods.append((f"blocks.{j}", keys[i:i + n]))
            i, j = i + n, j + 1
        out.append(mods)
    return out


def node_key(cfg: ArchConfig):
    """A function: onnx node name (exporter's module path) -> op key, or ``None`` for a node that belongs
    to the op before it (a made-up node). Each family names its own modules (``FAMILY_KEYS``)."""
    if cfg.family in FAMILY_KEYS:
        return FAMILY_KEYS[cfg.family].node_key(cfg)
    mods = stage_modules(cfg)
    ops = arch_ops_by_stage(cfg)
    stem, head = ops[0][1], ops[-1][1]

    def key(name: str) -> str | None:
        if name.startswith("/stem/"):
            return stem
        m = _STAGE.match(name)
        if m is None:
            return head if name.startswith("/") else None
        si, rest = int(m.group(1)), m.group(5)
        mod = "downsample" if m.group(3) is None else f"blocks.{m.group(3)}"
        keys = dict(mods[si]).get(mod)
        if keys is None:
            return None
        if len(keys) == 1:
            return keys[0]
        for prefix, part in _MB3D_PART:
            if rest == prefix or rest.startswith((prefix + "/", prefix + "_")):
                return keys[part]
        return keys[1]
    return key


def attribute_runs(runs: Sequence[dict], cfg: ArchConfig) -> list[dict[str, Any]]:
    """Per run of :func:`~._runner.profile_runs` (``{"run_us", "nodes": [[name, us], ...]}``): ``{"run_ms",
    "nodes_ms", "keys": {key: ms}}``, every node's time given to the op key its name belongs to."""
    key_of, first = node_key(cfg), arch_ops_by_stage(cfg)[0][1]
    out = []
    for r in runs:
        keys, cur = {}, first
        for name, us in r["nodes"]:
            k = key_of(name)
            cur = k if k is not None else cur  # a made-up node belongs to the op before it
            keys[cur] = keys.get(cur, 0.0) + us / 1e3
        out.append({"run_ms": r["run_us"] / 1e3, "nodes_ms": sum(keys.values()), "keys": keys})
    return out


def attribute(events: Sequence[dict], cfg: ArchConfig) -> list[dict[str, Any]]:
    """Per profiled run: ``{"run_ms", "nodes_ms", "keys": {key: ms}}`` from onnxruntime profile ``events``."""
    return attribute_runs(profile_runs(list(events)), cfg)


def summarize_runs(per_run: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over attributed runs: per key its in-context ms, ``nodes_ms`` and ``run_ms``; ``runs``: how many."""
    keys = sorted({k for r in per_run for k in r["keys"]})
    return {"keys": {k: statistics.median(r["keys"].get(k, 0.0) for r in per_run) for k in keys},
            "nodes_ms": statistics.median(r["nodes_ms"] for r in per_run),
            "run_ms": statistics.median(r["run_ms"] for r in per_run), "runs": len(per_run)}


def profile_arch(cfg: ArchConfig, *, threads: int = 1, batch: int = 1, runs: int = PROFILE_RUNS,
                 warmup: int = PROFILE_WARMUP, onnx: bytes | None = None) -> dict[str, Any]:
    """Whole-subnet profile (onnxruntime): per key the median over ``runs`` of its in-context ms,
    ``nodes_ms`` (median per-run sum of node times), ``run_ms`` (median of the profiler's whole runs)
    and ``wall_ms`` (median wall time of the same number of runs of an unprofiled session)."""
    x = torch.randn((1, cfg.in_chans, cfg.img_size, cfg.img_size), generator=torch.Generator().manual_seed(0))
    model = onnx if onnx is not None else export_onnx(build_model(cfg).eval(), (x,))  # one image, as runner()
    x = _batched((x,), batch)[0]
    plain = ort_session(model, threads=threads)
    feeds = {plain.get_inputs()[0].name: x.numpy()}
    for _ in range(warmup):
        plain.run(None, feeds)
    wall = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        plain.run(None, feeds)
        wall.append((time.perf_counter_ns() - t) / 1e6)
    per_run = attribute(profile_onnx(model, feeds, threads, warmup + runs), cfg)[warmup:]
    return {**summarize_runs(per_run), "wall_ms": statistics.median(wall)}


def context_factors(profiles: Sequence[dict[str, Any]], alone: dict[str, float], *,
                    lo: float = 0.5, hi: float = 3.0) -> dict[str, Any]:
    """Per op kind: in-context ms / alone ms summed over the keys of ``profiles`` (``{"keys": {key: ms}}``),
    clipped to ``[lo, hi]``; a kind no profile ran keeps 1."""
    ctx: dict[str, float] = {}
    ref: dict[str, float] = {}
    for p in profiles:
        for k, ms in p["keys"].items():
            if k in alone:
                kind = op_kind(k)
                ctx[kind] = ctx.get(kind, 0.0) + ms
                ref[kind] = ref.get(kind, 0.0) + alone[k]
    factors = {kind: min(hi, max(lo, ctx[kind] / ref[kind])) for kind in ctx if ref[kind] > 0}
    return {"factors": factors, "subnets": len(profiles),
            "method": "onnxruntime per-node profile of whole subnets, node time summed per op kind / ops alone"}


def apply_context(table, profiles: Sequence[dict[str, Any]], calibration: Sequence[dict[str, Any]], *,
                  margin: float = 0.1, method: str = "build-time calibration subnets (in-sample fit)") -> bool:
    """Scale ``table``'s entries by the per-kind factors of ``profiles`` and refit its correction on
    ``calibration``; keep that if its in-sample MAPE is lower than with the ops alone by more than
    ``margin`` (a share of it: a smaller gain is within the noise of 30 subnets), else restore.
    Records the factors and both fits in ``table.meta["context"]``; returns whether they were kept."""
    from ._fidelity import calibrate

    alone = {k: float(e.get("alone_ms", e["median_ms"])) for k, e in table.entries.items()}
    ctx = context_factors(profiles, alone)
    saved = ({k: dict(e) for k, e in table.entries.items()}, table.correction, table.error)
    for k, e in table.entries.items():
        e["alone_ms"], e["median_ms"] = alone[k], alone[k] * ctx["factors"].get(op_kind(k), 1.0)
    table.refresh()
    calibrate(table, calibration, method=f"{method}, entries in context")
    fits = {"alone": (saved[2] or {}).get("corrected"), "in_context": (table.error or {}).get("corrected")}
    kept = bool(fits["alone"] and fits["in_context"]
                and fits["in_context"]["mape_pct"] < (1 - margin) * fits["alone"]["mape_pct"])
    if not kept:
        table.entries, table.correction, table.error = saved
        table.refresh()
    table.meta["context"] = {**ctx, "kept": kept, "in_sample": fits,
                             "nodes_vs_run": [round(p["nodes_ms"] / p["run_ms"], 4) for p in profiles if p["run_ms"]]}
    return kept
