"""Fidelity of a table: whole subnets measured end to end against the table's predictions.

``measure_arch`` measures a standalone subnet with the same code as single ops; ``fit_correction`` fits
``measured ~ scale * raw + offset + per_op * n_ops`` on relative error (scipy ``least_squares``, robust
loss), where ``raw`` is the table's sum of entries and ``n_ops`` the number of ops summed; ``fidelity``
gives the figures (share within +-5% / +-10%, MAPE, worst error, Kendall tau).

Paired timing: whole subnets (calibration and validation) are timed call by call in alternation with a
*reference* subnet of the same space (:func:`reference_config`, fixed per table), and each keeps the ratio
of its median to the reference's. This machine's speed moves by 4-5 % on a scale of seconds and less, and
two networks timed in alternation move together: their ratio repeats to about 1 % at 1 thread where a
network's own median repeats to 5 % (docs/lut-fidelity.md). A paired record's latency *at the build's level*
is ``ratio * reference_ms``, where ``reference_ms`` is the reference's median over the build
(:func:`at_reference`); the correction is fitted on those, and validation compares against them.

Ops can be paired the same way, with a *reference op* (:func:`reference_op`; ``build_table(pair_ops=...)``).
At 2 threads an op's own median, timed alone at one moment of a build, repeats between rounds with sd 37 %
(a subnet's sum of entries, 6.5 %), its ratio to an op timed in the same calls with 13 % (2.3 %;
``benchmarks/lut_op_pairing.py``). A paired entry is ``ratio * level - overhead``, the level being the
reference op's median over the build, times how much slower the reference runs beside an op of its size
(:func:`entries_at_reference`): a large op slows the reference timed after it, and left in, the widest
subnets come out too cheap and a search picks them (docs/lut-fidelity.md). The default at more than one thread.

Why a per-op term: an op measured alone, over and over, finds its weights in cache; inside a network
every op's weights were pushed out by the ops before it, and the runtime hands tensors from op to op.
On this project's 2-core CPU that costs 0.06-0.07 ms per op, which a scale and an offset cannot express
(a network of many small ops pays it more often than one of few large ops).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..supernet import ArchConfig, arch_from_dict, build_model
from ._measure import measure_module, runner
from ._runner import warmed

REFERENCE_SEED = 20_261_206  # the reference subnet comes from its own stream, apart from calibration and validation


def _example(cfg: ArchConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn((1, cfg.in_chans, cfg.img_size, cfg.img_size), generator=g)


def measure_arch(cfg: ArchConfig, *, backend: str = "onnxruntime", threads: int = 1, batch: int = 1,
                 **kw) -> dict[str, Any]:
    """End-to-end latency of the standalone model of ``cfg`` (random weights; eval mode); with
    ``reference=`` (a :func:`reference_runner`) timed in alternation with it."""
    return measure_module(build_model(cfg).eval(), (_example(cfg),), backend=backend, threads=threads, batch=batch,
                          **kw)


def reference_config(space) -> ArchConfig:
    """The subnet every whole-subnet measurement of a table is paired with: one random subnet of ``space``,
    drawn from its own seed, so a typical size for the space."""
    return space.sample(random.Random(REFERENCE_SEED))


#: the most FLOPs per call (op FLOPs x batch) the reference op may have. Every timed op call has two reference
#: calls beside it (one untimed, ``REF_WARM``), so a long reference is most of a paired build's time. Measured at
#: 2 threads / batch 4 (``benchmarks/lut_op_cost.py --ref-op``, 80 ops, two seeds; docs/lut-fidelity.md): the median
#: op (1.98 ms at build time) against the largest within this (1.10 ms): op measuring 355 and 316 s against 212 and
#: 172 s for a whole table, the ratio of an op measured twice moving by 2.24 and 2.18 % against 2.29 and 1.38 %
#: (median); a smaller attention op repeated worse, 5.42 and 2.87 %. The 2 x 4 onnxruntime cell built both ways the
#: same evening: 508 s against 739 s, and within +-10 % for 97 against 95 of 100 subnets, tau 0.954 against 0.943.
#: onnxruntime only: eager torch's kernels slow a small reference beside large ops more (the 2 x 4 torch cell the
#: same evening: 60 % / 90 %, tau 0.917 against 67 % / 94 %, tau 0.933 with the median op, although built in 431 s
#: against 829 s).
REF_OP_MAX_FLOPS = 220e6
#: ... and no less than this share of the median op's FLOPs, else the median op: a reference much smaller than
#: the ops beside it is slowed by them more than the size term takes out. At batch 16 the only op within
#: ``REF_OP_MAX_FLOPS`` has 0.105 of the median's FLOPs: the 2 x 16 cell built with it (910 s) validated at
#: 78 % / 98 %, tau 0.939, the sixteenth session's median-op table the same evening 86 % / 98 %, tau 0.953
#: (docs/lut-fidelity.md, eighteenth session); at batch 4 the op kept has 0.63 of the median's.
REF_OP_MIN_SHARE = 0.5


def reference_op(space, batch: int = 1, backend: str = "onnxruntime") -> str:
    """The op every op measurement of a table is paired with: of the reference subnet's ops, the one with
    the median FLOPs (shapes only, on the meta device), so a typical op of the space; with onnxruntime, where
    that op would run over :data:`REF_OP_MAX_FLOPS` at ``batch``, the largest op that does not, if it has at
    least :data:`REF_OP_MIN_SHARE` of the median op's FLOPs."""
    flops = reference_subnet_flops(space)
    median = flops[len(flops) // 2]
    if backend != "onnxruntime" or median[0] * batch <= REF_OP_MAX_FLOPS:
        return median[1]
    under = [fk for fk in flops if REF_OP_MIN_SHARE * median[0] <= fk[0] and fk[0] * batch <= REF_OP_MAX_FLOPS]
    return max(under, key=lambda fk: fk[0])[1] if under else median[1]  # the first of equals: keys sort by name


def reference_subnet_flops(space) -> list[tuple[float, str]]:
    """``(FLOPs, key)`` of each distinct op of the reference subnet, smallest first (shapes only, meta device)."""
    from ._features import compute_flops, op_features
    from ._keys import arch_ops
    from ._ops import build_op

    return sorted((compute_flops(op_features(*build_op(k))), k) for k in set(arch_ops(reference_config(space))))


def reference_beside(entries: dict[str, dict[str, Any]], level: float) -> dict[str, float]:
    """How the reference op's median beside an op follows the op's size over a build: ``intercept`` and
    ``slope`` of ``log(ref_ms / level)`` on ``log(ratio)``, a Theil-Sen line (scipy, robust to the ops
    timed in a slow phase). Ops are timed in a shuffled order, so the machine's speed when an op was timed
    does not depend on its size; what does is the op's own effect on the reference timed after it. Measured
    (docs/lut-fidelity.md): the reference ran 3-4 % slower beside the largest ops than beside the smallest, so
    the widest subnets, which a search picks, came out too cheap. ``log(ratio)`` is the size, not the op's
    own median, because the machine's speed cancels in a ratio. Flat (0, 0) with fewer than 10 paired ops."""
    from scipy.stats import theilslopes

    paired = [e for e in entries.values() if "ratio" in e and e["ratio"] > 0 and e["ref_ms"] > 0]
    if len(paired) < 10 or len({e["ratio"] for e in paired}) < 2:
        return {"intercept": 0.0, "slope": 0.0}
    x = np.log([e["ratio"] for e in paired])
    y = np.log([e["ref_ms"] / level for e in paired])
    slope, intercept, _, _ = theilslopes(y, x)
    return {"intercept": float(intercept), "slope": float(slope)}


def entries_at_reference(entries: dict[str, dict[str, Any]], overhead_ms: float) -> dict[str, Any] | None:
    """Entries timed in alternation with the reference op (``ratio``, ``ref_ms``) put at the build's level, in
    place: ``own_ms`` keeps the op's own ``median_ms`` (the overhead taken off), ``median_ms`` becomes
    ``ratio * level * beside(ratio) - overhead``, where ``level`` is the reference op's median of medians and
    ``beside`` the reference's median beside an op of that size over ``level`` (:func:`reference_beside`).
    Returns ``{"median_ms": level, "beside": {...}}``, or ``None`` when no entry was paired (then nothing
    changes)."""
    level = reference_ms(list(entries.values()))
    if level is None:
        return None
    beside = reference_beside(entries, level)
    for e in entries.values():
        if "ratio" in e:
            e["own_ms"] = e.get("own_ms", e["median_ms"])
            factor = np.exp(beside["intercept"] + beside["slope"] * np.log(max(e["ratio"], 1e-12)))
            e["median_ms"] = max(float(e["ratio"] * level * factor) - overhead_ms, 0.0)
    return {"median_ms": level, "beside": beside}


def reference_runner(cfg: ArchConfig, *, backend: str = "onnxruntime", threads: int = 1,
                     batch: int = 1) -> Callable[[], Any]:
    """A no-argument callable that runs the reference subnet ``cfg`` once, as :func:`measure_arch` runs a subnet;
    warmed up (:func:`._runner.warmed`), as a paired measurement expects its reference."""
    return warmed(runner(build_model(cfg).eval(), (_example(cfg),), backend=backend, threads=threads, batch=batch))


def table_reference(table, *, backend: str | None = None, threads: int | None = None,
                    batch: int | None = None) -> tuple[Callable[[], Any], float] | None:
    """The reference subnet ``table``'s build kept, ready to pair a measurement with: a :func:`reference_runner` at
    the table's setting (or the one given) and the reference's build-time median in ms; ``None`` when the build
    kept none (tables built before the thirteenth session, imports, estimates)."""
    ref = (table.meta.get("build") or {}).get("reference")
    if not ref or not ref.get("median_ms"):
        return None
    fn = reference_runner(arch_from_dict(ref["arch"]), backend=backend or table.backend,
                          threads=threads or table.threads or 1, batch=batch or table.batch)
    return fn, float(ref["median_ms"])


def reference_ms(records: Sequence[dict[str, Any]]) -> float | None:
    """The reference's latency over a build: the median of its medians in the paired ``records``
    (``None`` when none was paired)."""
    refs = [float(r["ref_ms"]) for r in records if "ref_ms" in r]
    return float(np.median(refs)) if refs else None


def at_reference(records: Sequence[dict[str, Any]], ref_ms: float | None) -> list[dict[str, Any]]:
    """``records`` with each paired one's ``median_ms`` replaced by ``ratio * ref_ms``, its latency at the
    build's level (the measured median kept as ``unpaired_ms``); unpaired records, or ``ref_ms`` None, unchanged."""
    if ref_ms is None:
        return list(records)
    return [{**r, "unpaired_ms": r["median_ms"], "median_ms": r["ratio"] * ref_ms} if "ratio" in r else r
            for r in records]


def fastest(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per subnet (``"index"``; records without one stand alone): the round with the lowest median.

    Interference from other processes only ever adds time, and on a shared machine it comes in phases
    that can last a whole measurement (the median of 15 calls moves by up to 10%). Two rounds minutes
    apart rarely both fall in one, so the faster round is the better estimate of the subnet's own
    latency (the reasoning of ``timeit``'s advice to take the minimum of repeats)."""
    best: dict[Any, dict[str, Any]] = {}
    for i, r in enumerate(records):
        k = r.get("index", f"#{i}")
        if k not in best or r["median_ms"] < best[k]["median_ms"]:
            best[k] = r
    return list(best.values())


def repeatability(rows: Sequence[dict[str, Any]], key: str = "median_ms") -> dict[str, float | None]:
    """How well the ground truth repeats: round 2 / round 1 of each validation row measured in 2+ rounds.
    ``repeat_sd`` (sd of that ratio - 1) and ``repeat_within_5pct`` (share of rows whose rounds agree within
    ±5 %); both ``None`` when no row has two rounds. ``key="ratio"``: the same for paired samples' ratios
    to the reference subnet."""
    d = np.array([r["runs"][1][key] / r["runs"][0][key] - 1 for r in rows
                  if len(r.get("runs", [])) >= 2 and key in r["runs"][0]])
    if not len(d):
        return {"repeat_sd": None, "repeat_within_5pct": None}
    return {"repeat_sd": float(d.std()), "repeat_within_5pct": float(np.mean(np.abs(d) <= 0.05))}


#: fewer calibration subnets than this per fitted term, and the correction is the scale alone: three subnets
#: fit three terms exactly, and such a fit can price a subnet outside them below zero (a micro table in CI did)
MIN_SAMPLES_PER_TERM = 3


def fit_correction(predicted: Sequence[float], measured: Sequence[float],
                   n_ops: Sequence[int] | None = None) -> dict[str, Any]:
    """``{"scale", "offset_ms", "per_op_ms", "samples"}`` minimising the relative residuals of
    ``scale * p + offset + per_op * n`` (``per_op`` is 0 when ``n_ops`` is not given; with fewer than
    :data:`MIN_SAMPLES_PER_TERM` samples per term, ``offset`` and ``per_op`` are 0 and every prediction positive)."""
    from scipy.optimize import least_squares

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    n = np.zeros_like(p) if n_ops is None else np.asarray(n_ops, float)
    cols = np.stack([p, np.ones_like(p), n], axis=1)
    if n_ops is None:
        cols = cols[:, :2]
    if len(p) < MIN_SAMPLES_PER_TERM * cols.shape[1]:
        cols = cols[:, :1]

    def resid(z):
        return (cols @ z - m) / m

    # soft-L1 loss: one subnet measured during a burst of load elsewhere does not drag the fit
    lo, hi = [0.2, -np.inf, -np.inf][:cols.shape[1]], [5.0, np.inf, np.inf][:cols.shape[1]]
    sol = least_squares(resid, x0=np.r_[1.0, np.zeros(cols.shape[1] - 1)], bounds=(lo, hi), loss="soft_l1",
                        f_scale=0.02)
    z = list(sol.x) + [0.0] * (3 - len(sol.x))
    return {"scale": float(z[0]), "offset_ms": float(z[1]), "per_op_ms": float(z[2]), "samples": len(p),
            "method": "robust (soft-L1) fit of relative error, scipy.optimize.least_squares"}


def fit_level(then: Sequence[float], now: Sequence[float]) -> dict[str, Any]:
    """``{"factor", "samples", "noise"}``: how much slower (>1) the machine runs now than when ``then`` was measured,
    from the same subnets measured again (the median of now / then)."""
    r = np.asarray(now, float) / np.asarray(then, float)
    med = float(np.median(r))
    mad = float(np.median(np.abs(r - med))) * 1.4826
    return {"factor": med, "samples": len(r), "noise": float(2 * mad / max(1.0, np.sqrt(len(r)))),
            "method": "median of now / build-time latency of the same calibration subnets; noise: twice the "
                      "standard error of that median (1.4826 MAD / sqrt n)"}


def per_subnet(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per calibration subnet: paired records (``ratio``) averaged over their rounds, unpaired ones
    the fastest round (:func:`fastest`). A paired ratio has the machine's drift taken out already, so the faster
    of two is only the one biased low, and its rounds differ by noise that a mean shrinks: EfficientViT at
    2 x 1, built in 3 rounds (twenty-fifth session, ``benchmarks/lut_noise_floor.py``; docs/lut-fidelity.md), its
    correction validated at 84 % within +-5 % fitted on the rounds' mean, 76-83 % on one round, 74 % on the fastest."""
    by: dict[Any, list[dict[str, Any]]] = {}
    for i, r in enumerate(records):
        by.setdefault(r.get("index", f"#{i}"), []).append(r)
    out = []
    for rs in by.values():
        if len(rs) == 1 or not all("ratio" in r for r in rs):
            out.extend(fastest(rs))
            continue
        out.append({**rs[0], "median_ms": float(np.mean([r["median_ms"] for r in rs])),
                    "ratio": float(np.mean([r["ratio"] for r in rs])), "rounds": len(rs)})
    return out


def calibrate(table, records: Sequence[dict[str, Any]], *, method: str) -> None:
    """Fit ``table.correction`` on calibration ``records`` (``{"arch", "median_ms", "index"?}``; one per subnet,
    :func:`per_subnet`) and store the in-sample figures in ``table.error``. Fewer than 3 subnets: no-op.
    Used by ``lut build`` and by ``lut import`` of a bundle's results."""
    cal = per_subnet(records)
    if len(cal) < 3:
        return
    cfgs = [arch_from_dict(c["arch"]) for c in cal]
    measured = [float(c["median_ms"]) for c in cal]
    predicted = [table.predict(c, corrected=False) for c in cfgs]
    table.correction = fit_correction(predicted, measured, [table.n_ops(c) for c in cfgs])
    table.error = {"method": method, "samples": len(cal), "uncorrected": fidelity(predicted, measured),
                   "corrected": fidelity([table.predict(c) for c in cfgs], measured)}


def correction_text(c: dict[str, Any] | None) -> str:
    """``x1.0130 -1.085 ms +0.114 ms/op`` (or ``none``)."""
    if not c:
        return "none"
    per_op = c.get("per_op_ms", 0.0)
    return f"x{c['scale']:.4f} {c['offset_ms']:+.3f} ms" + (f" {per_op:+.4f} ms/op" if per_op else "")


def fidelity(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within +-5% and +-10%, MAPE (%), worst error (%), Kendall tau of predicted vs measured."""
    from scipy.stats import kendalltau

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    err = np.abs(p - m) / m
    tau = float(kendalltau(p, m).statistic) if len(p) > 1 else float("nan")
    if np.isnan(tau) and len(p) > 1:  # all predictions (or all measurements) tie, e.g. on a coarse clock:
        tau = 0.0  # they carry no order, and a table must still be writable (strict JSON has no NaN)
    return {"n": len(p), "within_5pct": float(np.mean(err <= 0.05)), "within_10pct": float(np.mean(err <= 0.10)),
            "mape_pct": float(100 * err.mean()), "worst_pct": float(100 * err.max()), "kendall_tau": tau}
