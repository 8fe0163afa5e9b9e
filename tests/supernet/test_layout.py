from __future__ import annotations

import random

from timm.models.efficientformer import Flat

from slimformer.latency_lut import arch_ops_by_stage, op_kind
from slimformer.supernet import EfficientFormerNet, flatten_at, get_space, stage_resolution


def test_stage_resolution_is_stride_4_then_2_per_stage():
    assert [stage_resolution(224, s) for s in range(4)] == [56, 28, 14, 7]
    assert get_space("tiny").largest().resolution(3) == stage_resolution(get_space("tiny").img_size, 3)


def test_flatten_at_the_rule():
    assert flatten_at(("mb4d", "mb3d", "mb3d"), tokens_in=False, last=False) == 1  # before the first MB3D
    assert flatten_at(("mb4d", "skip", "mb3d"), tokens_in=False, last=True) == 2
    assert flatten_at(("mb3d",), tokens_in=True, last=False) == 0  # tokens in: flatten again first
    assert flatten_at(("mb4d", "mb4d"), tokens_in=False, last=True) == 2  # the final norm needs tokens
    assert flatten_at(("mb4d",), tokens_in=False, last=False) is None
    assert flatten_at((), tokens_in=False, last=True) == 0


def test_model_and_keys_flatten_at_the_same_place():
    """The model's Flat modules and the table's flat ops stand where flatten_at says, stage by stage."""
    space = get_space("tiny")
    rng = random.Random(0)
    for cfg in [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(12))]:
        net = EfficientFormerNet(cfg)
        ops = arch_ops_by_stage(cfg)
        tokens = False
        for si, (st, module) in enumerate(zip(cfg.stages, net.stages)):
            real = [b.kind for b in st.blocks if b.kind != "skip"]
            at = flatten_at(real, tokens_in=tokens, last=si == len(cfg.stages) - 1)
            flats = [i for i, m in enumerate(module.blocks) if isinstance(m, Flat)]
            assert flats == ([] if at is None else [at]), (cfg.key(), si)
            kinds = [op_kind(k) for part, k in ops if part == f"stage{si + 1}" and not op_kind(k).startswith("ds")]
            assert kinds.count("flat") == (at is not None)
            if at is not None:  # flat key before the first op of block `at` (MB3D: four ops, MB4D: one)
                n_before = sum(4 if k == "mb3d" else 1 for k in real[:at])
                assert kinds.index("flat") == n_before, (cfg.key(), si, kinds)
            tokens = at is not None
