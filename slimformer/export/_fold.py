"""Deploy-time folding of an :class:`EfficientFormerNet`: exact in eval mode, fewer ops at inference.

``fold_bn(model)`` returns a folded copy (the input is left untouched):

- every BatchNorm is folded into the convolution before it: stem (conv1+norm1, conv2+norm2), each
  downsample (conv+norm) and each MB4D MLP (fc1+norm1, fc2+norm2);
- layer scale is folded where it is a pure per-channel scale of a linear layer's output: MB4D ``ls2``
  into ``fc2`` (after its BN), MB3D ``ls1`` into the attention ``proj`` and MB3D ``ls2`` into ``mlp.fc2``;
- MB4D ``ls1`` multiplies ``pool(x) - x``: there is no layer to fold it into (the pooling divides by a
  border-dependent count), so it stays one per-channel multiply, and the token mixer is computed as
  ``x + ls1 * (pool(x) - x)`` exactly as before;
- in each attention block the ``attention_biases[:, idxs]`` gather is precomputed into a constant
  (heads, N, N) buffer, and the ``qk_dim ** -0.5`` scale is folded into the query rows of ``qkv``;
- the classifier and distillation heads (averaged in eval) become one ``Linear`` with the averaged
  weights and biases.

LayerNorms do not fold (their statistics depend on the input): that is EfficientFormer's point in
keeping MB4D blocks Conv-BN only. The result is for inference; call ``.eval()`` semantics only.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..supernet import EfficientFormerNet
from ..supernet._model import MB3D, MB4D, Attention


class DeployAttention(nn.Module):
    """EfficientFormer attention with the bias gather precomputed and the scale folded into ``qkv``."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = attn.num_heads, attn.key_dim, attn.val_dim
        self.val_attn_dim = attn.val_attn_dim
        self.qkv = copy.deepcopy(attn.qkv)
        self.proj = copy.deepcopy(attn.proj)
        with torch.no_grad():
            per_head = 2 * self.key_dim + self.val_dim
            w = self.qkv.weight.view(self.num_heads, per_head, -1)
            b = self.qkv.bias.view(self.num_heads, per_head)
            w[:, : self.key_dim] *= attn.scale
            b[:, : self.key_dim] *= attn.scale
            bias = attn.attention_biases[:, attn.attention_bias_idxs].detach().clone()
        self.register_buffer("attention_bias", bias.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1) + self.attention_bias).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
        return self.proj(x)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(y) == y * scale + shift`` per channel in eval mode."""
    std = torch.sqrt(bn.running_var + bn.eps)
    w = bn.weight if bn.affine else torch.ones_like(std)
    b = bn.bias if bn.affine else torch.zeros_like(std)
    scale = w / std
    return scale, b - bn.running_mean * scale


def _scale_out(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor | None = None) -> None:
    """In place: ``layer(x) * scale + shift`` becomes ``layer(x)`` (output channels along dim 0)."""
    with torch.no_grad():
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.view(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
        bias = bias * scale + (shift if shift is not None else 0)
        layer.bias = nn.Parameter(bias)


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    _scale_out(conv, *_bn_affine(bn))


def _ls(gamma_module: nn.Module) -> torch.Tensor:
    return gamma_module.gamma.detach().reshape(-1)


def fold_bn(model: EfficientFormerNet) -> EfficientFormerNet:
    """A folded, eval-mode copy of ``model`` (see the module docstring for what folds and what does not)."""
    if not isinstance(model, EfficientFormerNet) and hasattr(model, "fuse"):
        return model.fuse()  # another family's own deploy folding (EfficientViT: timm's ConvNorm/NormLinear fuse)
    if not isinstance(model, EfficientFormerNet):
        raise TypeError(f"fold_bn expects an EfficientFormerNet, got {type(model).__name__}")
    m = copy.deepcopy(model).eval()
    m.distilled_training = False
    stem = m.stem
    _fold_conv_bn(stem.conv1, stem.norm1)
    stem.norm1 = nn.Identity()
    _fold_conv_bn(stem.conv2, stem.norm2)
    stem.norm2 = nn.Identity()
    for stage in m.stages:
        ds = stage.downsample
        if isinstance(ds, nn.Sequential):  # Unflat + Downsample
            ds = ds[-1]
        if hasattr(ds, "norm"):
            _fold_conv_bn(ds.conv, ds.norm)
            ds.norm = nn.Identity()
        for blk in stage.blocks:
            if isinstance(blk, MB4D):
                mlp = blk.mlp
                _fold_conv_bn(mlp.fc1, mlp.norm1)
                scale, shift = _bn_affine(mlp.norm2)
                ls2 = _ls(blk.ls2)
                _scale_out(mlp.fc2, scale * ls2, shift * ls2)
                mlp.norm1, mlp.norm2, blk.ls2 = nn.Identity(), nn.Identity(), nn.Identity()
                blk.drop_path1, blk.drop_path2 = nn.Identity(), nn.Identity()
            elif isinstance(blk, MB3D):
                att = DeployAttention(blk.token_mixer)
                _scale_out(att.proj, _ls(blk.ls1))
                _scale_out(blk.mlp.fc2, _ls(blk.ls2))
                blk.token_mixer, blk.ls1, blk.ls2 = att, nn.Identity(), nn.Identity()
                blk.drop_path1, blk.drop_path2 = nn.Identity(), nn.Identity()
    if m.head_dist is not None and isinstance(m.head, nn.Linear):
        head = nn.Linear(m.head.in_features, m.head.out_features)
        with torch.no_grad():
            head.weight.copy_((m.head.weight + m.head_dist.weight) / 2)
            head.bias.copy_((m.head.bias + m.head_dist.bias) / 2)
        m.head, m.head_dist = head, None
    m.head_drop = nn.Identity()
    m.folded = True
    return m.eval()


def is_folded(model: nn.Module) -> bool:
    return bool(getattr(model, "folded", False))
