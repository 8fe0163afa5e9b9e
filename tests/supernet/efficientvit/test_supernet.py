from __future__ import annotations

import json

import pytest
import torch

from slimformer._errors import ConfigError
from slimformer.supernet.efficientvit import (
    EVIT_SPACES,
    EfficientViTConfig,
    EfficientViTSpace,
    EfficientViTSupernet,
    EViTBlockConfig,
    efficientvit_config,
)
from tests.conftest import randomize_


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    space = EVIT_SPACES["efficientvit-tiny"]()
    return space, randomize_(EfficientViTSupernet(space)).eval()


def test_extract_matches_active_on_random_subnets(tiny):
    space, sup = tiny
    x = torch.randn(2, 3, space.img_size, space.img_size)
    outs = []
    for seed in range(20):
        cfg = space.sample(seed)
        with torch.no_grad():
            a = sup.set_active(cfg)(x)
            b = sup.extract_subnet(cfg).eval()(x)
        assert (a - b).abs().max().item() <= 1e-5, cfg.summary()
        outs.append(a)
    assert min((outs[0] - o).abs().max().item() for o in outs[1:]) > 1e-4  # subnets really differ (10x the tolerance)


def test_v_dim_below_chunk_and_small_kernels_are_exercised(tiny):
    space, _sup = tiny
    cfgs = [space.sample(s) for s in range(20)]
    blocks = [(s.width, b) for c in cfgs for s in c.stages for b in s.blocks]
    assert any(b.v_dim < w // b.heads for w, b in blocks)
    assert any(k < space.kernels[-1] for _, b in blocks for k in b.kernels)


def test_training_step_updates_the_same_bn_statistics(tiny):
    space, _ = tiny
    sup = randomize_(EfficientViTSupernet(space), seed=3)
    cfg = space.sample(7)
    net = sup.extract_subnet(cfg).train()
    x = torch.randn(4, 3, space.img_size, space.img_size)
    sup.train().set_active(cfg)
    a, b = sup(x), net(x)
    assert (a - b).abs().max().item() <= 1e-5
    after = sup.extract_subnet(cfg).state_dict()
    for k, v in net.state_dict().items():
        assert torch.allclose(after[k].float(), v.float(), atol=1e-6), k


def test_load_subnet_round_trips(tiny):
    space, sup = tiny
    cfg = space.sample(3)
    net = randomize_(sup.extract_subnet(cfg), seed=9)
    fresh = EfficientViTSupernet(space)
    fresh.load_subnet(cfg, net)
    for k, v in fresh.extract_subnet(cfg).state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k


def test_config_json_round_trip_and_faults():
    cfg = efficientvit_config("m1")
    again = EfficientViTConfig.from_json(cfg.to_json())
    assert again == cfg and again.name == cfg.name
    with pytest.raises(ConfigError, match="not divisible"):
        cfg.with_block(1, 0, EViTBlockConfig(heads=5, kernels=(3,) * 5))
    with pytest.raises(ConfigError, match="exceeds the head's input chunk"):
        cfg.with_block(0, 0, EViTBlockConfig(heads=2, v_dim=80, kernels=(3, 3)))
    with pytest.raises(ConfigError, match="odd"):
        cfg.with_block(0, 0, EViTBlockConfig(heads=2, v_dim=64, kernels=(4, 3)))


def test_space_membership_and_serialisation():
    space = EVIT_SPACES["efficientvit"]()
    for v in ("m0", "m1", "m2", "m3", "m4", "m5"):
        assert space.contains(efficientvit_config(v)), v
    assert EfficientViTSpace.from_dict(json.loads(json.dumps(space.to_dict()))).hash == space.hash
    tiny = EVIT_SPACES["efficientvit-tiny"]()
    faults = tiny.check(efficientvit_config("m0"))
    assert any("img_size" in f for f in faults) and any("width 64 is not offered" in f for f in faults)
    assert all(tiny.contains(tiny.sample(s)) for s in range(30))
    assert tiny.contains(tiny.largest()) and tiny.contains(tiny.smallest())
    with pytest.raises(ConfigError, match="3 stages"):
        EfficientViTSpace(stage_widths=((16,),), depths=(1,))
