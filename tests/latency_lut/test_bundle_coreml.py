"""CoreML bundles: every op of the tiny space converts, the runner refuses off macOS in one line, its macOS
path (driven with a stand-in for coremltools' runtime, which exists only on macOS) writes the results
format ``lut import`` reads, and a conversion failure is one line naming the op."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import typing

import pytest

from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.latency_lut import get_table, space_ops
from slimformer.latency_lut._bundle import read_manifest, write_bundle

if os.environ.get("SLIMFORMER_REQUIRE_COREML"):  # .ci/run sets it: there these tests run, never skip
    import coremltools as ct
else:
    ct = pytest.importorskip("coremltools", reason="the coreml extra (in dev; .ci/run requires it)")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def coreml_bundle(tmp_path_factory):
    from slimformer.supernet import get_space

    d = tmp_path_factory.mktemp("cbundle") / "b"
    write_bundle(d, space=get_space("tiny"), fmt="coreml", calibration=9, progress=False)  # 3 subnets per correction term
    return d


def _spec(path):
    from slimformer.latency_lut._bundle import quiet

    with quiet():
        return ct.utils.load_spec(str(path))


def test_every_op_of_the_tiny_space_converts(coreml_bundle):
    from slimformer.supernet import get_space

    m = read_manifest(coreml_bundle)
    assert m["format"] == "coreml" and [op["key"] for op in m["ops"]] == space_ops(get_space("tiny"))
    for item in [*m["ops"], *m["calibration"], m["noop"]]:
        spec = _spec(coreml_bundle / item["file"])
        assert spec.WhichOneof("Type") == "mlProgram"
        got = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
        assert got == {i["name"]: i["shape"] for i in item["inputs"]}, item["file"]
    attn = next(op for op in m["ops"] if op["key"].startswith("mb3d.attn"))
    ops = {o.type for f in _spec(coreml_bundle / attn["file"]).mlProgram.functions.values()
           for b in f.block_specializations.values() for o in b.operations}
    assert {"matmul", "softmax"} <= ops and "cast" not in ops  # shape-static: no int casts of sizes


def test_runner_refuses_off_macos_in_one_line(coreml_bundle):
    if sys.platform == "darwin":
        pytest.skip("this machine runs CoreML")
    out = subprocess.run([sys.executable, str(coreml_bundle / "run_bundle.py")], check=False,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "macOS" in out.stderr and out.stderr.count("\n") == 1
    assert not (coreml_bundle / "results.json").exists()


class _FakeModel:
    """Stands in for ``coremltools.models.MLModel`` (a runtime only macOS has): busy-waits in proportion to the
    package's weight bytes, so that bigger ops take longer, and records how it was loaded. (Not ``time.sleep``:
    its wake-up slack of tens of µs can swallow the differences between small ops; in one full-suite run the
    imported table's in-sample Kendall τ came out undefined, which the strict JSON writer refused.)"""

    loads: typing.ClassVar[list] = []

    def __init__(self, path, compute_units=None):
        import pathlib

        self.cost = sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file()) * 2e-10
        _FakeModel.loads.append((path, compute_units))

    def predict(self, feeds):
        import time

        assert all(v.dtype.name == "float32" for v in feeds.values())
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass
        return {"y": next(iter(feeds.values()))}


def test_macos_path_writes_results_that_lut_import_reads(coreml_bundle, tmp_path, monkeypatch, capsys):
    from slimformer.latency_lut import _runner

    fake = types.SimpleNamespace(__version__="fake", ComputeUnit=types.SimpleNamespace(ALL="ALL", CPU_ONLY="CPU"),
                                 models=types.SimpleNamespace(MLModel=_FakeModel))
    monkeypatch.setitem(sys.modules, "coremltools", fake)
    monkeypatch.setattr(_runner.sys, "platform", "darwin")
    out = tmp_path / "results.json"
    assert _runner.main([str(coreml_bundle), "-o", str(out), "--warmup", "1", "--repeats", "3"]) == 0
    m = read_manifest(coreml_bundle)
    loaded = [p for p, _ in _FakeModel.loads]
    assert {u for _, u in _FakeModel.loads} == {"ALL"}
    # no-op, ops, one round of subnets, the reference subnet they alternate with and the reference op every op
    # alternates with (each loaded once), and the ops whose reference op moved, retaken: a CoreML model runs on
    # every unit it may use, so its ops are paired whatever --threads says
    r = json.loads(out.read_text())
    assert m["reference_op"]["key"] == r["reference_op"] and r["settings"]["pair_ops"]
    assert len(loaded) == 1 + len(m["ops"]) + len(m["calibration"]) + 2 + len(r["retaken"])
    assert sum(p.endswith("_reference.mlpackage") for p in loaded) == 1
    assert all("ratio" in e for e in r["entries"].values())
    assert r["format"] == "coreml" and r["runtime"]["compute_units"] == "ALL" and r["complete"]
    assert main(["lut", "import", str(out), "--name", "fake-mac", "--lut-dir", str(tmp_path),
                 "--bundle", str(coreml_bundle)]) == 0
    t = get_table("fake-mac", lut_dir=tmp_path)
    assert t.kind == "imported" and t.backend == "coreml" and t.correction["samples"] == len(m["calibration"])


def test_synthetic_coreml_results_import(coreml_bundle, tmp_path):
    """A results file in the runner's format, filled with the ``iphone-lut`` estimate's own entries, imports
    into a table that predicts what the estimate predicts, plus one call's overhead."""
    from slimformer.latency_lut._iphone import estimate_table
    from slimformer.latency_lut._runner import RESULTS_SCHEMA, manifest_id
    from slimformer.supernet import ArchConfig, get_space

    m = read_manifest(coreml_bundle)
    est = estimate_table("v1", space=get_space("tiny"))
    ov = 0.05
    cal = {str(j): {"arch": c["arch"], "index": j % len(m["calibration"]), "round": j // len(m["calibration"]),
                    "median_ms": est.predict(ArchConfig.from_dict(c["arch"])) + ov, "spread_ms": 0.0, "count": 5}
           for j, c in enumerate(m["calibration"] * 2)}
    r = {"schema": RESULTS_SCHEMA, "manifest_id": manifest_id(m), "format": "coreml", "space": m["space"],
         "space_hash": m["space_hash"], "batch": 1, "device": "synthetic iPhone",
         "platform": {"system": "iOS", "machine": "iPhone13,2", "processor": "", "python": "3.11"},
         "runtime": {"runtime": "coremltools", "compute_units": "ALL"}, "settings": {"threads": 1},
         "started": "2026-12-01T00:00:00+00:00", "finished": "2026-12-01T00:10:00+00:00", "complete": True,
         "overhead": {"median_ms": ov, "spread_ms": 0.0, "count": 5},
         "entries": {k: {"median_ms": e["median_ms"] + ov, "spread_ms": 0.0, "count": 5}
                     for k, e in est.entries.items()}, "calibration": cal}
    p = tmp_path / "synthetic.json"
    p.write_text(json.dumps(r))
    assert main(["lut", "import", str(p), "--name", "synth", "--lut-dir", str(tmp_path),
                 "--bundle", str(coreml_bundle)]) == 0
    t = get_table("synth", lut_dir=tmp_path)
    assert t.backend == "coreml" and t.device == "synth" and t.meta["host"] == "synthetic iPhone"
    for cfg in (t.space.smallest(), t.space.largest()):
        assert t.predict(cfg) == pytest.approx(est.predict(cfg) + ov, rel=0.02)  # + one call's overhead


def test_conversion_failure_is_one_line_naming_the_op(tmp_path, monkeypatch, capsys):
    import torch

    from slimformer.latency_lut import _bundle
    from slimformer.supernet import get_space

    def broken(*a, **k):
        raise TypeError("only 0-dimensional arrays can be converted to Python scalars\n(400 lines)")

    monkeypatch.setattr(ct, "convert", broken)
    assert main(["lut", "bundle", "--format", "coreml", "-o", str(tmp_path / "c"), "--space", "tiny"]) == 2
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "Traceback" not in err and err.endswith("\n") and "error:" in err.splitlines()[-1]
    err = err.splitlines()[-1]  # the progress bar's line stays above the one error line
    first = space_ops(get_space("tiny"))[0]
    assert f"CoreML conversion of op {first} failed" in err and "TypeError: (400 lines)" in err
    with pytest.raises(SlimformerError, match="conversion of the no-op model failed"):
        _bundle.convert_coreml(ct, _bundle._Scale(), (torch.zeros(1, 1),), what="the no-op model")
