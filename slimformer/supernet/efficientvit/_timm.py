"""Pretrained EfficientViT weights from a local file: timm's layout or the original microsoft/Cream one.

``checkpoint_filter_fn`` maps either to our keys (timm's naming, see ``_model``). The original repository
names a ConvNorm's parts ``c``/``bn`` and the classifier's ``bn``/``l``, keeps the patch embedding as a
flat ``Sequential`` (convs at 0, 2, 4, 6) and puts each stage's subsample block at positions 0-2 of
``blocks2`` / ``blocks3`` ahead of that stage's blocks. A distilled original checkpoint (``head_dist``)
loaded into a model without one has its two classifiers merged into one: both are affine at inference,
so their average is one BN-free linear map and the outputs do not change.
"""
from __future__ import annotations

import re
from dataclasses import replace

import torch
from timm.layers import resize_rel_pos_bias_table_levit

from ..._errors import SlimformerError
from .._timm import read_state_dict
from ._model import EfficientViTNet
from ._presets import EVIT_PRESETS
from ._supernet import EfficientViTSupernet

_ORIG = re.compile(r"^blocks(\d)\.(\d+)\.(.*)$")
_SUB = ("res1", "patchmerge", "res2")


def _unwrap(state_dict: dict) -> dict:
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
            break
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def original_key(k: str) -> str:
    """One microsoft/Cream EfficientViT key in timm's naming."""
    parts = ["conv" if p == "c" else "linear" if p == "l" else p for p in k.split(".")]
    k = ".".join(parts)
    if k.startswith("patch_embed."):
        p = k.split(".")
        return ".".join(["patch_embed", f"conv{int(p[1]) // 2 + 1}", *p[2:]])
    m = _ORIG.match(k)
    if not m:
        return k
    stage, j, rest = int(m[1]) - 1, int(m[2]), m[3]
    if stage == 0:
        return f"stages.0.blocks.{j}.{rest}"
    if j < 3:
        return f"stages.{stage}.downsample.{_SUB[j]}.{rest}"
    return f"stages.{stage}.blocks.{j - 3}.{rest}"


def _merge_dist_head(sd: dict) -> dict:
    """head + head_dist (each BatchNorm1d + linear) -> one linear with an identity BatchNorm."""
    def fused(p):
        s = sd[f"{p}.bn.weight"] / (sd[f"{p}.bn.running_var"] + 1e-5).sqrt()
        b = sd[f"{p}.bn.bias"] - sd[f"{p}.bn.running_mean"] * s
        w = sd[f"{p}.linear.weight"]
        return w * s[None, :], w @ b + sd[f"{p}.linear.bias"]
    (w1, b1), (w2, b2) = fused("head"), fused("head_dist")
    out = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
    c = w1.shape[1]
    out.update({"head.bn.weight": torch.ones(c), "head.bn.bias": torch.zeros(c),
                "head.bn.running_mean": torch.zeros(c), "head.bn.running_var": torch.full((c,), 1 - 1e-5),
                "head.bn.num_batches_tracked": torch.tensor(0),
                "head.linear.weight": (w1 + w2) / 2, "head.linear.bias": (b1 + b2) / 2})
    return out


def checkpoint_filter_fn(state_dict: dict, model=None) -> dict:
    """Map a timm or original-repository EfficientViT state dict to our keys.

    Unwraps ``{'model': ...}`` containers, strips ``module.``, drops the index buffers, renames original
    keys, merges a distillation head the model lacks, and (given ``model``) resizes attention biases for
    another window, as timm's own filter does.
    """
    sd = _unwrap(state_dict)
    if any(k.startswith(("blocks1.", "patch_embed.0.")) for k in sd):
        sd = {original_key(k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith("attention_bias_idxs")}
    target = model.state_dict() if model is not None else {}
    if model is not None and "head_dist.linear.weight" in sd and "head_dist.linear.weight" not in target:
        sd = _merge_dist_head(sd)
    for k, v in list(sd.items()):
        if k.endswith("attention_biases") and k in target and v.shape != target[k].shape:
            sd[k] = resize_rel_pos_bias_table_levit(v.T, target[k].shape[::-1]).T.contiguous()
    return sd


def load_pretrained(path, arch="m0"):
    """Build EfficientViT ``arch`` (a preset name or config) and load a local timm/original weights file."""
    if isinstance(arch, str):
        key = arch.removeprefix("efficientvit_")
        if key not in EVIT_PRESETS:
            raise SlimformerError(f"{arch!r} is not an EfficientViT preset (choose from {', '.join(EVIT_PRESETS)})")
        arch = EVIT_PRESETS[key]()
    model = EfficientViTNet(arch)
    state = checkpoint_filter_fn(read_state_dict(path), model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_shape = [k for k, v in state.items() if k in model.state_dict() and v.shape != model.state_dict()[k].shape]
    if missing or unexpected or bad_shape:
        some = (missing or unexpected or bad_shape)[:3]
        raise SlimformerError(f"{path} does not match {arch.name or 'the architecture'}: {len(missing)} missing, "
                              f"{len(unexpected)} unexpected keys (e.g. {', '.join(some)})")
    return model.eval()


def supernet_from_pretrained(path, arch, space):
    """An EfficientViT supernet of ``space`` whose ``arch`` slices hold the weights in ``path`` (the classifier
    only if the space has the file's number of classes)."""
    net = load_pretrained(path, arch)
    cfg = net.arch
    if cfg.img_size != space.img_size:
        raise SlimformerError(f"pretrained {cfg.name} is for {cfg.img_size}px but the space is {space.img_size}px")
    sup = EfficientViTSupernet(space)
    same = cfg.num_classes == space.num_classes
    sup.load_subnet(cfg if same else replace(cfg, num_classes=space.num_classes), net, skip_head=not same)
    return sup
