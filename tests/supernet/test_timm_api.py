"""timm's model API on every preset and on random subnets, in the spirit of timm's own model tests
(``tests/test_models.py``: forward_intermediates, feature_info, grad checkpointing, group_matcher)."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import group_parameters

import slimformer.timm  # noqa: F401 - registers slimformer_* with timm
from slimformer._errors import SlimformerError
from slimformer.supernet import EfficientFormerNet, SearchSpace, efficientformer_config, get_space

# presets at 64 px keep the test small; their structure (and MB3D tail) is the 224 px one
CASES = {
    "l1": lambda: efficientformer_config("l1", img_size=64, num_classes=10),
    "l3": lambda: efficientformer_config("l3", img_size=64, num_classes=10),
    "l7": lambda: efficientformer_config("l7", img_size=64, num_classes=10),
    "random-default": lambda: SearchSpace(img_size=64, num_classes=10).sample(3),
    "random-tiny": lambda: get_space("tiny").sample(5),
    "tiny-mb3d-from-stage3": lambda: _mb3d_from_stage3(),
}


def _mb3d_from_stage3():
    """A tail that starts in stage 3, so stage 3's output is tokens (reshaped back to a map)."""
    from slimformer.supernet import ArchConfig, StageConfig, mb3d, mb4d

    att = mb3d(1, 8, 16, 1.0)
    return ArchConfig(stem_width=8, stages=(StageConfig(16, (mb4d(1.0),)), StageConfig(32, (mb4d(1.0),)),
                                            StageConfig(48, (mb4d(1.0), att)), StageConfig(64, (att,))),
                      img_size=64, num_classes=10)


@pytest.fixture(params=sorted(CASES), scope="module")
def model(request):
    torch.manual_seed(0)
    return EfficientFormerNet(CASES[request.param]()).eval()


def _x(model, batch=2):
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def test_pretrained_cfg_answers_the_model(model):
    cfg = model.arch
    data = resolve_model_data_config(model)
    assert data["input_size"] == (cfg.in_chans, cfg.img_size, cfg.img_size)
    assert data["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and data["std"] == timm.data.IMAGENET_DEFAULT_STD
    assert data["crop_pct"] == 0.875 and data["interpolation"] == "bicubic"
    assert model.pretrained_cfg["num_classes"] == cfg.num_classes and model.default_cfg is model.pretrained_cfg
    assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == cfg.in_chans


def test_wrong_input_size_is_refused(model):
    side = model.arch.img_size
    for shape in ((1, 3, side + 32, side + 32), (1, 3, side * 2, side), (1, 1, side, side)):
        with pytest.raises(SlimformerError, match=f"takes images of shape .* {side}, {side}"):
            model(torch.randn(shape))
        with pytest.raises(SlimformerError):
            model.forward_intermediates(torch.randn(shape))


def test_forward_intermediates_and_feature_info(model):
    x = _x(model)
    cfg = model.arch
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x), atol=1e-6)
        assert torch.allclose(model.forward_head(final), model(x), atol=1e-6)
        assert len(inter) == len(model.feature_info) == 4
        for t, info, si in zip(inter, model.feature_info, range(4)):
            assert t.shape == (2, info["num_chs"], cfg.img_size // info["reduction"], cfg.img_size // info["reduction"])
            assert info["num_chs"] == cfg.stages[si].width and model.get_submodule(info["module"]) is model.stages[si]
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last2] == [t.shape for t in inter[2:]]
        assert torch.allclose(last2[0], inter[2])
        early, picked = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.allclose(picked[0], inter[1]) and early.shape == inter[1].shape
        normed = model.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)[0]
        tokens = normed.flatten(2).transpose(1, 2)
        assert torch.allclose(tokens, final, atol=1e-6)


def test_grad_checkpointing_gives_the_same_output_and_grads(model):
    x = _x(model)
    model.train()
    try:
        outs, grads = [], []
        for enable in (False, True):
            model.set_grad_checkpointing(enable)
            model.zero_grad()
            torch.manual_seed(1)
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            out.square().mean().backward()
            outs.append(out.detach())
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert torch.allclose(outs[0], outs[1], atol=1e-6)
        assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    finally:
        model.set_grad_checkpointing(False)
        model.eval()


@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher_covers_every_parameter(model, coarse):
    import re

    matcher = model.group_matcher(coarse=coarse)
    patterns = [matcher["stem"]] + [p for p, _ in matcher["blocks"]]
    names = [n for n, _ in model.named_parameters()]
    unmatched = [n for n in names if not any(re.match(p, n) for p in patterns)]
    assert all(n.startswith(("head.", "head_dist.")) for n in unmatched)  # timm's last group: the classifier
    groups = group_parameters(model, matcher)
    order = [g for g in sorted(groups) for _ in groups[g]]
    flat = [n for g in sorted(groups) for n in groups[g]]
    assert sorted(flat) == sorted(names)
    first_of = dict(zip(reversed(flat), reversed(order)))
    assert first_of["stem.conv1.weight"] == 0 and first_of["norm.weight"] < first_of["head.weight"]
    def has_params(m):
        return any(True for _ in m.parameters())

    units = {(si, bi) for si, s in enumerate(model.stages) for bi, b in enumerate(s.blocks) if has_params(b)}
    units |= {(si, 0) for si, s in enumerate(model.stages) if has_params(s.downsample)}  # joins block 0
    assert len(groups) == 2 + (4 if coarse else len(units))  # stem, stages or blocks (norm joins the last), head


def test_features_only_through_timm(tmp_path):
    fm = timm.create_model("slimformer_l1", features_only=True, out_indices=(1, 3), img_size=64)
    assert fm.feature_info.channels() == [96, 448] and fm.feature_info.reduction() == [8, 32]
    feats = fm(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 96, 8, 8), (1, 448, 2, 2)]


def test_timm_builds_an_exported_subnet_from_its_file(tmp_path):
    from slimformer.export import export_model

    torch.manual_seed(0)
    net = EfficientFormerNet(get_space("tiny").sample(7)).eval()
    export_model(net, tmp_path, formats=("pt",), measure=False)
    built = timm.create_model("slimformer_subnet", pretrained=True,
                              pretrained_cfg_overlay={"file": str(tmp_path / "model.pt")}).eval()
    assert built.arch == net.arch
    assert resolve_model_data_config(built)["input_size"] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(built(x), net(x))
    ten = timm.create_model("slimformer_subnet", pretrained=True, num_classes=4,
                            pretrained_cfg_overlay={"file": str(tmp_path / "model.pt")})
    assert ten(x).shape == (2, 4)  # a new head, the body's weights loaded
    assert torch.equal(ten.stem.conv1.weight, net.stem.conv1.weight)


def test_timm_builds_a_search_run_subnet(tmp_path):
    torch.manual_seed(0)
    net = EfficientFormerNet(get_space("tiny").sample(8)).eval()
    (tmp_path / "arch.json").write_text(net.arch.to_json())
    torch.save(net.state_dict(), tmp_path / "subnet.pt")
    built = timm.create_model("slimformer_subnet", pretrained=True,
                              pretrained_cfg_overlay={"file": str(tmp_path / "subnet.pt")}).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(built(x), net(x))
    with pytest.raises(SlimformerError, match="needs arch="):
        timm.create_model("slimformer_subnet")
