from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from slimformer._errors import SlimformerError
from slimformer.latency_lut import LatencyTable, arch_ops, build_table, get_table, space_ops, validate_table
from slimformer.latency_lut._build import calibration_rounds, schedule
from slimformer.latency_lut._fidelity import calibrate, fastest, fit_level, per_subnet
from slimformer.latency_lut._measure import ONNX_EXPORT, OPSET
from slimformer.latency_lut._report import describe
from slimformer.latency_lut._runner import TIME_CAP_S

from .conftest import FAST, micro_space


def test_built_table_covers_the_space_and_predicts(micro_table):
    t = micro_table
    sp = micro_space()
    assert set(t.entries) == set(space_ops(sp)) and t.kind == "measured" and t.backend == "onnxruntime"
    assert t.threads == 1 and t.batch == 1 and t.space_hash == sp.hash and t.cpu and t.date
    assert t.runtime["onnxruntime"] and 0 < t.overhead_ms < 1
    assert (t.runtime["opset"], t.runtime["dynamic_axes"]) == (str(OPSET), ONNX_EXPORT["dynamic_axes"])
    assert all(e["median_ms"] >= 0 and e["count"] >= 3 for e in t.entries.values())
    assert t.correction["samples"] == 3 and set(t.error) >= {"uncorrected", "corrected"}
    assert t.path.name == "micro-ort.json" and not (t.path.parent / "micro-ort.partial.json").exists()
    cfg = sp.sample(5)
    raw = sum(t.entries[k]["median_ms"] for k in arch_ops(cfg)) + t.overhead_ms
    assert t.predict(cfg, corrected=False) == pytest.approx(raw)
    c, n = t.correction, len(arch_ops(cfg))
    assert t.predict(cfg) == pytest.approx(c["scale"] * raw + c["offset_ms"] + c["per_op_ms"] * n)
    loaded = get_table("micro-ort", lut_dir=t.path.parent)
    assert loaded.hash == t.hash and loaded.meta["build"]["calibration"]
    assert loaded.meta["build"]["timing"] == {"repeats": 3, "min_time_s": 0.0, "max_time_s": TIME_CAP_S, "noise": 0.1,
                                              "retries": 0}
    assert loaded.meta["build"]["op_repeats"] == 3


def test_ops_are_timed_op_repeats_calls_without_retries_and_subnets_repeats_with_them(tmp_path):
    """A network sums many ops, so an op is timed ``op_repeats`` calls and never retried; a calibration subnet
    weighs alone in the fit and is timed ``repeats`` calls, retried while its calls spread over ``noise``."""
    t = build_table(name="reps", space=micro_space(), lut_dir=tmp_path, progress=False,
                    **{**FAST, "repeats": 4, "op_repeats": 2, "noise": 0.0, "retries": 1})
    assert all(e["count"] == 2 and e["attempts"] == 1 for e in t.entries.values())
    cal = t.meta["build"]["calibration"]
    assert cal and all(c["count"] == 4 and c["attempts"] == 2 for c in cal)  # noise 0: every subnet retried once
    with pytest.raises(SlimformerError, match="at least 1"):
        build_table(name="reps0", space=micro_space(), lut_dir=tmp_path, progress=False, **{**FAST, "op_repeats": 0})


def _as_measured(entry: dict) -> dict:
    """An entry as the journal holds it: the finished table keeps the op's own median as ``own_ms`` (its
    ``median_ms`` is put at the build's level by the reference op), and the in-context step (kept only when
    it fits better, so on some runs and not others) moves that to ``alone_ms`` and scales ``median_ms``."""
    out = {k: v for k, v in entry.items() if k not in ("alone_ms", "own_ms")}
    out["median_ms"] = entry.get("own_ms", entry.get("alone_ms", entry["median_ms"]))
    return out


def test_build_resumes_after_an_interruption_and_keeps_what_was_measured(tmp_path):
    sp = micro_space()
    seen: list[str] = []

    def boom(key, entry):
        seen.append(key)
        if len(seen) == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_table(name="resume", space=sp, lut_dir=tmp_path, progress=False, on_entry=boom, **FAST)
    assert (tmp_path / "resume.partial.json").is_file() and not (tmp_path / "resume.json").exists()
    with pytest.raises(SlimformerError, match="did not finish"):
        get_table("resume", lut_dir=tmp_path)
    journal = [json.loads(x) for x in (tmp_path / "resume.partial.jsonl").read_text().splitlines()]
    first = {r["key"]: r["entry"] for r in journal if "key" in r}
    assert list(first) == seen
    assert sum("calibration" in r for r in journal) >= 1  # the first calibration subnet comes early in the schedule
    again: list[str] = []
    t = build_table(name="resume", space=sp, lut_dir=tmp_path, progress=False,
                    on_entry=lambda k, e: again.append(k), **FAST)
    assert len(again) == len(space_ops(sp)) - 7 and not set(again) & set(seen)
    assert all(_as_measured(t.entries[k]) == first[k] for k in seen) and t.correction["samples"] == 3
    assert not (tmp_path / "resume.partial.jsonl").exists()


def test_schedule_shuffles_the_ops_and_spreads_the_calibration_subnets():
    keys = space_ops(micro_space())
    order = schedule(keys, 3)
    assert order == schedule(keys, 3)  # deterministic: a resumed build follows the same order
    ops = [x for x in order if isinstance(x, str)]
    assert sorted(ops) == sorted(keys) and ops != keys
    where = [i for i, x in enumerate(order) if isinstance(x, int)]
    assert [order[i] for i in where] == [0, 1, 2]
    assert where[0] < len(order) / 3 < where[1] < 2 * len(order) / 3 < where[2] < len(order) - 1
    assert schedule(keys, 0) == ops
    two = schedule(keys, 3, rounds=2)  # subnet j % 3 in round j // 3: each subnet's rounds half a build apart
    where = [i for i, x in enumerate(two) if isinstance(x, int)]
    assert [two[i] for i in where] == list(range(6)) and [x for x in two if isinstance(x, str)] == ops
    assert all(where[j + 3] - where[j] >= len(keys) / 2 - 1 for j in range(3))


def test_fastest_keeps_the_faster_round_of_each_subnet():
    recs = [{"index": 0, "median_ms": 5.0}, {"index": 1, "median_ms": 2.0}, {"index": 0, "median_ms": 4.5},
            {"index": 1, "median_ms": 2.4}, {"median_ms": 9.0}]
    assert [r["median_ms"] for r in fastest(recs)] == [4.5, 2.0, 9.0]


def test_paired_rounds_are_averaged_and_unpaired_ones_keep_the_faster():
    recs = [{"index": 0, "median_ms": 5.0, "ratio": 0.50}, {"index": 1, "median_ms": 2.0},
            {"index": 0, "median_ms": 4.0, "ratio": 0.40}, {"index": 1, "median_ms": 2.4}, {"median_ms": 9.0}]
    got = per_subnet(recs)
    assert [(r["median_ms"], r.get("ratio"), r.get("rounds")) for r in got] == [(4.5, 0.45, 2), (2.0, None, None),
                                                                               (9.0, None, None)]


def test_a_paired_build_in_two_rounds_fits_each_subnets_mean(tmp_path):
    t = build_table(name="p2", space=micro_space(), lut_dir=tmp_path, progress=False, rounds=2, **FAST)
    cal = t.meta["build"]["calibration"]
    assert sorted(c["round"] for c in cal) == [0, 0, 0, 1, 1, 1] and all("ratio" in c for c in cal)
    ref_ms = t.meta["build"]["reference"]["median_ms"]
    means = {i: ref_ms * np.mean([c["ratio"] for c in cal if c["index"] == i]) for i in range(3)}
    refit = LatencyTable.from_dict(t.to_dict())
    calibrate(refit, [{**c, "median_ms": means[c["index"]]} for c in cal if c["round"] == 0], method="means")
    assert t.correction["samples"] == 3 and t.correction == pytest.approx(refit.correction)


def test_a_paired_build_times_its_calibration_subnets_once_and_profiles_none_an_unpaired_one_twice_and_half(tmp_path):
    """Paired calibration subnets are ratios to the reference subnet: a second round bought nothing there, nor
    did their in-context profiles (docs/lut-fidelity.md), so both are only the default where timings are not paired."""
    assert (calibration_rounds(None, True), calibration_rounds(None, False), calibration_rounds(3, True)) == (1, 2, 3)
    t = build_table(name="p", space=micro_space(), lut_dir=tmp_path, progress=False, **FAST)
    u = build_table(name="u", space=micro_space(), lut_dir=tmp_path, progress=False, paired=False, **FAST)
    assert [c["round"] for c in t.meta["build"]["calibration"]] == [0, 0, 0]
    assert sorted(c["round"] for c in u.meta["build"]["calibration"]) == [0, 0, 0, 1, 1, 1]
    assert t.correction["samples"] == u.correction["samples"] == 3
    assert "context" not in t.meta and u.meta["context"]["subnets"] == 2  # (3 + 1) // 2 profiled node by node


def test_resume_refuses_other_settings_and_no_resume_starts_over(tmp_path):
    sp = micro_space()

    def stop(key, entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_table(name="x", space=sp, lut_dir=tmp_path, progress=False, on_entry=stop, **FAST)
    with pytest.raises(SlimformerError, match="other settings.*--no-resume"):
        build_table(name="x", space=sp, lut_dir=tmp_path, progress=False, threads=2, **FAST)
    with pytest.raises(SlimformerError, match="rounds 1 .now 2."):  # calibration records would not line up
        build_table(name="x", space=sp, lut_dir=tmp_path, progress=False, **{**FAST, "rounds": 2})
    with pytest.raises(SlimformerError, match="max_time_s 1.0 .now 0.5."):  # one timing rule per table
        build_table(name="x", space=sp, lut_dir=tmp_path, progress=False, **{**FAST, "max_time_s": 0.5})
    n = []
    build_table(name="x", space=sp, lut_dir=tmp_path, progress=False, resume=False,
                on_entry=lambda k, e: n.append(k), **FAST)
    assert len(n) == len(space_ops(sp))


@pytest.mark.parametrize("kw, msg", [({"backend": "tensorrt"}, "unknown backend"), ({"threads": 0}, "at least 1"),
                                     ({"name": "no/slash?"}, "invalid table name"),
                                     ({"clock": "cpu", "threads": 2}, "--threads 1"), ({"clock": "tsc"}, "unknown clock")])
def test_build_rejects_bad_options(tmp_path, kw, msg):
    args = {"name": "ok", "space": micro_space(), "lut_dir": tmp_path, "progress": False, **FAST, **kw}
    with pytest.raises(SlimformerError, match=msg):
        build_table(**args)


def test_validate_writes_figures_and_a_scatter(micro_table, tmp_path):
    r = validate_table(micro_table, samples=4, run_dir=tmp_path / "run", progress=False, repeats=3,
                       min_time_s=0.0, rounds=2)
    assert r["samples"] == 4 and 0 <= r["uncorrected"]["within_10pct"] <= 1
    assert r["corrected"]["n"] == 4 and r["uncorrected"]["mape_pct"] >= 0
    run = tmp_path / "run"
    assert (run / "scatter.png").stat().st_size > 1000 and (run / "report.md").is_file()
    rows = json.loads((run / "validate.json").read_text())["rows"]
    assert len(rows) == 4 and r["rounds"] == 2 and r["timing"] == {"repeats": 3, "min_time_s": 0.0, "max_time_s": 1.0}
    again = LatencyTable.load(micro_table.path)  # the figures are remembered in the table for `lut show`
    assert again.hash == micro_table.hash and again.meta["validation"]["corrected"] == r["corrected"]
    assert "last validation" in describe(again)
    assert all(len(x["runs"]) == 2 and x["measured_ms"] == min(y["median_ms"] for y in x["runs"]) for x in rows)
    assert not (run / "samples.partial.json").exists()


def test_a_killed_validation_resumes_in_its_second_round(micro_table, tmp_path, monkeypatch):
    import slimformer.latency_lut._validate as V

    calls = []
    real = V.measure_arch

    def flaky(cfg, **kw):
        calls.append(cfg.summary())
        if len(calls) == 5:  # the first subnet of round 2
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(V, "measure_arch", flaky)
    with pytest.raises(KeyboardInterrupt):
        validate_table(micro_table, samples=4, run_dir=tmp_path / "run", progress=False, repeats=3, min_time_s=0.0,
                       recalibrate=False, rounds=2)
    part = json.loads((tmp_path / "run" / "samples.partial.json").read_text())
    assert [len(x["runs"]) for x in part["rows"]] == [1, 1, 1, 1]
    monkeypatch.setattr(V, "measure_arch", real)
    r = validate_table(micro_table, samples=4, run_dir=tmp_path / "run", progress=False, repeats=3, min_time_s=0.0,
                       recalibrate=False, rounds=2)
    assert [len(x["runs"]) for x in r["rows"]] == [2, 2, 2, 2]
    assert [x["runs"][0] for x in r["rows"]] == [x["runs"][0] for x in part["rows"]]  # round 1 kept


def test_validate_can_factor_out_the_machines_level_now(micro_table, tmp_path):
    r = validate_table(micro_table, samples=3, run_dir=tmp_path / "run", progress=False, repeats=3,
                       min_time_s=0.0, recalibrate=True, calibration=3)
    assert r["level"]["samples"] == 3 and r["level"]["factor"] > 0 and r["recalibrated"]["n"] == 3
    assert all(row["recalibrated_ms"] == pytest.approx(r["level"]["factor"] * row["corrected_ms"]) for row in r["rows"])
    assert "level now" in (tmp_path / "run" / "report.md").read_text()


def test_fit_level_is_the_median_ratio():
    assert fit_level([10.0, 20.0, 40.0], [10.2, 20.4, 48.0])["factor"] == pytest.approx(1.02)


def test_validate_refuses_estimated_tables(micro_table):
    est = LatencyTable.from_entries(micro_table.entries, name="est", kind="estimated", device="phone",
                                    backend="coreml (estimated)", space=micro_table.space)
    with pytest.raises(SlimformerError, match="validation measures on this machine"):
        validate_table(est, samples=3, progress=False)


def test_build_resumes_after_the_process_is_killed(tmp_path):
    space_file = tmp_path / "micro.json"
    space_file.write_text(json.dumps(micro_space().to_dict()))
    cmd = [sys.executable, "-m", "slimformer", "lut", "build", "--table", "killed", "--space", str(space_file),
           "--lut-dir", str(tmp_path), "--repeats", "3", "--calibration", "3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "killed.partial.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before, cal = {}, []
    for line in journal.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "key" in rec:
            before[rec["key"]] = rec["entry"]
        else:
            cal.append(rec["calibration"])
    assert len(before) + len(cal) >= 5 and before and not (tmp_path / "killed.json").exists()
    t = build_table(name="killed", space=micro_space(), lut_dir=tmp_path, progress=False, **FAST)
    assert set(t.entries) == set(space_ops(micro_space()))
    assert all(_as_measured(t.entries[k]) == e for k, e in before.items())  # kept, not measured again
    assert t.meta["build"]["calibration"][:len(cal)] == cal and len(t.meta["build"]["calibration"]) == 3  # 1 round


def test_cpu_clock_tables_record_it_and_validate_with_it(tmp_path):
    sp = micro_space()
    t = build_table(name="cpu-clock", space=sp, lut_dir=tmp_path, progress=False, clock="cpu", **FAST)
    assert t.clock == "cpu" and LatencyTable.load(t.path).clock == "cpu"
    r = validate_table(t, samples=2, run_dir=tmp_path / "v", progress=False, repeats=3, min_time_s=0.0)
    assert r["clock"] == "cpu" and r["samples"] == 2


@pytest.mark.slow
def test_the_tiny_space_builds_and_validates(tmp_path, tiny_space):
    t = build_table(name="tiny-ort", space="tiny", lut_dir=tmp_path, progress=False, **FAST)
    assert set(t.entries) == set(space_ops(tiny_space)) and len(t.entries) == 92
    r = validate_table(t, samples=5, run_dir=tmp_path / "v", progress=False, repeats=3, min_time_s=0.0)
    assert r["samples"] == 5 and r["corrected"]["n"] == 5
    for cfg in (tiny_space.smallest(), tiny_space.largest()):
        assert t.predict(cfg) > 0


def test_an_efficientvit_table_is_built_and_profiled_in_context_like_a_metablock_one(tmp_path):
    """No family special case in the build: EfficientViT's subnets are profiled node by node too."""
    from slimformer.latency_lut._keys import op_kind
    from slimformer.supernet.efficientvit import EfficientViTSpace

    sp = EfficientViTSpace(stage_widths=((16,), (32,), (48,)), depths=(1, 1, 1), heads=(1, 2), qk_dims=(4,),
                           v_dims=(8,), ffn_ratios=(1.0,), kernels=(3,), img_size=32, window=2, num_classes=10,
                           name="evit-micro")
    t = build_table(name="evit-micro", space=sp, lut_dir=tmp_path, progress=False, context=2, **FAST)
    assert set(t.entries) == set(space_ops(sp)) and t.space_hash == sp.hash
    ctx = t.meta["context"]
    assert ctx["subnets"] == 2 and set(ctx["factors"]) <= {op_kind(k) for k in t.entries}
    assert {"evit.head", "evit.dwffn", "evit.mix"} <= set(ctx["factors"])
    assert all(("alone_ms" in e) == ctx["kept"] for e in t.entries.values())


def test_the_cuda_backend_builds_and_validates_through_the_same_path(tmp_path, monkeypatch):
    """torch-cuda with the GPU faked by the CPU: the table says which GPU and backend, validation re-measures
    with the table's backend (the real run is scripts/gpu_session.sh on a CUDA machine)."""
    import torch

    from slimformer.latency_lut import _build, _measure

    synced = []
    for mod in (_measure, _build):
        monkeypatch.setattr(mod, "cuda_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: synced.append(dev))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Fake GPU")
    t = build_table(name="micro-cuda", backend="torch-cuda", space=micro_space(), lut_dir=tmp_path, progress=False,
                    **FAST)
    assert t.backend == "torch-cuda" and t.runtime["gpu"] == "Fake GPU" and "cuda" in t.runtime
    assert set(t.entries) == set(space_ops(micro_space())) and synced  # every call ended with a synchronize
    assert "context" not in t.meta  # the per-node profiler is onnxruntime's
    r = validate_table(t, samples=3, rounds=1, run_dir=tmp_path / "val", progress=False, recalibrate=False)
    assert r["samples"] == 3 and r["corrected"]["mape_pct"] >= 0
    assert t.mismatch(backend="torch") is not None and t.mismatch(backend="torch-cuda") is None
