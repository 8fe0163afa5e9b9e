"""Paired timing: whole subnets timed call by call in alternation with a reference subnet, ops with a
reference op (issue 17)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from slimformer.latency_lut import arch_ops, build_table, validate_table
from slimformer.latency_lut._fidelity import (
    at_reference,
    entries_at_reference,
    reference_config,
    reference_ms,
    reference_op,
)
from slimformer.latency_lut._measure import measure_callable
from slimformer.latency_lut._runner import measure, paired_figures, time_paired, time_paired_sized

from .conftest import FAST, micro_space


class _Machine:
    """A fake clock (ns) and two workloads whose cost scales with the machine's speed of the moment."""

    def __init__(self):
        self.t, self.slow, self.calls = 0, 1.0, []

    def now(self) -> int:
        return self.t

    def work(self, name: str, ms: float):
        def run():
            self.calls.append(name)
            self.t += int(ms * self.slow * 1e6)
        return run


def test_time_paired_alternates_the_two_calls_and_times_each_apart():
    m = _Machine()
    a, b = time_paired(m.work("net", 3.0), m.work("ref", 2.0), 4, m.now)
    assert m.calls == ["net", "ref"] * 4
    assert a == [3.0] * 4 and b == [2.0] * 4


def test_a_warm_reference_is_called_untimed_before_each_timed_call():
    """The op before it can push a small reference out of cache; the untimed call brings it back."""
    m = _Machine()
    a, b = time_paired(m.work("op", 3.0), m.work("ref", 2.0), 2, m.now, ref_warm=1)
    assert m.calls == ["op", "ref", "ref"] * 2 and a == [3.0] * 2 and b == [2.0] * 2


def test_the_ratio_to_the_reference_takes_out_a_shared_slowdown():
    """The machine running 30 % slower makes both medians 30 % longer and leaves their ratio alone."""
    m = _Machine()
    net, ref = m.work("net", 3.0), m.work("ref", 2.0)
    quick = paired_figures(*time_paired(net, ref, 5, m.now))
    m.slow = 1.3
    slow = paired_figures(*time_paired(net, ref, 5, m.now))
    assert slow["ref_ms"] == pytest.approx(1.3 * quick["ref_ms"])
    assert quick["ratio"] == pytest.approx(1.5) and slow["ratio"] == pytest.approx(quick["ratio"])


def test_a_paired_measurement_is_sized_by_its_first_timed_pair():
    """The count sees one pair's seconds, the untimed reference calls counted as long as the timed one."""
    m = _Machine()
    seen = []
    a, b = time_paired_sized(m.work("op", 3.0), m.work("ref", 2.0), lambda s: seen.append(s) or 4, m.now, ref_warm=1)
    assert seen == [pytest.approx(0.007)] and len(a) == len(b) == 4
    assert m.calls == ["op", "ref", "ref"] * 4


def test_a_paired_measurement_warms_up_only_what_it_measures():
    """The reference is warmed where it is made; warming whole pairs cost a reference call per warm-up call
    (at batch 16, 0.95 s for each calibration subnet)."""
    calls = []
    fn, ref = (lambda: calls.append("f")), (lambda: calls.append("r"))
    measure_callable(fn, warmup=3, repeats=5, min_time_s=0.0, retries=0, reference=ref, ref_warm=1)
    assert calls == ["f"] * 3 + ["f", "r", "r"] * 5
    calls.clear()
    measure(fn, 3, 5, 0.1, 0, None, ref=ref, ref_warm=1)  # the bundle runner's timer, alike
    assert calls == ["f"] * 3 + ["f", "r", "r"] * 5


def test_measure_with_a_reference_adds_the_paired_figures_locally_and_in_the_runner():
    calls = []
    fn, ref = (lambda: calls.append("f")), (lambda: calls.append("r"))
    local = measure_callable(fn, repeats=5, min_time_s=0.0, retries=0, reference=ref)
    assert {"ref_ms", "ratio", "median_ms"} <= set(local) and local["count"] == 5
    assert calls[-10:] == ["f", "r"] * 5
    remote = measure(fn, 1, 5, 0.1, 0, None, ref=ref)  # the bundle runner's timer
    assert {"ref_ms", "ratio"} <= set(remote) and remote["count"] == 5
    assert "ratio" not in measure(fn, 1, 5, 0.1, 0, None)


def test_at_reference_puts_paired_records_at_the_builds_level():
    recs = [{"median_ms": 10.0, "ratio": 2.0, "ref_ms": 5.5}, {"median_ms": 9.0, "ratio": 1.5, "ref_ms": 4.5},
            {"median_ms": 7.0}]
    assert reference_ms(recs) == pytest.approx(5.0)
    out = at_reference(recs, 5.0)
    assert [r["median_ms"] for r in out] == [10.0, 7.5, 7.0] and out[1]["unpaired_ms"] == 9.0
    assert at_reference(recs, None) == recs and reference_ms([{"median_ms": 1.0}]) is None


@pytest.fixture(scope="module")
def paired_table(tmp_path_factory):
    return build_table(name="micro-paired", space=micro_space(), lut_dir=tmp_path_factory.mktemp("luts"),
                       progress=False, pair_ops=True, **FAST)


def test_a_build_pairs_its_calibration_subnets_with_the_reference_and_fits_at_its_level(paired_table):
    t = paired_table
    ref = t.meta["build"]["reference"]
    assert ref["arch"] == reference_config(micro_space()).to_dict()
    cal = t.meta["build"]["calibration"]
    assert len(cal) == 3 and all("ratio" in c and c["ref_ms"] > 0 for c in cal)  # 3 subnets, one round
    assert ref["median_ms"] == pytest.approx(reference_ms(cal))
    assert "alternation with the reference" in t.error["method"]
    from slimformer.latency_lut._report import describe

    assert "reference: whole subnets timed in alternation" in describe(t)  # what `lut show` prints
    assert f"reference op: every op timed in alternation with {t.meta['build']['reference_op']['key']}" in describe(t)
    again = type(t).load(t.path)  # the reference survives a save and load
    assert again.meta["build"]["reference"] == ref and again.hash == t.hash


def test_entries_at_reference_puts_paired_ops_at_the_builds_level_less_the_overhead():
    entries = {"a": {"median_ms": 0.9, "ratio": 0.5, "ref_ms": 2.2}, "b": {"median_ms": 3.9, "ratio": 2.0, "ref_ms": 1.8},
               "c": {"median_ms": 0.01, "ratio": 0.01, "ref_ms": 2.0}, "d": {"median_ms": 4.0}}
    got = entries_at_reference(entries, 0.1)
    assert got["median_ms"] == pytest.approx(2.0) and got["beside"] == {"intercept": 0.0, "slope": 0.0}  # < 10 ops
    assert entries["a"]["median_ms"] == pytest.approx(0.9) and entries["a"]["own_ms"] == 0.9  # 0.5 * 2.0 - 0.1
    assert entries["b"]["median_ms"] == pytest.approx(3.9) and entries["c"]["median_ms"] == 0.0  # never negative
    assert entries["d"] == {"median_ms": 4.0}  # an unpaired entry stays as it was measured
    alone = {"a": {"median_ms": 1.0}}
    assert entries_at_reference(alone, 0.1) is None and alone == {"a": {"median_ms": 1.0}}


def test_the_references_slowdown_beside_large_ops_is_taken_out():
    """Ops come in a shuffled order, so a reference that runs slower beside larger ops is the ops' doing, not
    the machine's: a paired entry is put at the level the reference has beside an op of its size."""
    rng = np.random.default_rng(0)
    true = np.exp(rng.uniform(np.log(0.01), np.log(20.0), 200))  # op latencies at the level, ms
    speed = rng.choice([1.0, 1.3], 200)  # phases of the machine, independent of the op's size
    slow = (true / 0.5) ** 0.02  # the reference (0.5 ms) runs 2 % slower per e-fold of op size
    entries = {f"op{i}": {"median_ms": t * s, "ratio": t / (0.5 * g), "ref_ms": 0.5 * s * g}
               for i, (t, s, g) in enumerate(zip(true, speed, slow))}
    got = entries_at_reference(entries, 0.0)
    assert got["beside"]["slope"] == pytest.approx(0.02 / 0.98, abs=2e-3)
    back = np.array([entries[f"op{i}"]["median_ms"] for i in range(200)]) / true
    # every entry now at one level (the reference's median), whatever the op's size
    assert np.ptp(back) < 0.01 and not np.ptp([e["ratio"] * got["median_ms"] / t for e, t in zip(entries.values(), true)]) < 0.1


def test_the_reference_op_is_an_op_of_the_reference_subnet():
    sp = micro_space()
    key = reference_op(sp)
    assert key in arch_ops(reference_config(sp)) and reference_op(sp) == key  # fixed per space


def test_the_reference_op_stays_short_at_batch_4_but_not_much_smaller_than_the_ops():
    """Two reference calls go beside every timed op call: at batch 4 the median op of the default space's
    reference subnet would be most of the build, so a smaller op of that subnet pairs there; at batch 16 the only
    op short enough is a tenth of the median op, which validated worse (docs/lut-fidelity.md): the median op again."""
    from slimformer.latency_lut._features import compute_flops, op_features
    from slimformer.latency_lut._fidelity import REF_OP_MAX_FLOPS, REF_OP_MIN_SHARE
    from slimformer.latency_lut._ops import build_op
    from slimformer.supernet import get_space

    sp = get_space("default")
    flops = {b: compute_flops(op_features(*build_op(reference_op(sp, b)))) for b in (1, 4, 16)}
    assert reference_op(sp, 1) == reference_op(sp) and flops[1] * 4 > REF_OP_MAX_FLOPS  # the median op
    assert REF_OP_MIN_SHARE * flops[1] <= flops[4] < flops[1] and flops[4] * 4 <= REF_OP_MAX_FLOPS
    assert reference_op(sp, 4) in arch_ops(reference_config(sp))
    assert reference_op(sp, 16) == reference_op(sp)  # nothing within both limits: the median op
    assert reference_op(sp, 4, "torch") == reference_op(sp)  # measured worse with eager torch: the median op


def test_a_default_build_at_one_thread_times_its_ops_alone(micro_table):
    """At 1 thread ops timed alone compose within the targets; pairing would only lengthen the build
    (docs/lut-fidelity.md)."""
    assert micro_table.meta["build"]["reference_op"] is None
    assert micro_table.meta["build"]["reference"] and all("ratio" not in e for e in micro_table.entries.values())


def test_a_build_pairs_every_op_with_the_reference_op(paired_table):
    t = paired_table
    ref_op = t.meta["build"]["reference_op"]
    assert ref_op["key"] == reference_op(micro_space()) and ref_op["median_ms"] > 0 and ref_op["warm"] == 1
    assert isinstance(t.meta["build"]["retaken"], int)  # ops whose reference moved, measured again at the end
    assert "context" not in t.meta  # no in-context profile by default where ops are paired
    assert set(ref_op["beside"]) == {"intercept", "slope"}
    from slimformer.latency_lut._report import describe

    assert f"{t.meta['build']['retaken']} op(s) whose reference moved measured again" in describe(t)
    assert f"(slope {ref_op['beside']['slope']:+.4f})" in describe(t)
    assert ref_op["median_ms"] == pytest.approx(reference_ms(list(t.entries.values())))
    for e in t.entries.values():
        level_ms = e.get("alone_ms", e["median_ms"])  # before in-context factors, when the build kept them
        b = ref_op["beside"]  # the reference's slowdown beside an op of this size
        at_level = e["ratio"] * ref_op["median_ms"] * np.exp(b["intercept"] + b["slope"] * np.log(e["ratio"]))
        assert level_ms == pytest.approx(max(at_level - t.overhead_ms, 0.0))
        assert e["own_ms"] == pytest.approx(max(e["raw_ms"] - t.overhead_ms, 0.0))


def test_a_paired_table_validates_paired_in_one_round_with_the_unpaired_figures_kept(paired_table, tmp_path):
    t = paired_table
    r = validate_table(t, samples=3, run_dir=tmp_path / "v", progress=False, repeats=3, min_time_s=0.0,
                       recalibrate=False)
    assert r["headline"] == "paired" and r["rounds"] == 1 and r["corrected"]["n"] == 3
    ref_ms = t.meta["build"]["reference"]["median_ms"]
    assert r["paired"]["reference_ms"] == ref_ms and r["paired"]["reference_level"] > 0
    for row in r["rows"]:
        assert row["paired_ms"] == pytest.approx(ref_ms * row["runs"][0]["ratio"])
        assert row["measured_ms"] == row["runs"][0]["median_ms"]
    assert "paired with the reference subnet" in (tmp_path / "v" / "report.md").read_text()
    assert json.loads((tmp_path / "v" / "validate.json").read_text())["paired"] == r["paired"]


def test_a_validation_at_other_settings_is_not_paired(paired_table, tmp_path):
    """The reference's build-time median holds at the table's own settings only."""
    r = validate_table(paired_table, samples=2, run_dir=tmp_path / "v", progress=False, repeats=3, min_time_s=0.0,
                       recalibrate=False, batch=2)
    assert r["mismatch"] and r["paired"] is None and r["headline"] != "paired" and r["rounds"] == 2
    assert all("paired_ms" not in row for row in r["rows"])


def test_an_unpaired_build_validates_as_before(tmp_path):
    t = build_table(name="micro-unpaired", space=micro_space(), lut_dir=tmp_path, progress=False, paired=False,
                    **FAST)
    assert t.meta["build"]["reference"] is None and all("ratio" not in c for c in t.meta["build"]["calibration"])
    assert t.meta["build"]["reference_op"] is None and all("ratio" not in e for e in t.entries.values())
    r = validate_table(t, samples=2, run_dir=tmp_path / "v", progress=False, repeats=3, min_time_s=0.0,
                       recalibrate=False)
    assert r["paired"] is None and r["rounds"] == 2 and r["headline"] in ("corrected", "uncorrected")


def test_the_pairing_benchmark_divides_each_round_by_the_references_of_the_same_calls():
    from tests.conftest import load_benchmark

    bench = load_benchmark("lut_pairing")
    m = _Machine()
    nets, refs = [m.work("a", 4.0), m.work("b", 6.0)], {"r": m.work("r", 2.0)}

    def one_call(fn):  # the fake clock
        t0 = m.now()
        fn()
        return (m.now() - t0) / 1e9

    bench.one_call = one_call
    own, ratio = bench.rounds(nets, refs, 2, 3)
    assert own == [[0.004, 0.004], [0.006, 0.006]] and ratio["r"] == [[2.0, 2.0], [3.0, 3.0]]
    assert bench.sd_pct([1.0, 1.0]) == 0.0 and bench.sd_pct([0.9, 1.1]) == pytest.approx(10.0)


def test_the_op_pairing_benchmark_scores_repeat_after_taking_one_level_out():
    from tests.conftest import load_benchmark

    bench = load_benchmark("lut_op_pairing")
    a = np.array([1.0, 2.0, 4.0])
    assert bench.repeat(a, 1.3 * a) == "sd  0.00 %, within ±5 % 100 %"  # a level moved: no repeat error
    assert bench.repeat(a, a * np.array([1.0, 1.0, 1.2])).endswith("within ±5 %  67 %")


def test_a_paired_build_retakes_the_ops_whose_reference_moved():
    """In phases at 2 threads the reference op ran slow while the op beside it did not (docs/lut-fidelity.md):
    those ops are measured again, once, at the end of the build."""
    from types import SimpleNamespace

    from slimformer.latency_lut._build import _Run

    entries = {"a": {"median_ms": 1.0, "ratio": 0.5, "ref_ms": 2.0}, "b": {"median_ms": 1.0, "ratio": 0.3, "ref_ms": 3.0},
               "c": {"median_ms": 1.0, "ratio": 0.5, "ref_ms": 2.1}, "d": {"median_ms": 1.0}}
    bar = SimpleNamespace(total=4, refresh=lambda: None)
    run = _Run({"entries": entries}, [], {}, {}, None, bar, None)
    seen: list[str] = []
    run.step = lambda key, retake: seen.append((key, retake))
    run.retake_moved()  # the reference's median over the build is 2.1 ms; "b"'s ran 43 % over it
    assert seen == [("b", True)] and bar.total == 5


def test_an_op_is_retaken_once_even_when_the_build_resumes(tmp_path):
    """The retaken keys are journalled: a build killed after (or during) its retake does not take them again."""
    from slimformer.latency_lut._build import _load_partial, journal_path
    from slimformer.latency_lut._runner import moved_ops
    from slimformer.latency_lut._table import SCHEMA

    entries = {"a": {"median_ms": 1.0, "ratio": 0.5, "ref_ms": 2.0}, "b": {"median_ms": 1.0, "ratio": 0.3, "ref_ms": 3.0},
               "c": {"median_ms": 1.0, "ratio": 0.5, "ref_ms": 2.1}}
    ppath = tmp_path / "t.partial.json"
    lines = [{"key": k, "entry": e, "s": 0.1} for k, e in entries.items()]
    lines.append({"key": "b", "entry": {**entries["b"], "ref_ms": 3.2}, "s": 0.1, "retake": True})  # moved again
    journal_path(ppath).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    ppath.write_text(json.dumps({"name": "t", "schema": SCHEMA}), encoding="utf-8")
    d = _load_partial(ppath, {"name": "t"})
    assert d["retaken"] == ["b"] and d["entries"]["b"]["ref_ms"] == 3.2
    assert moved_ops(d["entries"], d["retaken"]) == [] and moved_ops(d["entries"], []) == ["b"]


def test_the_bundle_runner_retakes_moved_ops_once(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from slimformer.latency_lut import _runner

    results = {"entries": {"a": {"median_ms": 1.0, "ratio": 0.5, "ref_ms": 2.0},
                           "b": {"median_ms": 1.0, "ratio": 0.3, "ref_ms": 1.0},
                           "c": {"median_ms": 1.0, "ratio": 0.5, "ref_ms": 2.1}}}
    calls = []

    def fake_measure_item(item, res, cal, load, args, ref=None, ref_op=None):
        calls.append(item["key"])
        res["entries"][item["key"]] = {"median_ms": 0.9, "ratio": 0.45, "ref_ms": 2.0}
        return item["key"], res["entries"][item["key"]]

    monkeypatch.setattr(_runner, "measure_item", fake_measure_item)
    ops = [{"key": k} for k in "abc"]
    out = str(tmp_path / "results.json")
    _runner.retake_moved(ops, results, None, SimpleNamespace(), out, ref_op=object())
    assert calls == ["b"] and results["retaken"] == ["b"]  # "b"'s reference ran 52 % under its median (2.0 ms)
    _runner.retake_moved(ops, results, None, SimpleNamespace(), out, ref_op=object())
    assert calls == ["b"]  # nothing moved is left, and "b" is never taken a third time
    assert json.loads((tmp_path / "results.json").read_text())["retaken"] == ["b"]


def test_ops_are_paired_by_default_only_where_it_was_measured_to_help():
    """At 1 thread ops timed alone compose within the targets; at 2 threads their own medians move by a third
    (docs/lut-fidelity.md). CoreML models run on every unit they may use, whatever the thread count."""
    from slimformer.latency_lut._runner import pairs_ops

    assert not pairs_ops(None, 1) and pairs_ops(None, 2) and pairs_ops(None, 1, "coreml")
    assert pairs_ops(True, 1) and not pairs_ops(False, 4) and not pairs_ops(False, 1, "coreml")


def test_the_paired_ratio_divides_each_call_by_the_reference_call_beside_it():
    """Where the machine's speed moves from pair to pair and each call also jitters on its own, the median of the
    pairs' ratios repeats better than the ratio of the two medians (measured: sd 1.64 % against 2.62 % at 2
    threads, benchmarks/paired_ratio.py)."""
    rng = np.random.default_rng(0)

    def one_measurement():
        level = np.exp(rng.normal(0, 0.15, 15))  # the machine's speed of each pair's moment
        a = 3.0 * level * np.exp(rng.normal(0, 0.02, 15))
        b = 2.0 * level * np.exp(rng.normal(0, 0.02, 15))
        pairs = paired_figures(list(a), list(b))["ratio"]
        return pairs, float(np.median(a) / np.median(b))

    pairs, medians = np.array([one_measurement() for _ in range(300)]).T
    assert np.median(pairs) == pytest.approx(1.5, rel=0.01)
    assert pairs.std() < 0.5 * medians.std()
