from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slimformer.latency_lut import build_op, get_table, space_ops
from slimformer.latency_lut._features import FEATURES, add_features, op_features
from slimformer.latency_lut._iphone import (
    SERIES,
    TERMS,
    design_row,
    fit_nonneg,
    in_vocabulary,
    leave_one_out,
    published_rows,
    timm_features,
)
from slimformer.supernet import SearchSpace, get_arch


# --------------------------------------------------------------------------- features
def test_conv_and_linear_flops_match_the_hand_count():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    f = op_features(conv, torch.zeros(1, 8, 32, 32))
    assert f["conv_flops"] == 2 * (16 * 16 * 16) * 8 * 9
    assert f["n_conv"] == 1 and f["n_ops"] == 1 and f["dwconv_flops"] == 0

    lin = nn.Linear(24, 40)
    f = op_features(lin, torch.zeros(1, 49, 24))
    assert f["linear_flops"] == 2 * 49 * 24 * 40
    assert f["attn_flops"] == 0 and f["n_linear"] == 1


def test_depthwise_norm_activation_softmax_and_folding():
    dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.GELU())
    f = op_features(dw, torch.zeros(1, 16, 8, 8))
    assert f["dwconv_flops"] == 2 * 16 * 8 * 8 * 9 and f["conv_flops"] == 0
    assert f["norm_elems"] == 0 and f["elt_elems"] == 0  # the BN after the conv is folded
    assert f["act_elems"] == 16 * 8 * 8

    class Attn(nn.Module):
        def forward(self, q, k):
            return (q @ k.transpose(-2, -1)).softmax(-1)

    q = torch.zeros(1, 2, 10, 4)
    f = op_features(Attn(), (q, q))
    assert f["attn_flops"] == 2 * 2 * 10 * 10 * 4 and f["linear_flops"] == 0
    assert f["softmax_elems"] == 2 * 10 * 10
    assert f["n_layout"] == 1  # the transpose is data movement on a device

    ln = nn.LayerNorm(12)
    f = op_features(ln, torch.zeros(1, 5, 12))
    assert f["norm_elems"] == 60 and f["n_norm"] == 1


def test_ops_on_parameters_alone_are_constant_folded():
    class Biased(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4, 4))

        def forward(self, x):
            return x + (self.w.t() * 2).sum()  # the parameter arithmetic is folded by converters

    f = op_features(Biased(), torch.zeros(1, 4))
    assert f["n_ops"] == 1 and f["n_layout"] == 0


def test_block_features_sum_to_the_network_features():
    """The per-op features of L1's keys add up to the features of the whole L1 network (same model)."""
    from slimformer.latency_lut import arch_ops
    from slimformer.supernet import EfficientFormerNet

    cfg = get_arch("l1")
    whole = op_features(EfficientFormerNet(cfg), torch.zeros(1, 3, 224, 224))
    parts = add_features(*(op_features(*build_op(k)) for k in arch_ops(cfg)))
    for k in ("conv_flops", "linear_flops", "attn_flops", "norm_elems", "softmax_elems"):
        assert parts[k] == pytest.approx(whole[k], rel=1e-6), k
    assert parts["n_ops"] == pytest.approx(whole["n_ops"], rel=0.05)


def test_timm_calibration_model_features():
    rows = {r.timm_name: r for r in published_rows("v1")}
    f, side, note = timm_features(rows["resnet50"])
    assert side == 224 and note is None
    assert f["conv_flops"] + f["linear_flops"] == pytest.approx(2 * 4.09e9, rel=0.02)  # ResNet-50: 4.1 GMACs
    _, side, note = timm_features(rows["efficientnet_b3"])  # input not stated: timm's default, said so
    assert note and str(side) in note


def test_patchify_network_term_counts_stride_4_stems_and_prices_no_op_of_the_space():
    from slimformer.latency_lut._iphone import NETWORK_TERMS, fit_row, network_features

    x = torch.zeros(1, 3, 64, 64)
    f = network_features(nn.Sequential(nn.Conv2d(3, 8, 16, stride=16), nn.Conv2d(8, 8, 3, stride=2)), x)
    assert f["n_patchify"] == 1 and f["patchify_flops"] == 2 * (8 * 4 * 4) * 3 * 16 * 16
    assert network_features(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)), x)["n_patchify"] == 0
    rows = {r.timm_name: r for r in published_rows("v1")}
    assert timm_features(rows["deit_tiny_patch16_224"])[0]["n_patchify"] == 1
    assert timm_features(rows["mobilenetv2_100"])[0]["n_patchify"] == 0
    # the space's stems are 3x3 stride-2 convolutions: the network term adds nothing to any table entry
    for key in [k for k in space_ops(SearchSpace()) if k.startswith("stem")][:6]:
        m, xin = build_op(key)
        assert network_features(m, xin)["n_patchify"] == 0, key
        assert (fit_row(op_features(m, xin))[len(TERMS):] == 0).all()
    assert len(fit_row(dict.fromkeys(FEATURES, 1.0))) == len(TERMS) + len(NETWORK_TERMS)


# --------------------------------------------------------------------------- the fit
def test_fit_is_non_negative_and_recovers_a_non_negative_truth():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 5, size=(18, len(TERMS)))
    truth = np.array([0.4, 0.01, 1.2, 0.2, 0.0, 1.5, 0.0, 0.3, 0.1, 0.0, 0.05])  # roofline cost 1.2 >= 1
    assert len(truth) == len(TERMS) + 1
    y = truth[0] + X @ truth[1:]
    w = fit_nonneg(X, y)
    assert (w >= 0).all()
    assert np.allclose(w[0] + X @ w[1:], y, rtol=1e-3)
    loo = leave_one_out(X, y)
    assert np.allclose(loo, y, rtol=1e-2)
    # data that a negative cost would fit better still gets non-negative costs
    w = fit_nonneg(X, 5.0 - X[:, 0] + X[:, 1] + 10)
    assert (w >= 0).all()


def test_no_op_is_priced_below_its_roofline():
    from slimformer.latency_lut._iphone import ROOFLINE_FLOOR

    rng = np.random.default_rng(1)
    X = rng.uniform(0, 5, size=(18, len(TERMS)))
    roof = 1 + [n for n, _, _ in TERMS].index("roofline")
    y = 0.5 + X[:, 0] * 0.01 + X[:, 3] * 0.7  # data in which the roofline term looks free
    w = fit_nonneg(X, y)
    assert w[roof] == pytest.approx(ROOFLINE_FLOOR) and (w >= 0).all()
    assert fit_nonneg(X, y, lower=np.zeros(len(TERMS) + 1))[roof] < ROOFLINE_FLOOR


def test_memory_features_and_the_roofline_of_one_op():
    from slimformer.latency_lut._features import DRAM_BYTES_PER_S, PEAK_OPS_PER_S, roofline_ms

    assert DRAM_BYTES_PER_S == pytest.approx(34.1e9, rel=1e-3) and PEAK_OPS_PER_S == 11e12
    lin = nn.Linear(512, 2048)  # 1.05 M weights: 2.1 MB at fp16, a memory-bound op at one token
    f = op_features(lin, torch.zeros(1, 1, 512))
    assert f["weight_bytes"] == 2 * (512 * 2048 + 2048)
    assert f["act_bytes"] == 2 * (512 + 2048)
    assert f["floor_ms"] == pytest.approx(1e3 * f["weight_bytes"] / DRAM_BYTES_PER_S)
    conv = nn.Conv2d(64, 64, 3, padding=1)  # 56x56: compute-bound
    f = op_features(conv, torch.zeros(1, 64, 56, 56))
    assert f["floor_ms"] == pytest.approx(1e3 * f["conv_flops"] / PEAK_OPS_PER_S)
    assert roofline_ms(11e9, 0) == pytest.approx(1.0) and roofline_ms(0, 34.128e6) == pytest.approx(1.0)
    # views and folded batch norms move nothing
    f = op_features(nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Flatten()), torch.zeros(1, 4, 2, 2))
    assert f["act_bytes"] == 2 * (16 + 16)


def test_published_data_is_read_from_the_package_and_series_stay_apart():
    v1, v2 = published_rows("v1"), published_rows("v2")
    assert len(v1) == 18 and {r.series for r in v1} == {"v1"}
    assert {r.series for r in v2} == {"v2"}
    assert next(r.ms for r in v1 if r.timm_name == "efficientformer_l1") == 1.6
    from slimformer._errors import SlimformerError

    with pytest.raises(SlimformerError, match="unknown series"):
        published_rows("v3")


# --------------------------------------------------------------------------- the shipped tables
@pytest.mark.parametrize("series", sorted(SERIES))
def test_shipped_tables_cover_the_default_space_and_carry_their_error(series):
    name = SERIES[series]
    t = get_table(name)
    space = SearchSpace()
    assert t.kind == "estimated" and t.space_hash == space.hash
    assert set(space_ops(space)) <= set(t.entries)
    assert all(e["median_ms"] >= 0 for e in t.entries.values()) and t.overhead_ms >= 0
    e = t.error
    assert e["method"] == "leave-one-model-out" and e["series"] == series
    fitted = [r for r in published_rows(series) if in_vocabulary(r.timm_name)]
    assert e["n_models"] == len(fitted) == len(e["per_model"])
    assert len(fitted) + len(e["out_of_vocabulary"]) == len(published_rows(series))
    assert {o["timm_name"] for o in e["out_of_vocabulary"]} >= {"efficientnet_b0", "mobilevit_xs"}
    assert 0 <= e["median_abs_pct"] <= e["worst_abs_pct"] and -1 <= e["spearman_rho"] <= 1
    assert "ESTIMATE" in t.meta["estimate"]
    l1, l3, l7 = (t.predict(get_arch(p)) for p in ("l1", "l3", "l7"))
    assert 0 < l1 < l3 < l7
    assert t.meta["presets"]["l1"]["predicted_ms"] == pytest.approx(l1, abs=1e-3)
    # wider / deeper costs more, and a random subnet lies between the smallest and the largest
    assert t.predict(space.smallest()) < t.predict(space.sample(3)) < t.predict(space.largest())
    cfg = get_arch("l1")
    assert t.predict(cfg.with_width(2, 320)) > l1


@pytest.mark.parametrize("series", sorted(SERIES))
def test_shipped_entries_and_presets_respect_the_roofline(series):
    from slimformer.latency_lut import arch_ops
    from slimformer.latency_lut._iphone import network_floor

    t = get_table(SERIES[series])
    for key in ("mb3d.qkv-t49-c448-o1536", "mb4d-r56-c48-mlp192", "mb3d.mlp-t49-c448-mlp1792", "head-t49-c448-k1000-d2"):
        assert t.entries[key]["median_ms"] >= op_features(*build_op(key))["floor_ms"] * (1 - 1e-6), key
    for p in ("l1", "l3", "l7"):
        cfg = get_arch(p)
        fl = network_floor(cfg)
        assert t.predict(cfg) >= fl["roofline_ms"] >= max(fl["compute_ms"], fl["weights_ms"])
        ops = add_features(*(op_features(*build_op(k)) for k in arch_ops(cfg)))
        assert ops["floor_ms"] == pytest.approx(fl["roofline_ms"], rel=0.02)  # the ops compose to the network


@pytest.mark.slow
@pytest.mark.parametrize("series", sorted(SERIES))
def test_no_searched_subnet_is_predicted_below_its_floor(series):
    """The no-supernet main job at budgets 0.8-3 ms on either table never returns a subnet whose
    prediction is below what the A14 can do (compute at peak, weights at DRAM bandwidth)."""
    from slimformer._errors import SlimformerError
    from slimformer.latency_lut._iphone import network_floor
    from slimformer.search import search

    t = get_table(SERIES[series])
    searched = 0
    for budget in (0.8, 1.0, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0):
        if t.predict(t.space.smallest()) > budget:  # nothing fits: the search says so in one error
            with pytest.raises(SlimformerError, match="no subnet fits"):
                search(budget_ms=budget, table=t, out=None, progress=False)
            continue
        r = search(budget_ms=budget, table=t, out=None, progress=False)
        fl = network_floor(r.arch)
        assert r.predicted_ms <= budget * (1 + 1e-9)
        assert r.predicted_ms >= fl["roofline_ms"] >= max(fl["compute_ms"], fl["weights_ms"]), (budget, fl)
        searched += 1
    assert searched >= 6


def test_table_entries_are_the_cost_model_applied_to_each_op():
    t = get_table("iphone-lut")
    costs = t.error["cost_model"]
    w = np.array([costs[f"{n} ({u})"] for n, u, _ in TERMS])
    for key in ("mb4d-r56-c48-mlp192", "mb3d.attn-t49-h8-qk32-v128", "stem-r224-i3-s24-c48"):
        assert t.entries[key]["median_ms"] == pytest.approx(design_row(op_features(*build_op(key))) @ w, abs=2e-6)
    assert set(FEATURES) >= {"n_ops", "conv_flops", "layout_elems"}


def test_main_job_places_its_answer_among_the_iphone_figures(tmp_path, capsys):
    from slimformer.cli import main

    assert main(["search", "--budget-ms", "1.6", "--table", "iphone-lut", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "on iphone12-ios16 (series v2 estimate):" in out and "A14 floor:" in out
    assert "reference: EfficientFormer-L1 1.6 ms published (series v1), 79.2 % ImageNet top-1" in out
    from slimformer.latency_lut._iphone import iphone_context

    assert iphone_context(get_arch("l1"), "cpu-ort") == []
    l1 = iphone_context(get_arch("l1"), "iphone12-ios16")
    assert l1[0].startswith("on iphone-lut") and "1.4 ms published (series v2)" in l1[-1]
