from __future__ import annotations

import torch
from timm.layers import LayerScale, LayerScale2d
from torch import nn

from slimformer.export import DeployAttention, fold_bn, is_folded
from slimformer.supernet import EfficientFormerNet, get_arch
from tests.conftest import randomize_


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def test_fold_is_exact_on_random_tiny_subnets(tiny_space):
    x = torch.randn(3, 3, 32, 32)
    for seed in range(8):
        net = randomize_(EfficientFormerNet(tiny_space.sample(seed)), seed=seed + 10).eval()
        folded = fold_bn(net)
        with torch.no_grad():
            ref = net(x)
        assert ref.abs().max() > 1e-2  # the check would be vacuous on all-zero outputs
        assert _max_diff(net, folded, x) <= 1e-5, net.arch.summary()


def test_fold_removes_batchnorm_layerscale_and_second_head(random_net):
    folded = fold_bn(random_net)
    kinds = [type(m) for m in folded.modules()]
    assert nn.BatchNorm2d not in kinds
    assert LayerScale not in kinds  # MB3D ls1/ls2 folded into proj / fc2
    # MB4D ls1 scales (pool(x) - x): kept, one per MB4D block
    n_mb4d = sum(b.kind == "mb4d" for s in random_net.arch.stages for b in s.blocks)
    assert kinds.count(LayerScale2d) == n_mb4d
    assert folded.head_dist is None and isinstance(folded.head, nn.Linear)
    attn = [m for m in folded.modules() if isinstance(m, DeployAttention)]
    assert len(attn) == random_net.arch.num_mb3d > 0
    n = random_net.arch.tokens(3)
    assert attn[0].attention_bias.shape == (1, attn[0].num_heads, n, n)
    assert is_folded(folded) and not is_folded(random_net)
    # the source model is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in random_net.modules())
    assert random_net.head_dist is not None


def test_fold_exact_on_l1_preset():
    net = randomize_(EfficientFormerNet(get_arch("l1")), seed=2).eval()
    x = torch.randn(1, 3, 224, 224)
    assert _max_diff(net, fold_bn(net), x) <= 1e-5


def test_fold_in_train_mode_source_still_uses_running_stats(random_net):
    random_net.train()
    folded = fold_bn(random_net)
    assert not folded.training
    random_net.eval()
    assert _max_diff(random_net, folded, torch.randn(2, 3, 32, 32)) <= 1e-5
