from __future__ import annotations

import pytest
import torch

from slimformer._errors import SlimformerError
from slimformer.latency_lut import (
    OP_KINDS,
    arch_ops,
    build_op,
    compose_mb3d,
    mb3d_parts,
    op_kind,
    parse_key,
    space_ops,
)
from slimformer.supernet import (
    SKIP,
    ArchConfig,
    EfficientFormerNet,
    SearchSpace,
    StageConfig,
    get_arch,
    get_space,
    mb3d,
    mb4d,
)
from slimformer.supernet._model import MB3D


def test_l1_decomposition_is_readable_and_in_network_order():
    ops = arch_ops(get_arch("l1"))
    assert ops[0] == "stem-r224-i3-s24-c48"
    assert ops[1:4] == ["mb4d-r56-c48-mlp192"] * 3
    assert ops[4] == "ds-r56-c48-o96"
    assert ops[-6:] == ["flat-t49-c448", "mb3d.qkv-t49-c448-o1536", "mb3d.attn-t49-h8-qk32-v128",
                        "mb3d.proj-t49-c448-i1024", "mb3d.mlp-t49-c448-mlp1792", "head-t49-c448-k1000-d2"]
    assert len(ops) == 1 + 14 + 3 + 1 + 4 + 1  # stem, 14 MB4D, 3 downsamples, flat, 4 parts, head


def test_decomposition_is_deterministic_and_skips_are_no_op():
    sp = get_space("tiny")
    cfg = sp.sample(3)
    assert arch_ops(cfg) == arch_ops(ArchConfig.from_json(cfg.to_json()))
    two = cfg.with_block(0, 0, mb4d(2.0)).with_block(0, 1, mb4d(1.0))
    one = two.with_block(0, 1, SKIP)
    gap = two.with_block(0, 0, SKIP)
    assert len(arch_ops(one)) == len(arch_ops(two)) - 1
    w = cfg.stages[0].width
    expected = arch_ops(two)
    expected.remove(f"mb4d-r8-c{w}-mlp{2 * w}")
    assert arch_ops(gap) == expected


def test_flatten_placement_without_mb3d_and_with_tokens_into_a_later_stage():
    sp = SearchSpace(stage_widths=((16,), (32,), (48,), (64,)), depths=(1, 1, 2, 2), stem_widths=(8,),
                     mb3d_stages=(2, 3), mlp_ratios=(1.0,), heads=(1,), qk_dims=(8,), v_dims=(8,), img_size=32,
                     num_classes=10)
    st = [StageConfig(16, (mb4d(1.0),)), StageConfig(32, (mb4d(1.0),))]
    no3 = ArchConfig(stem_width=8, stages=(*st, StageConfig(48, (mb4d(1.0),)), StageConfig(64, (mb4d(1.0),))),
                     img_size=32, num_classes=10)
    ops = arch_ops(no3)
    assert [op_kind(k) for k in ops].count("flat") == 1 and ops[-2] == "flat-t1-c64"
    early = ArchConfig(stem_width=8, stages=(*st, StageConfig(48, (mb4d(1.0), mb3d(1, 8, 8, 1.0))),
                                             StageConfig(64, (mb3d(1, 8, 8, 1.0),))), img_size=32, num_classes=10)
    ops = arch_ops(early)
    assert "ds.tok-r2-c48-o64" in ops and ops.index("flat-t1-c64") == ops.index("ds.tok-r2-c48-o64") + 1
    keys = set(space_ops(sp))
    assert set(ops) <= keys and set(arch_ops(no3)) <= keys


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_space_ops_cover_every_sampled_subnet_and_every_kind(name):
    sp = get_space(name)
    keys = space_ops(sp)
    assert len(keys) == len(set(keys)) and keys == space_ops(sp)
    used = set()
    for seed in range(300):
        used.update(arch_ops(sp.sample(seed)))
    used.update(arch_ops(sp.largest()) + arch_ops(sp.smallest()))
    assert used <= set(keys)
    assert {op_kind(k) for k in keys} == set(OP_KINDS) - {"ds.tok"}
    for k in keys:
        assert parse_key(k)[0] == op_kind(k)


def test_default_space_key_count_stays_measurable():
    assert len(space_ops(get_space("default"))) < 2100


@pytest.mark.parametrize("bad", ["", "mb4d", "mb4d-r56-c48", "mb4d-r56-c48-x3", "conv-r1-c2-o3",
                                 "mb4d-r56-c48-mlp192-extra1"])
def test_malformed_keys_are_one_clear_error(bad):
    with pytest.raises(SlimformerError, match="malformed op key"):
        parse_key(bad)


def test_built_ops_chain_to_the_standalone_network():
    """Running the ops of a subnet in order reproduces the network's output shapes op by op."""
    sp = get_space("tiny")
    cfg = sp.largest()
    net = EfficientFormerNet(cfg).eval()
    ops = arch_ops(cfg)
    for k in ops:
        m, x = build_op(k)
        y = m(*x)
        assert torch.isfinite(y).all()
    m, x = build_op(ops[0])
    assert m(*x).shape == net.stem(torch.zeros(1, 3, 32, 32)).shape
    assert build_op(ops[-1])[0](*build_op(ops[-1])[1]).shape == (1, 10)


def test_mb3d_parts_compose_to_the_block_exactly():
    blk = MB3D(64, mb3d(2, 16, 32, 2.0), 2).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_()
        x = torch.randn(2, 4, 64)
        torch.testing.assert_close(compose_mb3d(mb3d_parts(blk), x), blk(x))


def test_part_ops_have_the_dims_their_keys_name():
    m, (x,) = build_op("mb3d.qkv-t4-c64-o96")
    assert m(x).shape == (1, 4, 96)
    m, (x,) = build_op("mb3d.attn-t4-h2-qk16-v32")
    assert x.shape == (1, 4, 128) and m(x).shape == (1, 4, 64)
    m, (x, a) = build_op("mb3d.proj-t4-c64-i64")
    assert m(x, a).shape == (1, 4, 64)
    m, (x,) = build_op("mb3d.mlp-t4-c64-mlp96")
    assert m.mlp.fc1.out_features == 96
    m, (x,) = build_op("ds.tok-r2-c48-o64", batch=3)
    assert x.shape == (3, 4, 48) and m(x).shape == (3, 64, 1, 1)
