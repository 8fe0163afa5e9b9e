"""EfficientViT-M0...M5 presets against timm's ``efficientvit_msra`` (random weights, randomized BN stats)."""
from __future__ import annotations

import pytest
import timm
import torch

from slimformer.supernet.efficientvit import (
    EVIT_SPACES,
    EfficientViTNet,
    EfficientViTSupernet,
    efficientvit_config,
)
from slimformer.supernet.efficientvit._timm import checkpoint_filter_fn
from tests.conftest import randomize_

PARAMS_M = {"m0": 2.35, "m1": 2.98, "m2": 4.19, "m3": 6.90, "m4": 8.80, "m5": 12.47}


@pytest.fixture(scope="module")
def supernet():
    return EfficientViTSupernet(EVIT_SPACES["efficientvit"]()).eval()


def _parity(variant: str, sup: EfficientViTSupernet) -> None:
    ref = randomize_(timm.create_model(f"efficientvit_{variant}"), seed=5).eval()
    cfg = efficientvit_config(variant)
    net = EfficientViTNet(cfg)
    net.load_state_dict(checkpoint_filter_fn(ref.state_dict(), net), strict=True)
    assert round(net.num_params() / 1e6, 2) == PARAMS_M[variant]
    assert net.num_params() == sum(p.numel() for p in ref.parameters())
    sup.load_subnet(cfg, net)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref(x)
        got_active = sup.set_active(cfg)(x)
        got_extracted = sup.extract_subnet(cfg).eval()(x)
    assert (got_active - want).abs().max().item() <= 1e-4
    assert (got_extracted - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant", ["m0", "m2"])
def test_presets_equal_timm(variant, supernet):
    _parity(variant, supernet)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m1", "m3", "m4", "m5"])
def test_presets_equal_timm_slow(variant, supernet):
    _parity(variant, supernet)


def _to_original(sd: dict) -> dict:
    """timm keys -> the microsoft/Cream layout (written from Cream's ``EfficientViT`` module tree)."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "patch_embed":
            p = ["patch_embed", str(2 * (int(p[1][4:]) - 1)), *p[2:]]
        elif p[0] == "stages":
            s = int(p[1])
            if p[2] == "downsample":
                p = [f"blocks{s + 1}", str(("res1", "patchmerge", "res2").index(p[3])), *p[4:]]
            else:
                p = [f"blocks{s + 1}", str(int(p[3]) + (3 if s else 0)), *p[4:]]
        p = ["c" if x == "conv" and i == len(p) - 2 else "l" if x == "linear" else x for i, x in enumerate(p)]
        out[".".join(p)] = v
    return out


def test_original_repository_state_dict_loads():
    cfg = efficientvit_config("m0")
    ref = randomize_(EfficientViTNet(cfg), seed=2).eval()
    orig = _to_original(ref.state_dict())
    assert "patch_embed.6.c.weight" in orig and "blocks2.1.conv1.c.weight" in orig
    assert "blocks3.3.mixer.m.attn.qkvs.0.c.weight" in orig and "head.l.weight" in orig
    orig["blocks1.0.mixer.m.attn.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    net = EfficientViTNet(cfg)
    net.load_state_dict(checkpoint_filter_fn({"model": orig}, net), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), ref(x))


def test_distilled_original_head_is_merged():
    cfg = efficientvit_config("m0")
    import dataclasses
    dist = randomize_(EfficientViTNet(dataclasses.replace(cfg, distillation=True)), seed=4).eval()
    orig = {"module." + k: v for k, v in _to_original(dist.state_dict()).items()}
    assert "module.head_dist.l.weight" in orig
    net = EfficientViTNet(cfg)
    net.load_state_dict(checkpoint_filter_fn(orig, net), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (net.eval()(x) - dist(x)).abs().max().item() <= 1e-5
