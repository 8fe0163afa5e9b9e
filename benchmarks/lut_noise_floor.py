"""How close can any table get here? The noise of the ground truth and the limit of composing op times.

Two measurements, both on the default space at the table's setting:

1. ``--seconds S``: two random subnets timed in alternation (median of 15 calls each, one onnxruntime
   session each) for S seconds. Prints each net's spread over time, the spread of successive differences
   (call-to-call noise), block means (slow drift), and the correlation of the two nets: a correlation near 1
   is the machine's speed moving both together, which no table can predict.
2. ``--validation DIR --table NAME``: offline, from a finished ``lut validate`` run. Fits per-op-kind
   scales (plus offset and per-op term) on the build's calibration subnets and scores them on the
   validation's subnets; then fits them on the validation subnets themselves (in-sample, an oracle). The
   oracle's share within ±5 % is a ceiling for any per-kind linear composition of these entries. The build's
   correction refitted on part of its calibration (one round, half the subnets) says what a shorter
   calibration would have cost. When the
   table kept in-context factors, it also scores the ops timed alone with the correction refitted; when its
   ops were paired with a reference op, it also scores each op's own median (``own_ms``) the same way.
   A validation of a paired table (its samples timed in alternation with the table's reference subnet) is
   scored against the samples at the build's level (``paired_ms``), and the calibration subnets likewise;
   ``--unpaired`` scores the samples' own medians instead. It also prints how many ops a validation subnet sums
   and how many of even weight (what an op's timing noise is divided by the root of), and where the build's
   seconds went.

    python benchmarks/lut_noise_floor.py --seconds 150
    python benchmarks/lut_noise_floor.py --table matrix-default-1x1-onnxruntime --validation runs/lut-matrix-default/1x1-onnxruntime
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np


def drift(seconds: float, threads: int, batch: int) -> None:
    import torch

    from slimformer.latency_lut._measure import runner, time_calls
    from slimformer.supernet import build_model, get_space

    rng = random.Random(99)
    x = torch.randn(1, 3, 224, 224)
    runs = [runner(build_model(cfg).eval(), (x,), threads=threads, batch=batch)
            for cfg in (get_space("default").sample(rng) for _ in range(2))]
    series: list[list[float]] = [[], []]
    t0 = time.time()
    while time.time() - t0 < seconds:
        for fn, out in zip(runs, series):
            out.append(statistics.median(time_calls(fn, repeats=15, min_time_s=0)))
    a, b = (np.asarray(s) / np.median(s) for s in series)
    for name, v in (("A", a), ("B", b)):
        k = max(1, len(v) // 10)
        blocks = [v[i:i + k].mean() for i in range(0, len(v) - k + 1, k)]
        print(f"net {name}: {len(v)} medians, sd {100 * v.std():.2f} %, call-to-call (successive differences / √2) "
              f"{100 * np.diff(v).std() / np.sqrt(2):.2f} %, block means {np.round(blocks, 3).tolist()}")
    print(f"A/B: correlation {np.corrcoef(a, b)[0, 1]:.2f}, sd of the ratio {100 * (a / b).std():.2f} %")


def _features(table, cfg) -> tuple[dict[str, float], int]:
    from slimformer.latency_lut import by_kind

    return by_kind(table, cfg), table.n_ops(cfg)


def _fit(x: np.ndarray, m: np.ndarray, shrink: float) -> np.ndarray:
    from scipy.optimize import least_squares

    p = x.shape[1] - 2

    def resid(z):  # relative error; the per-kind scales shrunk toward their mean
        return np.r_[(x @ z - m) / m, shrink * (z[:p] - z[:p].mean())]
    return least_squares(resid, np.r_[np.ones(p), 0.0, 0.0], loss="soft_l1", f_scale=0.02).x


def _refit(table, calibration: list, method: str, value=None):
    """A copy of ``table`` (its entries ``value(entry)`` when given), its correction refitted on ``calibration``."""
    from slimformer.latency_lut import LatencyTable
    from slimformer.latency_lut._fidelity import calibrate

    out = LatencyTable.from_dict(table.to_dict())
    if value is not None:
        for e in out.entries.values():
            e["median_ms"] = value(e)
        out.refresh()
    calibrate(out, calibration, method=method)
    return out


def _variant_table(table, calibration: list, rule):
    """A copy of an op-paired ``table`` whose entries are ``rule(entry, reference level)``, correction refitted."""
    level = table.meta["build"]["reference_op"]["median_ms"]
    return _refit(table, calibration, "variant", lambda e: rule(e, level))


def _stem_variants(table, records: list, rows: list, line) -> None:
    """Tried in the twenty-sixth session and not adopted: each paired stem's entry (every subnet runs one stem)
    halfway between its paired estimate and its own median times the ops' level (the median over paired ops of
    paired / own). Recomputed from what the build recorded, the correction refitted on the build's calibration
    ``records`` (rounds averaged, as ``calibrate`` does). Better on eight validations of older EfficientViT 2 x 1
    builds, +3 and -5 points on the two of a fresh one (docs/lut-fidelity.md)."""
    from slimformer.latency_lut import LatencyTable
    from slimformer.latency_lut._fidelity import calibrate, entries_at_reference
    from slimformer.latency_lut._keys import op_kind
    from slimformer.supernet import arch_from_dict

    now = {k: dict(e) for k, e in table.entries.items()}
    entries_at_reference(now, table.overhead_ms)
    level = float(np.median([e["median_ms"] / e["own_ms"] for e in now.values() if "ratio" in e and e["own_ms"] > 0]))
    half = {k: {**e, "median_ms": 0.5 * (e["median_ms"] + e["own_ms"] * level)}
            if "ratio" in e and op_kind(k) in ("stem", "evit.stem") else e for k, e in now.items()}
    for name, entries in (("paired, like every op", now), ("halfway to their own median (tried)", half)):
        t = LatencyTable.from_dict(table.to_dict())
        for k, e in t.entries.items():
            e["median_ms"] = entries[k]["median_ms"]
        t.refresh()
        calibrate(t, records, method=name)
        line(f"stems {name}", [t.predict(arch_from_dict(r["arch"])) for r in rows])


def _oracle_out_of_sample(xv, mv, raw, n_ops, splits: int = 200) -> None:
    """The oracle above is fitted in-sample; here per-kind scales, and the build's form of correction (one scale,
    offset, per-op term), are fitted on half the validation subnets and scored on the other half: the mean share
    within +-5 % / +-10 % over ``splits`` random halves. What any per-kind linear composition of these entries can
    reach on subnets it was not fitted on, measured under the validation's own conditions."""
    from slimformer.latency_lut._fidelity import fit_correction

    rng = np.random.default_rng(0)
    kinds, one = [], []
    for _ in range(splits):
        idx = rng.permutation(len(mv))
        a, b = idx[: len(mv) // 2], idx[len(mv) // 2:]
        kinds.append((xv[b] @ _fit(xv[a], mv[a], 0.0), b))
        z = fit_correction(raw[a], mv[a], n_ops[a])
        one.append((z["scale"] * raw[b] + z["offset_ms"] + z["per_op_ms"] * n_ops[b], b))
    for name, preds in (("per-kind scales", kinds), ("one scale, offset, per-op term", one)):
        e5 = np.mean([np.mean(np.abs(p - mv[b]) / mv[b] <= 0.05) for p, b in preds])
        e10 = np.mean([np.mean(np.abs(p - mv[b]) / mv[b] <= 0.10) for p, b in preds])
        print(f"{'oracle out of sample: ' + name + ', half fitted':<52} {100 * e5:3.0f} % {100 * e10:4.0f} %  "
              f"(the other half, mean of {splits} splits)")


def _pairing_variants(table, calibration: list, rows: list, line) -> None:
    """Safeguards tried against the reference op running slow beside large ops: fall back to the op's own
    median where the reference moved by more than X, or clip every entry to ±25 % of its own median."""
    from slimformer.supernet import arch_from_dict

    for x in (0.1, 0.25, 0.5):
        def rule(e, level, x=x):
            return e["own_ms"] if abs(e["ref_ms"] / level - 1) > x else e["median_ms"]
        t = _variant_table(table, calibration, rule)
        line(f"paired, own median where the reference moved > {100 * x:.0f} %", [t.predict(arch_from_dict(r["arch"])) for r in rows])
    t = _variant_table(table, calibration, lambda e, level: min(max(e["median_ms"], 0.75 * e["own_ms"]), 1.25 * e["own_ms"]))
    line("paired, clipped to ±25 % of the own median", [t.predict(arch_from_dict(r["arch"])) for r in rows])
    overhead = table.overhead_ms
    t = _variant_table(table, calibration, lambda e, level: max(e["ratio"] * level - overhead, 0.0) if "ratio" in e
                       else e["median_ms"])
    line("paired, the reference's slowdown beside large ops left in", [t.predict(arch_from_dict(r["arch"])) for r in rows])


def _width_trend(rows: list, truth: str) -> None:
    """Does the table under- or overestimate wide subnets (where a search goes)? Measured / predicted (the
    build's correction) for the widest quarter of the validation subnets by the sum of stage widths, and the rest."""
    err = np.array([r[truth] / r["corrected_ms"] - 1 for r in rows])
    width = np.array([sum(st["width"] for st in r["arch"]["stages"]) for r in rows])
    wide = width >= np.percentile(width, 75)
    print(f"measured / predicted - 1 by width: widest quarter median {100 * np.median(err[wide]):+.1f} %, the rest "
          f"{100 * np.median(err[~wide]):+.1f} %; correlation with the sum of stage widths {np.corrcoef(err, width)[0, 1]:+.2f}")


def _absolute(rows: list, truth: str) -> None:
    """The errors in milliseconds (the build's correction): a space of short subnets can be as true in ms as one of
    long subnets and still miss in %, since a fixed jitter is a larger share of a short call."""
    m = np.array([r[truth] for r in rows])
    err = np.abs(m - np.array([r["corrected_ms"] for r in rows]))
    print(f"|measured - predicted|: median {np.median(err):.3f} ms, 90th pct {np.percentile(err, 90):.3f} ms "
          f"(subnets' median {np.median(m):.2f} ms)")


def _beside_fit(beside: dict | None, ratios: list) -> str:
    """The build's fit of the reference's slowdown beside an op of its size, at the 5th and 95th percentile op."""
    if not beside:
        return " (built before the fit)"
    at = [np.exp(beside["intercept"] + beside["slope"] * np.log(np.percentile(ratios, p))) for p in (5, 95)]
    return f"; the build's fit: slope {beside['slope']:+.4f}, x{at[0]:.3f} at the 5th percentile op, x{at[1]:.3f} at the 95th"


def _reference_op_moves(table) -> None:
    """Where an op-paired build's reference op ran over 1.25x its build median: by blocks of 100 ops in build
    order (phases), and for the largest quarter of ops against the rest (the op before it slowing it)."""
    from slimformer.latency_lut import space_ops
    from slimformer.latency_lut._build import schedule

    b = table.meta["build"]
    level, n_cal = b["reference_op"]["median_ms"], len({c.get("index") for c in b["calibration"]})
    rounds = 1 + max((c.get("round", 0) for c in b["calibration"]), default=0)
    order = [k for k in schedule(space_ops(table.space), n_cal, rounds) if isinstance(k, str)]
    moved = np.array([table.entries[k]["ref_ms"] / level > 1.25 for k in order])
    own = np.array([table.entries[k]["own_ms"] for k in order])
    big = own > np.percentile(own, 75)
    blocks = ", ".join(f"{100 * moved[i:i + 100].mean():.0f}" for i in range(0, len(moved), 100))
    print(f"reference op over 1.25x its build median beside {100 * moved.mean():.1f} % of ops; by blocks of 100 ops in "
          f"build order (%): {blocks}; largest quarter of ops {100 * moved[big].mean():.1f} %, the rest "
          f"{100 * moved[~big].mean():.1f} %")
    e = table.entries
    shift = sorted((e[k].get("alone_ms", e[k]["median_ms"]) / max(e[k]["own_ms"], 1e-9), k) for k in order)
    q = np.percentile([x for x, _ in shift], [5, 50, 95])
    print(f"entry / the op's own median: p5 {q[0]:.2f}, median {q[1]:.2f}, p95 {q[2]:.2f}; lowest: "
          + "; ".join(f"{k} own {e[k]['own_ms']:.2f} ms, entry {e[k]['median_ms']:.2f} ms, reference "
                      f"{e[k]['ref_ms']:.2f} ms" for _, k in shift[:3]))
    ref = np.array([e[k]["ref_ms"] / level for k in order])
    q = np.percentile(own, [25, 50, 75])
    by_size = ", ".join(f"{np.median(ref[(own >= lo) & (own < hi)]):.3f}" for lo, hi in zip([-1, *q], [*q, np.inf]))
    print(f"reference's median beside an op / its build median, by quarter of op size (smallest first): {by_size}"
          + _beside_fit(b["reference_op"].get("beside"), [e[k]["ratio"] for k in order]))
    print(f"correlation of the reference's median beside an op with log(op's own median): "
          f"{np.corrcoef([e[k]['ref_ms'] for k in order], np.log(own + 1e-3))[0, 1]:+.2f}")


def _alone_table(table, calibration: list, field: str = "alone_ms"):
    """A copy of ``table`` whose entries are ``field`` (``alone_ms``: the ops without in-context factors;
    ``own_ms``: each op's own median, not put at the build's level by the reference op), its correction
    refitted on ``calibration``."""
    return _refit(table, calibration, field, lambda e: e.get(field, e["median_ms"]))


def _calibration_variants(table, records: list, rows: list, line) -> None:
    """The build's correction refitted on part of its calibration measurements, scored on the validation: each
    round alone (half the calibration's timed calls), the first half of the subnets (all rounds) and, built in
    rounds, each subnet's rounds averaged."""
    from slimformer.latency_lut._fidelity import per_subnet
    from slimformer.supernet import arch_from_dict

    n_sub = len({r.get("index") for r in records})
    parts = [(f"round {k + 1} only", [r for r in records if r.get("round", 0) == k])
             for k in sorted({r.get("round", 0) for r in records})]
    parts.append((f"subnets 1-{n_sub // 2} only",
                  [r for r in records if r.get("index", 0) < n_sub // 2]))
    if len(parts) > 2 and all("ratio" in r for r in records):  # paired, in rounds: what the build keeps now
        parts.append(("rounds averaged", per_subnet(records)))
    for name, part in parts:
        t = _refit(table, part, name)
        line(f"correction refit on calibration {name}", [t.predict(arch_from_dict(r["arch"])) for r in rows])


def composition(table_name: str, lut_dir: str | None, validation: Path, unpaired: bool = False,
                warm_alone: bool = False) -> None:
    from slimformer.latency_lut import fidelity, get_table, repeatability
    from slimformer.latency_lut._fidelity import at_reference, fastest
    from slimformer.supernet import arch_from_dict

    table = get_table(table_name, lut_dir=lut_dir)
    rows = json.loads((validation / "validate.json").read_text())["rows"]
    ref = None if unpaired else (table.meta["build"].get("reference") or {}).get("median_ms")
    truth = "paired_ms" if ref and rows and "paired_ms" in rows[0] else "measured_ms"
    print(f"ground truth: {'each sample at the build level (paired)' if truth == 'paired_ms' else 'its own median'}")
    cal = fastest(at_reference(table.meta["build"]["calibration"], ref if truth == "paired_ms" else None))
    cal_f = [(_features(table, arch_from_dict(c["arch"])), c["median_ms"]) for c in cal]
    val_f = [(_features(table, arch_from_dict(r["arch"])), r[truth]) for r in rows]
    kinds = sorted({k for (f, _), _ in cal_f + val_f for k in f})

    def design(data):
        return (np.array([[f.get(k, 0.0) for k in kinds] + [1.0, n] for (f, n), _ in data]),
                np.array([m for _, m in data]))
    xc, mc = design(cal_f)
    xv, mv = design(val_f)

    def line(name, pred):
        f = fidelity(pred, mv)
        print(f"{name:<52} {100 * f['within_5pct']:3.0f} % {100 * f['within_10pct']:4.0f} %  MAPE {f['mape_pct']:.2f} %"
              f"  tau {f['kendall_tau']:.3f}")
    print(f"{len(rows)} validation subnets of {table_name}, {mv.min():.2f}-{mv.max():.2f} ms; kinds {', '.join(kinds)}; "
          f"±5 %, ±10 %:")
    line("the build's correction (one scale)", [r["corrected_ms"] for r in rows])
    for shrink in (0.1, 0.3, 1.0):
        line(f"per-kind scales fitted on calibration (shrink {shrink})", xv @ _fit(xc, mc, shrink))
    line("oracle: per-kind scales fitted on these subnets", xv @ _fit(xv, mv, 0.0))
    vcfg = [arch_from_dict(r["arch"]) for r in rows]
    _oracle_out_of_sample(xv, mv, np.array([table.predict(c, corrected=False) for c in vcfg]),
                          np.array([table.n_ops(c) for c in vcfg], float))
    _calibration_variants(table, at_reference(table.meta["build"]["calibration"], ref if truth == "paired_ms" else None),
                          rows, line)
    if any("alone_ms" in e for e in table.entries.values()):
        alone = _alone_table(table, cal)
        line("ops alone (no in-context factors), correction refit", [alone.predict(arch_from_dict(r["arch"])) for r in rows])
    if any("own_ms" in e for e in table.entries.values()):
        own = _alone_table(table, cal, "own_ms")
        line("ops' own medians (not paired), correction refit", [own.predict(arch_from_dict(r["arch"])) for r in rows])
        print(f"  in-sample MAPE on the calibration subnets: paired {table.error['corrected']['mape_pct']:.2f} %, "
              f"own medians {own.error['corrected']['mape_pct']:.2f} %")
        _pairing_variants(table, cal, rows, line)
        _stem_variants(table, at_reference(table.meta["build"]["calibration"], ref if truth == "paired_ms" else None),
                       rows, line)
        _reference_op_moves(table)
    _width_trend(rows, truth)
    _absolute(rows, truth)
    rep = repeatability(rows)
    if rep["repeat_sd"] is not None:
        print(f"round 2 / round 1 of the same subnet: sd {100 * rep['repeat_sd']:.2f} %, "
              f"{100 * rep['repeat_within_5pct']:.0f} % of subnets agree within ±5 %")
        ratio = np.array([r["runs"][1]["median_ms"] / r["runs"][0]["median_ms"] for r in rows if len(r.get("runs", [])) >= 2])
        blocks = ", ".join(f"{np.median(ratio[i:i + 20]):.2f}" for i in range(0, len(ratio), 20))
        print(f"  its median {np.median(ratio):.3f} (p10-p90 {np.percentile(ratio, 10):.2f}-{np.percentile(ratio, 90):.2f}); "
              f"by blocks of 20 subnets in measuring order: {blocks} (a median off 1 is the machine drifting between rounds)")
    _calibration_repeat(table.meta["build"]["calibration"])
    _ops_per_subnet(table, [arch_from_dict(r["arch"]) for r in rows])
    _build_time(table, warm_alone)
    rep = repeatability(rows, "ratio")
    if rep["repeat_sd"] is not None:
        print(f"the same for the ratio to the reference subnet (paired): sd {100 * rep['repeat_sd']:.2f} %, "
              f"{100 * rep['repeat_within_5pct']:.0f} % of subnets agree within ±5 %")


def _ops_per_subnet(table, cfgs: list) -> None:
    """How many ops a validation subnet sums, and how many of even weight, (sum of ms)^2 / sum of ms^2: an op's
    own timing noise, independent from op to op, reaches the subnet's prediction divided by the root of that."""
    n = np.array([len(table.breakdown(c)) for c in cfgs])
    even = np.array([sum(w) ** 2 / max(sum(x * x for x in w), 1e-12)
                     for w in ([ms for _, ms in table.breakdown(c)] for c in cfgs)])
    print(f"ops per validation subnet {n.min()}-{n.max()}, median {np.median(n):.0f}; of even weight "
          f"{even.min():.0f}-{even.max():.0f}, median {np.median(even):.0f}")


def _build_time(table, warm_alone: bool = False) -> None:
    """Where a build's seconds went, estimated from what it recorded: timed calls of the ops (and of the
    reference op beside them, one untimed and one timed call each), of the calibration subnets (and the
    reference subnet), and the rest (export, sessions, profiling). Builds since the twenty-second session
    (``build.warm_up == "alone"``, or ``warm_alone``) warm up the measured call alone, the reference not at all."""
    b, e = table.meta["build"], table.entries.values()
    wr = 0 if warm_alone or b.get("warm_up") == "alone" else 1  # the reference beside the warm-up calls too
    ops = sum((x["count"] + 3) * x.get("raw_ms", x["median_ms"]) * x.get("attempts", 1) for x in e) / 1e3
    ref = sum((x["count"] + 3 * wr) * 2 * x["ref_ms"] * x.get("attempts", 1) for x in e if "ref_ms" in x) / 1e3
    cal = sum(((c["count"] + 2) * c["median_ms"] + (c["count"] + 2 * wr) * c.get("ref_ms", 0.0)) * c.get("attempts", 1)
              for c in b["calibration"]) / 1e3
    print(f"build {b['seconds']:.0f} s: ops' timed calls about {ops:.0f} s, the reference op's beside them {ref:.0f} s, "
          f"calibration subnets (with the reference subnet) {cal:.0f} s, the rest (export, sessions, profiling) "
          f"{b['seconds'] - ops - ref - cal:.0f} s")


def _calibration_repeat(records: list) -> None:
    """Round 2 / round 1 of the build's own calibration subnets: their medians, and their ratios when paired."""
    by: dict = {}
    for r in records:
        by.setdefault(r.get("index"), []).append(r)
    pairs = [v[:2] for k, v in by.items() if k is not None and len(v) >= 2]
    for key, what in (("median_ms", "medians"), ("ratio", "ratios to the reference")):
        d = [b[key] / a[key] - 1 for a, b in pairs if key in a]
        if d:
            print(f"the build's {len(d)} calibration subnets, round 2 / round 1 of their {what}: sd {100 * np.std(d):.2f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.0, help="time two nets in alternation this long")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--table", default=None)
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--validation", type=Path, default=None, help="a lut validate run directory")
    ap.add_argument("--unpaired", action="store_true", help="score a paired validation's own medians")
    ap.add_argument("--warm-alone", action="store_true",
                    help="the build warmed up measured calls alone (built at 6fc2656, before tables recorded it)")
    args = ap.parse_args()
    if args.seconds <= 0 and args.validation is None:
        raise SystemExit("give --seconds S, or --table NAME --validation DIR (or both)")
    if args.seconds > 0:
        drift(args.seconds, args.threads, args.batch)
    if args.validation is not None:
        if not args.table:
            raise SystemExit("--validation needs --table (the table that run validated)")
        composition(args.table, args.lut_dir, args.validation, args.unpaired, args.warm_alone)


if __name__ == "__main__":
    main()
