from __future__ import annotations

import json

import pytest

from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.export._bench import format_table, resolve_model, run_bench
from slimformer.latency_lut import ONNX_EXPORT


@pytest.fixture(scope="module")
def two_archs(tmp_path_factory):
    from slimformer.supernet import get_space

    d = tmp_path_factory.mktemp("archs")
    sp = get_space("tiny")
    paths = []
    for name, cfg in (("small", sp.smallest()), ("big", sp.largest())):
        (d / name).mkdir()
        (d / name / "arch.json").write_text(json.dumps({"arch": cfg.to_dict(), "predicted_ms": 0.3}))
        paths.append(str(d / name / "arch.json"))
    return paths


def test_bench_two_tiny_models(two_archs, tiny_lut_dir, tmp_path):
    rd, data = run_bench(two_archs, run_dir=tmp_path / "b", repeats=3, warmup=1, batch=4,
                         with_lut=["tiny-test"], lut_dir=str(tiny_lut_dir), progress=False)
    assert (rd / "bench.json").is_file() and (rd / "bench.png").stat().st_size > 1000
    assert (rd / "report.md").is_file()
    models = list(data["models"].values())
    assert [m["name"] for m in models] == ["small", "big"]  # run dirs name search outputs
    for m in models:
        for be in ("onnxruntime", "torch"):
            r = m["results"][be]
            assert r["latency"]["batch"] == 1 and r["latency"]["repeats"] == 3
            assert r["latency"]["p10_ms"] <= r["latency"]["median_ms"] <= r["latency"]["p90_ms"]
            assert r["throughput"]["batch"] == 4 and r["throughput"]["images_per_s"] > 0
        assert m["lut"]["tiny-test"]["ms"] > 0.5
    assert models[0]["macs"] < models[1]["macs"]
    table = format_table(data)
    assert "small" in table and "LUT tiny-test ms" in table
    assert data["settings"]["threads"] == 1
    assert data["settings"]["onnx_export"] == ONNX_EXPORT  # measured as the tables are: one exporter, one timer
    assert "10%" in data["settings"]["timer"] and "2 times" in data["settings"]["timer"]  # says the defaults used


def test_bench_resumes_without_remeasuring(two_archs, tmp_path, monkeypatch):
    rd, first = run_bench(two_archs[:1], run_dir=tmp_path / "r", backends=("onnxruntime",), repeats=2, warmup=0,
                          batch=2, progress=False)
    import slimformer.export._bench as b

    monkeypatch.setattr(b, "bench_one", lambda *a, **k: pytest.fail("re-measured a finished model"))
    _, again = run_bench(two_archs[:1], run_dir=rd, backends=("onnxruntime",), repeats=2, warmup=0, batch=2,
                         progress=False)
    assert again["models"] == first["models"]


def test_bench_onnx_file_with_card_and_errors(search_run, tmp_path, capsys):
    from slimformer.export import export_model, resolve_source

    export_model(resolve_source(search_run), tmp_path / "e", formats=("onnx",), measure=False)
    bm = resolve_model(str(tmp_path / "e" / "model.onnx"))
    assert bm.model is None and bm.img_size == 32
    rc = main(["bench", str(tmp_path / "e" / "model.onnx"), "--repeats", "2", "--batch", "2",
               "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert rc == 0 and "onnxruntime ms" in out and (tmp_path / "cli" / "bench.json").is_file()
    with pytest.raises(SlimformerError, match="unknown timm model"):
        resolve_model("timm:no_such_model")
    assert main(["bench", "timm:no_such_model", "--out", str(tmp_path / "x")]) == 2
    assert main(["bench", "l1", "--with-lut", "no-such-table", "--out", str(tmp_path / "y")]) == 2
    assert "no-such-table" in capsys.readouterr().err


def test_timm_baseline_resolves():
    bm = resolve_model("timm:efficientvit_m0")
    assert bm.kind == "timm" and bm.img_size == 224 and bm.params > 1e6 and bm.macs > 1e7


def test_bench_cuda_without_gpu_is_a_clear_error(two_archs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(SlimformerError, match="no CUDA GPU"):
        run_bench(two_archs[:1], run_dir=tmp_path / "g", device="cuda", progress=False)
