from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.latency_lut import get_table, space_ops
from slimformer.latency_lut._bundle import import_results, read_manifest, write_bundle
from slimformer.supernet import get_space


@pytest.fixture(scope="module")
def measured_bundle(tmp_path_factory):
    """The tiny space's ONNX bundle, measured by its own runner in a subprocess (few repeats)."""
    d = tmp_path_factory.mktemp("bundle")
    manifest = write_bundle(d / "b", space=get_space("tiny"), fmt="onnx", progress=False)
    out = subprocess.run([sys.executable, str(d / "b" / "run_bundle.py"), "--warmup", "1", "--repeats", "3",
                          "--op-repeats", "2", "--device-name", "test-device", "--pair-ops", "on", "--profile", "5"], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return manifest.parent, d / "b" / "results.json"


def test_bundle_holds_every_op_a_manifest_and_a_standalone_runner(measured_bundle):
    b, _ = measured_bundle
    m = read_manifest(b)
    from slimformer.supernet import get_space

    assert [op["key"] for op in m["ops"]] == space_ops(get_space("tiny"))
    assert all((b / op["file"]).is_file() for op in m["ops"]) and (b / m["noop"]["file"]).is_file()
    assert len(m["calibration"]) == 10 and all((b / c["file"]).is_file() for c in m["calibration"])
    assert m["calibration_rounds"] == 1  # paired with the reference subnet, as `lut build` times them: one round
    from slimformer.latency_lut._fidelity import reference_config

    assert m["reference"]["arch"] == reference_config(get_space("tiny")).to_dict()  # paired, as lut build times
    assert (b / m["reference"]["file"]).is_file()
    from slimformer.latency_lut._fidelity import reference_op

    assert m["reference_op"] in m["ops"] and m["reference_op"]["key"] == reference_op(get_space("tiny"))
    assert m["onnx_export"]["opset"] == 18 and "batch" in m["onnx_export"]["dynamic_axes"]
    runner = (b / "run_bundle.py").read_text()
    assert "slimformer" not in "".join(l for l in runner.splitlines() if l.startswith(("import", "from")))


def m_ref_op(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["reference_op"]


def test_round_trip_gives_a_usable_imported_table(measured_bundle, tmp_path, capsys):
    b, results = measured_bundle
    r = json.loads(results.read_text())
    assert r["complete"] and r["device"] == "test-device" and r["overhead"]["median_ms"] > 0
    assert main(["lut", "import", str(results), "--name", "tinydev", "--lut-dir", str(tmp_path),
                 "--bundle", str(b), "--space", "tiny"]) == 0
    assert "tinydev" in capsys.readouterr().out
    t = get_table("tinydev", lut_dir=tmp_path)
    assert t.kind == "imported" and t.backend == "onnxruntime" and t.space.name == "tiny"
    assert t.overhead_ms == pytest.approx(r["overhead"]["median_ms"])
    key = next(iter(r["entries"]))
    # each op timed in alternation with the bundle's reference op: its own median (overhead off) kept as own_ms,
    # median_ms its ratio at the run's level, overhead off (when the device's context profiles were kept, that
    # moves to alone_ms and median_ms is scaled per kind)
    e, re_ = t.entries[key], r["entries"][key]
    level = t.meta["reference_op"]["median_ms"]
    assert r["reference_op"] == m_ref_op(b)["key"] == t.meta["reference_op"]["key"]
    # ops whose reference op ran > 25 % off its median were measured again, once, at the end of the run
    assert len(set(r["retaken"])) == len(r["retaken"]) == t.meta["reference_op"]["retaken"]
    assert set(r["retaken"]) <= set(r["entries"])
    assert level == pytest.approx(float(np.median([x["ref_ms"] for x in r["entries"].values()])))
    assert e["own_ms"] == pytest.approx(max(re_["median_ms"] - t.overhead_ms, 0))
    b = t.meta["reference_op"]["beside"]  # the reference's slowdown beside an op of this size taken out
    at_level = re_["ratio"] * level * np.exp(b["intercept"] + b["slope"] * np.log(re_["ratio"]))
    assert e.get("alone_ms", e["median_ms"]) == pytest.approx(max(at_level - t.overhead_ms, 0))
    assert ("alone_ms" in e) == t.meta.get("context", {}).get("kept", False)
    sp = t.space
    assert 0 < t.predict(sp.smallest()) < t.predict(sp.largest())
    # the composition correction is fitted on the device's calibration subnets, one round each
    assert len(r["calibration"]) == 10 and t.correction["samples"] == 10 and t.error["samples"] == 10
    # each calibration subnet timed in alternation with the bundle's reference subnet, fitted at the run's level
    from slimformer.latency_lut._fidelity import reference_ms

    assert all(c["ratio"] > 0 and c["ref_ms"] > 0 for c in r["calibration"].values())
    assert t.meta["reference"]["median_ms"] == pytest.approx(reference_ms(list(r["calibration"].values())))
    assert set(t.error) >= {"uncorrected", "corrected"} and t.correction["scale"] > 0


def test_runner_resumes_after_a_kill_and_refuses_a_foreign_folder(measured_bundle, tmp_path):
    b, results = measured_bundle
    before = json.loads(results.read_text())
    cut = dict(before, complete=False, entries=dict(list(before["entries"].items())[:-3]))  # as if killed
    (tmp_path / "partial.json").write_text(json.dumps(cut))
    out = subprocess.run([sys.executable, str(b / "run_bundle.py"), "-o", str(tmp_path / "partial.json"),
                          "--warmup", "1", "--repeats", "3", "--op-repeats", "2", "--device-name", "test-device",
                          "--pair-ops", "on", "--profile", "5"], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after = json.loads((tmp_path / "partial.json").read_text())
    assert after["complete"] and set(after["entries"]) == set(before["entries"])
    assert after["retaken"][:len(before["retaken"])] == before["retaken"]  # none retaken a second time
    kept = [k for k in list(before["entries"])[:-3] if k not in after["retaken"][len(before["retaken"]):]]
    assert all(after["entries"][k] == before["entries"][k] for k in kept)  # only the missing ops were measured
    total = len(before["entries"]) + len(before["calibration"])  # ops + one round of the calibration subnets
    assert f"[{total - 2}/{total}]" in out.stderr and f"[{total - 3}/" not in out.stderr
    assert after["calibration"] == before["calibration"] and after["context"] == before["context"]
    bad = subprocess.run([sys.executable, str(b / "run_bundle.py"), str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "manifest" in bad.stderr and "Traceback" not in bad.stderr


def test_runner_profiles_calibration_subnets_node_by_node_as_lut_build_does(measured_bundle, tmp_path):
    """``--profile 5``: half the calibration subnets run with onnxruntime's profiler on the device; the import gives
    each node to an op of that subnet, every node once, and fits the in-context factors exactly as a local build
    does. Unless told, the runner profiles as ``lut build`` does: none where the bundle pairs them, else half."""
    from slimformer.latency_lut import arch_ops
    from slimformer.latency_lut._context import attribute_runs
    from slimformer.latency_lut._runner import PROFILE_RUNS, default_profile
    from slimformer.supernet import arch_from_dict

    b, results = measured_bundle
    m = read_manifest(b)
    assert default_profile(m) == 0 and default_profile({k: v for k, v in m.items() if k != "reference"}) == 5
    r = json.loads(results.read_text())
    assert r["settings"]["profile"] == 5 and [p["index"] for p in r["context"]] == list(range(5))
    for p in r["context"]:
        cfg = arch_from_dict(p["arch"])
        runs = attribute_runs(p["runs"], cfg)
        assert len(runs) == PROFILE_RUNS and all(set(x["keys"]) == set(arch_ops(cfg)) for x in runs)
        for run, raw in zip(runs, p["runs"]):
            assert sum(run["keys"].values()) == pytest.approx(sum(us for _, us in raw["nodes"]) / 1e3)
            assert run["nodes_ms"] <= run["run_ms"] * 1.001
    t = import_results(results, name="tinyctx", lut_dir=tmp_path, bundle=b)
    ctx = t.meta["context"]
    assert ctx["subnets"] == 5 and set(ctx["in_sample"]) == {"alone", "in_context"}
    assert all(0.5 <= v <= 3.0 for v in ctx["factors"].values())
    assert ctx["kept"] == all("alone_ms" in e for e in t.entries.values())
    assert ("entries in context" in t.error["method"]) == ctx["kept"]


def test_runner_without_profiles_still_imports_and_refuses_a_negative_count(measured_bundle, tmp_path):
    b, results = measured_bundle
    old = tmp_path / "old.json"
    r = json.loads(results.read_text())
    r.pop("context")  # results of the runner before it profiled
    old.write_text(json.dumps(r))
    t = import_results(old, name="tinyold", lut_dir=tmp_path, bundle=b)
    assert "context" not in t.meta and t.correction["samples"] == 10
    bad = subprocess.run([sys.executable, str(b / "run_bundle.py"), "--profile", "-1"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--profile >= 0" in bad.stderr and "Traceback" not in bad.stderr


def test_runner_caps_long_calls_as_lut_build_does(measured_bundle):
    """The runner's timer cuts the repeats of calls that would take over --max-time-s, never under 5, and
    records the cap in its settings (so a run under another cap does not resume into this one)."""
    import time

    from slimformer.latency_lut._runner import MIN_REPEATS, TIME_CAP_S, measure

    def slow():
        time.sleep(0.02)

    assert measure(slow, 3, 15, 10.0, 0)["count"] == 15
    assert measure(slow, 3, 15, 10.0, 0, 0.03)["count"] == MIN_REPEATS
    assert measure(lambda: None, 3, 15, 10.0, 0, 1.0)["count"] == 15
    _, results = measured_bundle
    assert json.loads(results.read_text())["settings"]["max_time_s"] == TIME_CAP_S
    bad = subprocess.run([sys.executable, str(measured_bundle[0] / "run_bundle.py"), "--max-time-s", "nan"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--max-time-s >= 0" in bad.stderr and "Traceback" not in bad.stderr


def test_runner_times_ops_op_repeats_calls_without_retries_and_subnets_repeats(measured_bundle):
    """``--op-repeats`` as ``lut build`` times ops: that many calls, no noise retry; calibration subnets keep
    ``--repeats``; and the setting is recorded, so a run with other op repeats does not resume into this one."""
    _, results = measured_bundle
    r = json.loads(results.read_text())
    assert r["settings"]["op_repeats"] == 2
    assert all(e["count"] == 2 and e["attempts"] == 1 for e in r["entries"].values())
    assert all(c["count"] == 3 for c in r["calibration"].values())
    bad = subprocess.run([sys.executable, str(measured_bundle[0] / "run_bundle.py"), "--op-repeats", "0"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--op-repeats >= 1" in bad.stderr and "Traceback" not in bad.stderr


def _variant(results, tmp_path, edit) -> str:
    r = json.loads(results.read_text())
    edit(r)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(r))
    return str(p)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["entries"].pop(next(iter(r["entries"]))), "missing"),
    (lambda r: r["entries"].__setitem__("mb4d-r8-c999-mlp9", {"median_ms": 1, "spread_ms": 0, "count": 3}),
     "not in the space"),
    (lambda r: r.__setitem__("complete", False), "incomplete"),
    (lambda r: r["space"].__setitem__("depths", [1, 1, 1, 1]), "damaged"),
    (lambda r: r.__setitem__("manifest_id", "0" * 16), "another bundle|does not come from"),
    (lambda r: r.__setitem__("schema", "something/1"), "not the output"),
    (lambda r: r.pop("overhead"), "malformed"),
])
def test_mismatched_results_give_one_clear_error(measured_bundle, tmp_path, capsys, edit, message):
    b, results = measured_bundle
    p = _variant(results, tmp_path, edit)
    with pytest.raises(SlimformerError, match=message):
        import_results(p, name="x", lut_dir=tmp_path, bundle=b)
    assert main(["lut", "import", p, "--name", "x", "--lut-dir", str(tmp_path), "--bundle", str(b)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_results_of_another_space_are_refused(measured_bundle, tmp_path):
    from slimformer.supernet import SearchSpace

    _, results = measured_bundle
    with pytest.raises(SlimformerError, match="measured for space"):
        import_results(results, name="x", lut_dir=tmp_path, space=SearchSpace())


def test_coreml_without_coremltools_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # as if not installed: `import coremltools` fails
    assert main(["lut", "bundle", "--format", "coreml", "-o", str(tmp_path / "c"), "--space", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "coremltools" in err and "pip install" in err and err.count("\n") == 1


def test_bundle_resumes_and_refuses_a_folder_of_another_space(tmp_path):
    from slimformer.supernet import SearchSpace, get_space

    sp = get_space("tiny")
    m = write_bundle(tmp_path / "b", space=sp, progress=False)
    files = sorted((tmp_path / "b" / "models").glob("*.onnx"))
    victim, kept = files[0], files[1]
    victim.unlink()
    m.unlink()  # as if killed before the manifest was written
    stamp = kept.stat().st_mtime_ns
    write_bundle(tmp_path / "b", space=sp, progress=False)
    assert victim.is_file() and kept.stat().st_mtime_ns == stamp and m.is_file()
    with pytest.raises(SlimformerError, match="another space"):
        write_bundle(tmp_path / "b", space=SearchSpace(), progress=False)
