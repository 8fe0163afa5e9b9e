from __future__ import annotations

import pytest
import timm
import torch

from slimformer._errors import SlimformerError
from slimformer.supernet import (
    EfficientFormerNet,
    SearchSpace,
    Supernet,
    checkpoint_filter_fn,
    get_arch,
    load_pretrained,
    supernet_from_pretrained,
)
from tests.conftest import randomize_

TIMM_PARAMS = {"l1": 12_289_928, "l3": 31_406_000, "l7": 82_229_328}


@pytest.fixture(scope="module")
def default_supernet():
    return Supernet(SearchSpace()).eval()


@pytest.mark.parametrize("variant", ["l1", "l3", "l7"])
def test_extracted_preset_reproduces_timm(variant, default_supernet):
    ref = randomize_(timm.create_model(f"efficientformer_{variant}"), seed=11).eval()
    cfg = get_arch(variant)
    net = EfficientFormerNet(cfg)
    net.load_state_dict(checkpoint_filter_fn(ref.state_dict()), strict=True)  # timm's keys are ours
    default_supernet.load_subnet(cfg, net)
    sub = default_supernet.extract_subnet(cfg).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        assert (sub(x) - expected).abs().max().item() <= 1e-4
        assert (default_supernet.set_active(cfg)(x) - expected).abs().max().item() <= 1e-4
    assert sub.num_params() == sum(p.numel() for p in ref.parameters()) == TIMM_PARAMS[variant]


def _original_repo_keys(state: dict) -> dict:
    """Rename timm L1 keys into the snap-research repository's format (the inverse of timm's filter)."""
    out, stage_ofs = {}, {0: 0, 1: 2, 2: 4, 3: 6}
    for k, v in state.items():
        k2 = k.replace("stem.conv1", "patch_embed.0").replace("stem.norm1", "patch_embed.1")
        k2 = k2.replace("stem.conv2", "patch_embed.3").replace("stem.norm2", "patch_embed.4")
        k2 = k2.replace("head_dist", "dist_head").replace("ls1.gamma", "layer_scale_1").replace(
            "ls2.gamma", "layer_scale_2")
        if k2.startswith("stages."):
            _, s, rest = k2.split(".", 2)
            s = int(s)
            if rest.startswith("downsample."):
                rest = rest.replace("downsample.conv", "proj").replace("downsample.norm", "norm")
                k2 = f"network.{stage_ofs[s] - 1}.{rest}"
            else:
                k2 = f"network.{stage_ofs[s]}.{rest.removeprefix('blocks.')}"
        out[k2] = v
    return out


def test_pretrained_file_timm_and_original_format(tmp_path):
    ref = randomize_(timm.create_model("efficientformer_l1"), seed=3).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
    timm_file, orig_file = tmp_path / "timm.pth", tmp_path / "orig.pth"
    torch.save(ref.state_dict(), timm_file)
    torch.save({"model": _original_repo_keys(ref.state_dict())}, orig_file)
    for f in (timm_file, orig_file):
        net = load_pretrained(f, "l1")
        with torch.no_grad():
            assert (net(x) - expected).abs().max() <= 1e-4
    sup = supernet_from_pretrained(timm_file, "l1", SearchSpace())
    with torch.no_grad():
        assert (sup.set_active(get_arch("l1")).eval()(x) - expected).abs().max() <= 1e-4


def test_pretrained_errors(tmp_path):
    with pytest.raises(SlimformerError, match="not found"):
        load_pretrained(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SlimformerError, match="not a readable"):
        load_pretrained(tmp_path / "junk.pth")
    torch.save(timm.create_model("efficientformer_l1").state_dict(), tmp_path / "l1.pth")
    with pytest.raises(SlimformerError, match="does not match"):
        load_pretrained(tmp_path / "l1.pth", "l3")


def test_pretrained_into_space_with_other_classes(tmp_path):
    ref = timm.create_model("efficientformer_l1")
    torch.save(ref.state_dict(), tmp_path / "l1.pth")
    space = SearchSpace(num_classes=10)
    sup = supernet_from_pretrained(tmp_path / "l1.pth", "l1", space)
    blk = sup.stages[3].blocks[3].mb3d
    assert torch.equal(blk.attention_biases[:8], ref.stages[3].blocks[4].token_mixer.attention_biases)
