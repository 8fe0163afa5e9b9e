"""Op keys, op modules and tables on the EfficientViT family."""
from __future__ import annotations

import pytest
import torch

from slimformer.latency_lut import (
    LatencyTable,
    arch_ops,
    arch_ops_by_stage,
    build_op,
    build_table,
    parse_key,
    space_ops,
    validate_table,
)
from slimformer.latency_lut._evit_ops import compose_mixer, mixer_parts
from slimformer.supernet import get_arch, get_space
from slimformer.supernet.efficientvit import EfficientViTSpace, EViTBlockConfig
from slimformer.supernet.efficientvit._model import CascadedGroupAttention, window_apply
from tests.conftest import randomize_

from .conftest import FAST


def micro_evit() -> EfficientViTSpace:
    return EfficientViTSpace(stage_widths=((16,), (32,), (32,)), depths=(1, 1, 1), heads=(2,), qk_dims=(4,),
                             v_dims=(8, 16), ffn_ratios=(1.0,), kernels=(3,), img_size=64, window=2, num_classes=10,
                             name="micro-evit")


def test_arch_ops_are_in_space_ops_and_every_op_builds():
    sp = get_space("efficientvit-tiny")
    ops = set(space_ops(sp))
    for s in range(40):
        assert set(arch_ops(sp.sample(s))) <= ops
    assert set(arch_ops(sp.largest())) | set(arch_ops(sp.smallest())) <= ops
    for k in ops:
        _kind, _ = parse_key(k)
        m, x = build_op(k)
        with torch.no_grad():
            m(*x)
    assert {parse_key(k)[0] for k in ops} == {"evit.stem", "evit.sub", "evit.dwffn", "evit.mix", "evit.head",
                                              "evit.cls"}


def test_m0_decomposes_as_its_module_tree():
    ops = arch_ops_by_stage(get_arch("m0"))
    assert ops[0] == ("stem", "evit.stem-r224-i3-c64") and ops[-1] == ("head", "evit.cls-r4-c192-k1000-d1")
    blocks = 1 + 2 + 3
    assert len(ops) == 2 + 2 + blocks * (3 + 4)  # stem, cls, 2 subsamples, per block 2 dwffn + mix + 4 heads
    assert ("stage2", "evit.sub-r14-c64-o128") in ops and ("stage1", "evit.head-r14-w7-i16-qk16-v16-k5") in ops


@pytest.mark.parametrize("w,res,ws,b", [(64, 14, 7, EViTBlockConfig(4, 16, 16, 2.0, (7, 5, 3, 3))),
                                        (48, 4, 2, EViTBlockConfig(2, 8, 16, 1.0, (3, 5))),
                                        (32, 5, 2, EViTBlockConfig(2, 8, 8, 1.0, (3, 3)))])
def test_mixer_parts_compose_to_the_mixer(w, res, ws, b):
    attn = randomize_(CascadedGroupAttention(w, b, ws)).eval()
    mix, heads = mixer_parts(attn)
    x = torch.randn(2, w, res, res)
    with torch.no_grad():
        assert torch.allclose(compose_mixer(mix, heads, x), x + window_apply(attn, x, ws), atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])  # at batch 2 the windowed heads see 2 x the windows (once a crash)
def test_micro_table_builds_predicts_and_round_trips(tmp_path, batch):
    sp = micro_evit()
    t = build_table(name="micro-evit", space=sp, lut_dir=tmp_path, progress=False, batch=batch, **FAST)
    assert t.batch == batch
    assert set(t.entries) == set(space_ops(sp)) and t.correction["samples"] == 3
    for s in range(5):
        cfg = sp.sample(s)
        raw = sum(t.entries[k]["median_ms"] for k in arch_ops(cfg)) + t.overhead_ms
        assert t.predict(cfg, corrected=False) == pytest.approx(raw)
        c = t.correction
        assert t.predict(cfg) == pytest.approx(c["scale"] * raw + c["offset_ms"] + c["per_op_ms"] * len(arch_ops(cfg)))
    loaded = LatencyTable.load(t.path)
    assert loaded.space == sp and loaded.hash == t.hash
    r = validate_table(t, samples=3, run_dir=tmp_path / "v", progress=False, repeats=3, min_time_s=0.0, rounds=1)
    assert r["corrected"]["n"] == 3


@pytest.mark.parametrize("name", ["iphone-lut-efficientvit", "iphone12-ios16-efficientvit"])
def test_shipped_iphone_estimates_cover_the_efficientvit_space(name):
    from slimformer.latency_lut import get_table

    t = get_table(name)
    sp = get_space("efficientvit")
    assert t.kind == "estimated" and t.name == name and t.space == sp and set(t.entries) == set(space_ops(sp))
    ms = [t.predict(get_arch(v)) for v in ("m0", "m5")]
    assert 0 < ms[0] < ms[1]
