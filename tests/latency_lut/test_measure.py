from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from slimformer._errors import SlimformerError
from slimformer.latency_lut import build_op, export_onnx, measure_module, measure_overhead, ort_session
from slimformer.latency_lut._measure import ONNX_EXPORT, OPSET, measure_callable, summarize, time_calls
from slimformer.latency_lut._runner import MIN_REPEATS


@pytest.mark.parametrize("key", ["mb4d-r4-c16-mlp32", "mb3d.attn-t4-h2-qk8-v16", "mb3d.proj-t4-c32-i32",
                                 "head-t4-c32-k10-d2"])
def test_exported_op_computes_what_the_module_computes(key):
    m, x = build_op(key)
    sess = ort_session(export_onnx(m, x))
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), x)})[0]
    with torch.no_grad():
        want = m(*x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_ops_are_exported_as_models_are_deployed_dynamic_batch_one_opset():
    """One export path: a table entry's graph has the deployed model's opset and a free batch axis."""
    import onnx

    m, x = build_op("mb3d.attn-t4-h2-qk8-v16")
    model = onnx.load_from_string(export_onnx(m, x))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    for v in (*model.graph.input, *model.graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort_session(model.SerializeToString())
    x3 = x[0].expand(3, *x[0].shape[1:]).contiguous()
    with torch.no_grad():
        want = m(x3).numpy()
    np.testing.assert_allclose(sess.run(None, {"x0": x3.numpy()})[0], want, rtol=1e-4, atol=1e-5)
    assert ONNX_EXPORT["opset"] == OPSET and "batch" in ONNX_EXPORT["dynamic_axes"]


def test_one_summary_gives_median_iqr_and_percentiles():
    s = summarize([float(i) for i in range(1, 102)])  # 1..101 ms
    assert (s["median_ms"], s["spread_ms"], s["p10_ms"], s["p90_ms"], s["min_ms"], s["count"]) == (
        51.0, 50.0, 11.0, 91.0, 1.0, 101)
    assert len(time_calls(lambda: None, repeats=7, min_time_s=0.0)) == 7


def test_long_calls_get_fewer_repeats_and_warm_ups_under_a_time_cap():
    calls = []

    def slow():  # at least 20 ms a call, however fast the machine
        calls.append(1)
        time.sleep(0.02)

    assert len(time_calls(slow, warmup=3, repeats=15, min_time_s=0.0)) == 15 and len(calls) == 18
    calls.clear()
    assert len(time_calls(slow, warmup=3, repeats=15, min_time_s=0.0, max_time_s=0.03)) == MIN_REPEATS
    assert len(calls) == 2 + MIN_REPEATS  # the warm-up stops after 2 calls once they took the cap
    assert len(time_calls(lambda: None, repeats=15, min_time_s=0.0, max_time_s=1.0)) == 15  # short calls: no cut
    r = measure_callable(slow, warmup=1, repeats=15, min_time_s=0.0, retries=0, max_time_s=0.03)
    assert r["count"] == MIN_REPEATS


CUDA = pytest.param("torch-cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", CUDA])
def test_measure_module_reports_median_spread_count(backend):
    m, x = build_op("mb4d-r4-c16-mlp32")
    r = measure_module(m, x, backend=backend, repeats=5, min_time_s=0.0, batch=2)
    assert r["median_ms"] > 0 and r["spread_ms"] >= 0 and r["count"] >= 5 and r["attempts"] >= 1


def test_noisy_measurements_are_taken_again_and_the_lowest_median_kept():
    pattern = itertools.cycle([0.0, 0.004])  # half the calls 4 ms slower: spread far above 10% of the median

    def fn():
        d = next(pattern)
        if d:
            time.sleep(d)

    r = measure_callable(fn, warmup=1, repeats=8, min_time_s=0.0, retries=2)
    assert r["attempts"] == 3
    steady = measure_callable(lambda: sum(range(2000)), warmup=2, repeats=30, min_time_s=0.0, retries=2, noise=10.0)
    assert steady["attempts"] == 1


def test_cpu_clock_leaves_out_sleeping():
    r = measure_callable(lambda: time.sleep(0.002), warmup=1, repeats=5, min_time_s=0.0, clock="cpu", retries=0)
    w = measure_callable(lambda: time.sleep(0.002), warmup=1, repeats=5, min_time_s=0.0, clock="wall", retries=0)
    assert r["median_ms"] < 1.0 and w["median_ms"] >= 2.0


def test_overhead_is_small_and_options_are_checked():
    assert 0 < measure_overhead(repeats=20, min_time_s=0.0)["median_ms"] < 1.0
    m, x = build_op("flat-t4-c16")
    with pytest.raises(SlimformerError, match="unknown backend"):
        measure_module(m, x, backend="tvm")
    with pytest.raises(SlimformerError, match="--threads 1"):
        measure_module(m, x, clock="cpu", threads=2)


def test_the_cuda_backend_without_a_gpu_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m, x = build_op("flat-t4-c16")
    with pytest.raises(SlimformerError, match="torch-cuda needs a CUDA GPU"):
        measure_module(m, x, backend="torch-cuda")


def test_a_correction_fitted_on_few_subnets_is_a_scale_and_never_prices_below_zero():
    """Three subnets fit scale, offset and per-op term exactly, and such a fit extrapolates below zero: with fewer
    than three subnets per term the correction is the scale alone."""
    from slimformer.latency_lut import fit_correction
    from slimformer.latency_lut._fidelity import MIN_SAMPLES_PER_TERM

    p, m, n = [0.10, 0.12, 0.20], [0.20, 0.15, 0.25], [10, 14, 12]

    def price(c, raw=0.10, ops=30):
        return c["scale"] * raw + c["offset_ms"] + c["per_op_ms"] * ops
    c = fit_correction(p, m, n)
    assert (c["offset_ms"], c["per_op_ms"]) == (0.0, 0.0) and 0.2 <= c["scale"] <= 5.0 and price(c) > 0
    k = MIN_SAMPLES_PER_TERM  # the same three subnets k times over: enough samples for all three terms, and the
    more = fit_correction(p * k, m * k, n * k)  # exact fit (per-op term < 0) prices a subnet of 30 ops below zero
    assert more["per_op_ms"] < 0 and price(more) < 0


def test_fit_correction_recovers_scale_and_offset_and_fidelity_figures():
    from slimformer.latency_lut import fidelity, fit_correction

    rng = np.random.default_rng(0)
    p = rng.uniform(5, 60, 10)
    m = 1.03 * p + 0.6
    c = fit_correction(p, m)
    assert c["scale"] == pytest.approx(1.03, rel=1e-6) and c["offset_ms"] == pytest.approx(0.6, abs=1e-5)
    f = fidelity(p, m)
    assert f["kendall_tau"] == pytest.approx(1.0) and f["n"] == 10
    err = np.abs(p - m) / m
    assert f["within_5pct"] == np.mean(err <= 0.05) and f["mape_pct"] == pytest.approx(100 * err.mean())
    assert fidelity(1.03 * p + 0.6, m)["within_5pct"] == 1.0


def test_fidelity_of_tied_predictions_has_tau_zero_not_nan():
    """Predictions that all tie (a device timed on a coarse clock) carry no order: τ 0, so the table stays writable."""
    from slimformer.latency_lut import fidelity

    f = fidelity([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert f["kendall_tau"] == 0.0 and f["within_5pct"] == pytest.approx(1 / 3)


def test_repeatability_compares_the_two_rounds_of_each_subnet():
    from slimformer.latency_lut import repeatability

    rows = [{"runs": [{"median_ms": a}, {"median_ms": b}]} for a, b in ((10.0, 10.2), (10.0, 9.0), (20.0, 20.0), (5.0, 5.4))]
    r = repeatability(rows)  # +2 %, -10 %, 0 %, +8 %
    assert r["repeat_within_5pct"] == pytest.approx(0.5)
    assert r["repeat_sd"] == pytest.approx(0.0648, abs=1e-3)  # population sd of +2, -10, 0, +8 %
    assert repeatability([{"runs": [{"median_ms": 1.0}]}]) == {"repeat_sd": None, "repeat_within_5pct": None}


def test_onnxruntime_sessions_do_not_spin_between_ops():
    """Spinning intra-op threads took the cores the work needed at 2 threads here (docs/lut-fidelity.md)."""
    from slimformer.latency_lut._measure import export_onnx, runtime_versions
    from slimformer.latency_lut._runner import onnx_session

    s = onnx_session(export_onnx(torch.nn.ReLU(), (torch.zeros(1, 4),)), 2)
    assert s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runtime_versions("onnxruntime")["allow_spinning"] == "0"  # what a table records


def test_the_spinning_benchmark_makes_sessions_with_spinning_on_and_off():
    from tests.conftest import load_benchmark

    bench = load_benchmark("ort_spinning")
    for spin in (True, False):
        out = bench.session(torch.nn.ReLU(), torch.zeros(1, 4), threads=1, batch=3, spin=spin)()
        assert out[0].shape == (3, 4)
    assert bench.sd_pct([2.0, 2.0]) == 0.0



@pytest.mark.parametrize("key", ["mb3d.attn-t4-h2-qk8-v16", "mb4d-r4-c16-mlp32",
                                 "evit.head-r14-w7-i96-qk32-v96-k7", "evit.mix-r14-w7-c192-h4-v48"])
def test_a_batched_runner_is_exported_on_one_image_and_fed_the_batch(key, monkeypatch):
    """The onnxruntime runner traces one image (the batch axis is dynamic, so the graph is the batched trace's)
    and feeds ``batch`` images; EfficientViT's windowed head inputs stack ``batch x`` windows on axis 0."""
    from slimformer.latency_lut import _measure
    from slimformer.latency_lut._measure import _as_tuple, _batched, onnx_nodes, runner

    m, x = build_op(key)
    m.eval()
    x1 = _as_tuple(x)
    x3 = _batched(x1, 3)
    assert all(t.shape[0] == 3 * s.shape[0] for t, s in zip(x3, x1))
    assert onnx_nodes(export_onnx(m, x1)) == onnx_nodes(export_onnx(m, x3))
    traced = []

    def export(module, example, **kw):
        traced.append([t.shape[0] for t in _as_tuple(example)])
        return export_onnx(module, example, **kw)

    monkeypatch.setattr(_measure, "export_onnx", export)
    got = runner(m, x, batch=3)()
    assert traced == [[t.shape[0] for t in x1]]  # traced once, on one image
    with torch.no_grad():
        want = _as_tuple(m(*x3))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)
