from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from slimformer.supernet import (
    EfficientFormerNet,
    SearchSpace,
    Supernet,
    count_macs,
    count_params,
    get_arch,
    recalibrate_bn,
)
from tests.conftest import randomize_


@pytest.fixture(scope="module")
def tiny_supernet():
    from slimformer.supernet import get_space

    torch.manual_seed(0)
    return randomize_(Supernet(get_space("tiny"))).eval()


def test_extract_matches_active_on_random_subnets(tiny_supernet):
    sup = tiny_supernet
    x = torch.randn(3, 3, 32, 32)
    for seed in range(25):
        cfg = sup.space.sample(seed)
        sub = sup.extract_subnet(cfg).eval()
        with torch.no_grad():
            a = sup.set_active(cfg)(x)
            b = sub(x)
        assert (a - b).abs().max().item() <= 1e-5, cfg.summary()
        assert sub.num_params() == count_params(cfg)


def test_extract_matches_active_with_mb3d_in_two_stages():
    space = SearchSpace(stage_widths=((16,), (32,), (32, 48), (48, 64)), depths=(1, 1, 2, 2), stem_widths=(8,),
                        mb3d_stages=(2, 3), mlp_ratios=(1.0, 2.0), heads=(1, 2), qk_dims=(8,), v_dims=(8, 16),
                        img_size=64, num_classes=5)
    sup = randomize_(Supernet(space)).eval()
    x = torch.randn(2, 3, 64, 64)
    n_cross = 0
    for seed in range(30):
        cfg = space.sample(seed)
        n_cross += cfg.first_mb3d() is not None and cfg.first_mb3d()[0] == 2
        with torch.no_grad():
            assert torch.allclose(sup.set_active(cfg)(x), sup.extract_subnet(cfg).eval()(x), atol=1e-5)
    assert n_cross > 0  # the Unflat path before the last downsample was exercised


def test_macs_match_torch_flop_counter(tiny_space):
    for cfg in [tiny_space.sample(s) for s in range(5)] + [get_arch("l1")]:
        net = EfficientFormerNet(cfg).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            net(torch.randn(1, 3, cfg.img_size, cfg.img_size))
        assert fc.get_total_flops() == 2 * count_macs(cfg)


def test_load_subnet_is_inverse_of_extract(tiny_supernet):
    cfg = tiny_supernet.space.sample(3)
    net = randomize_(EfficientFormerNet(cfg), seed=5).eval()
    sup = Supernet(tiny_supernet.space).eval()
    sup.load_subnet(cfg, net)
    back = sup.extract_subnet(cfg)
    for k, v in net.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_subnets_share_weights(tiny_space):
    sup = Supernet(tiny_space)
    small, large = tiny_space.smallest(), tiny_space.largest()
    before = sup.stages[0].blocks[0].mb4d.fc1.weight.detach().clone()
    opt = torch.optim.SGD(sup.parameters(), lr=0.1)
    sup.train().set_active(small)
    sup(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    w = sup.stages[0].blocks[0].mb4d.fc1.weight
    h = small.stages[0].blocks[0].hidden(small.stages[0].width)
    assert not torch.equal(w[:h, :small.stages[0].width], before[:h, :small.stages[0].width])
    # channels the small subnet does not use are untouched
    assert torch.equal(w[h:], before[h:])
    assert large.stages[0].width > small.stages[0].width


def test_recalibrate_bn_moves_stats_toward_subnet(tiny_space):
    sup = randomize_(Supernet(tiny_space))
    cfg = tiny_space.sample(1)
    sup.set_active(cfg)
    data = [torch.randn(16, 3, 32, 32) * 2 + 1 for _ in range(4)]
    bn = sup.stem.norm2
    c = cfg.stages[0].width
    # the subnet's true batch statistics at the stem's second BN, by a hook on the extracted model
    sub = sup.extract_subnet(cfg).train()
    seen = []
    sub.stem.norm2.register_forward_hook(lambda m, i, o: seen.append(i[0].mean(dim=(0, 2, 3))))
    with torch.no_grad():
        for x in data:
            sub(x)
    target = torch.stack(seen).mean(0)
    err_before = (bn.running_mean[:c] - target).abs().mean()
    n = recalibrate_bn(sup, data)
    err_after = (bn.running_mean[:c] - target).abs().mean()
    assert n == 4 and err_after < 1e-4 < err_before
    assert sup.training  # recalibration restores the mode the model was in (train: the Supernet default)
    sup.eval()
    recalibrate_bn(sup, data[:1])
    assert not sup.training
    # the extracted model after recalibration carries the new stats
    assert torch.allclose(sup.extract_subnet(cfg).stem.norm2.running_mean, bn.running_mean[:c])


def test_mixture_mode_computes_weighted_paths(tiny_space):
    sup = randomize_(Supernet(tiny_space)).eval()
    cfg = tiny_space.largest()
    x = torch.randn(2, 3, 32, 32)
    # one-hot weights reproduce the plain subnet with that kind at that position
    from slimformer.supernet import SKIP

    for kind, alt in (("mb3d", cfg), ("skip", cfg.with_block(3, 2, SKIP))):
        w = torch.tensor([1.0 if k == kind else 0.0 for k in tiny_space.kinds_at(3)])
        sup.set_active(cfg).set_mixture({(3, 2): w})
        mixed = sup(x)
        sup.set_mixture(None)
        assert torch.allclose(mixed, sup.set_active(alt)(x), atol=1e-5)
    # a 50/50 mixture of mb3d and skip at the last position: the final LayerNorm sees the average of the block's
    # input and output (captured with a hook on that position's MB3D)
    seen = {}
    hook = sup.stages[3].blocks[2].mb3d.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    sup.set_active(cfg).set_mixture({(3, 2): torch.tensor([0.0, 0.5, 0.5])})
    feats = sup.forward_features(x)
    sup.set_mixture(None)
    hook.remove()
    c = cfg.num_features
    mixed = 0.5 * seen["x"] + 0.5 * seen["y"]
    expected = torch.nn.functional.layer_norm(mixed, (c,), sup.head.norm.weight[:c], sup.head.norm.bias[:c],
                                              sup.head.norm.eps)
    assert torch.allclose(feats, expected, atol=1e-5)
    assert not torch.allclose(seen["x"], seen["y"], atol=1e-3)  # the two paths differ, so the check bites
    # gradients reach the mixture weights
    w = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    sup.train().set_active(cfg).set_mixture({(3, 0): w})
    sup(x).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    sup.set_mixture(None)
