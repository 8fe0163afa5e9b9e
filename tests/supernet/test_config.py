from __future__ import annotations

import random

import pytest

from slimformer._errors import ConfigError
from slimformer.supernet import (
    SKIP,
    ArchConfig,
    SearchSpace,
    StageConfig,
    count_params,
    get_arch,
    get_space,
    mb3d,
    mb4d,
)


def test_presets_are_efficientformer_exactly():
    l1, l3, l7 = (get_arch(n) for n in ("l1", "l3", "l7"))
    assert l1.widths == (48, 96, 224, 448) and l1.depths == (3, 2, 6, 4) and l1.num_mb3d == 1
    assert l3.widths == (64, 128, 320, 512) and l3.depths == (4, 4, 12, 6) and l3.num_mb3d == 4
    assert l7.widths == (96, 192, 384, 768) and l7.depths == (6, 6, 18, 8) and l7.num_mb3d == 8
    for cfg in (l1, l3, l7):
        tail = [b for b in cfg.stages[3].blocks if b.kind == "mb3d"]
        assert all((b.heads, b.qk_dim, b.v_dim, b.mlp_ratio) == (8, 32, 128, 4.0) for b in tail)
        assert cfg.distillation
    # timm's parameter counts: 12.29 M, 31.41 M, 82.23 M
    assert [round(count_params(c) / 1e6, 2) for c in (l1, l3, l7)] == [12.29, 31.41, 82.23]


def test_default_space_contains_presets():
    sp = SearchSpace()
    for n in ("l1", "l3", "l7"):
        assert sp.contains(get_arch(n)), sp.check(get_arch(n))
    assert sp.largest() == get_arch("l7")


@pytest.mark.parametrize("name", ["l1", "l3", "l7"])
def test_json_round_trip_presets(name):
    cfg = get_arch(name)
    back = ArchConfig.from_json(cfg.to_json())
    assert back == cfg and back.to_dict() == cfg.to_dict()


def test_json_round_trip_random(tiny_space):
    sp = SearchSpace()
    for seed in range(50):
        for space in (sp, tiny_space):
            cfg = space.sample(seed)
            assert ArchConfig.from_json(cfg.to_json()) == cfg


def test_sampling_stays_in_space_and_is_seeded(tiny_space):
    for space in (SearchSpace(), tiny_space, SearchSpace(mb3d_stages=(2, 3))):
        for seed in range(200):
            cfg = space.sample(seed)
            assert space.check(cfg) == []
        assert space.sample(7) == space.sample(7)
        assert len({space.sample(s).key() for s in range(50)}) > 40
    rng = random.Random(3)
    assert tiny_space.sample(rng) != tiny_space.sample(rng)


def test_largest_and_smallest_bound_params(tiny_space):
    for space in (SearchSpace(), tiny_space):
        lo, hi = count_params(space.smallest()), count_params(space.largest())
        for seed in range(100):
            assert lo <= count_params(space.sample(seed)) <= hi


def _cfg(stage4_blocks, **kw):
    l1 = get_arch("l1")
    return ArchConfig(stem_width=24, stages=l1.stages[:3] + (StageConfig(448, tuple(stage4_blocks)),), **kw)


def test_validation_messages():
    with pytest.raises(ConfigError, match="mb4d after an mb3d"):
        _cfg([mb4d(), mb3d(), mb4d()])
    with pytest.raises(ConfigError, match="stage 4 has no block"):
        _cfg([SKIP, SKIP])
    with pytest.raises(ConfigError, match="positive heads"):
        _cfg([mb4d(), mb3d(heads=0)])
    with pytest.raises(ConfigError, match="multiple of 32"):
        _cfg([mb4d()], img_size=100)
    # several faults: each is reported
    with pytest.raises(ConfigError) as e:
        _cfg([mb3d(), mb4d(), mb3d(qk_dim=0)], img_size=100)
    assert len(e.value.faults) == 3


def test_space_membership_messages():
    sp = SearchSpace()
    l1 = get_arch("l1")
    bad = l1.with_width(2, 232)
    assert any("width 232 is not offered" in f for f in sp.check(bad))
    bad = l1.with_stage(3, StageConfig(448, (mb3d(),) * 4)).with_block(2, 5, mb3d())
    assert any("stage 3 block 6: mb3d is only allowed in stage(s) 4" in f for f in sp.check(bad))
    bad = l1.with_block(3, 3, mb3d(heads=5))
    assert any("heads 5 is not offered" in f for f in sp.check(bad))
    with pytest.raises(ConfigError, match="not in space"):
        sp.validate(l1.with_width(0, 40))


def test_trailing_skips_are_implied_and_middle_skips_kept():
    a = get_arch("l1").with_block(0, 5, SKIP)
    assert a == get_arch("l1")
    b = get_arch("l1").with_block(0, 1, SKIP)
    assert b.depths[0] == 2 and len(b.stages[0].blocks) == 3
    assert get_arch("l1").name == "efficientformer_l1" and b.name == ""  # an edited preset is not the preset


def test_malformed_json():
    with pytest.raises(ConfigError, match="not valid JSON"):
        ArchConfig.from_json("{nope")
    with pytest.raises(ConfigError, match="missing"):
        ArchConfig.from_json('{"img_size": 224}')
    with pytest.raises(ConfigError, match="unknown kind"):
        ArchConfig.from_dict({**get_arch("l1").to_dict(), "stages": [
            {"width": 48, "blocks": [{"kind": "conv"}]}] * 4})


def test_num_subnets_matches_enumeration():
    space = SearchSpace(stage_widths=((16,), (16, 32), (32,), (32,)), depths=(1, 2, 1, 2), stem_widths=(8,),
                        mlp_ratios=(1.0, 2.0), heads=(1,), qk_dims=(8,), v_dims=(8, 16), img_size=32, num_classes=4)
    # brute force: every kind/option per position, every width, keep the valid configs
    import itertools

    def options(si):
        opts = [SKIP] + [mb4d(r) for r in space.mlp_ratios]
        if si in space.mb3d_stages:
            opts += [mb3d(h, q, v, r) for h in space.heads for q in space.qk_dims for v in space.v_dims
                     for r in space.mlp_ratios]
        return opts

    count = 0
    per_stage = [[StageConfig(w, blocks) for w in space.stage_widths[si]
                  for blocks in itertools.product(options(si), repeat=space.depths[si])] for si in range(4)]
    for stages in itertools.product(*per_stage):
        try:
            cfg = ArchConfig(stem_width=8, stages=stages, img_size=32, num_classes=4)
        except ConfigError:
            continue
        count += space.contains(cfg)
    assert count == space.num_subnets()


def test_space_json_round_trip(tiny_space):
    d = tiny_space.to_dict()
    assert SearchSpace.from_dict(d) == tiny_space
    assert SearchSpace.from_dict(d).hash == tiny_space.hash
    with pytest.raises(ConfigError, match="unknown search space field"):
        SearchSpace.from_dict({**d, "colour": "red"})
    assert get_space("tiny") == tiny_space
