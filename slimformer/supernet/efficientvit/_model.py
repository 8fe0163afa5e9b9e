"""``EfficientViTNet``: the standalone model one :class:`EfficientViTConfig` describes.

Layers come from timm's ``efficientvit_msra`` (``ConvNorm``, ``ConvMlp``, ``ResidualDrop``, ``PatchMerging``,
``PatchEmbedding``, ``NormLinear``) and the module tree follows timm's naming exactly, so a timm
``efficientvit_m0``...``m5`` state dict loads into the matching preset unchanged. Differences from timm, all
needed by the search space: per-block heads, Q/K dim, V dim (at most the head's input chunk), FFN ratio
and query kernels; an optional distillation head (the original repository's ``head_dist``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from timm.models.efficientvit_msra import (
    ConvMlp,
    ConvNorm,
    NormLinear,
    PatchEmbedding,
    PatchMerging,
    ResidualDrop,
)
from torch import nn

from .._model import _cfg, classify, relative_position_index
from ._config import MERGE_RATIO, SUB_FFN_RATIO, EfficientViTConfig, EViTBlockConfig


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, C, H, W) -> (B * windows, C, ws, ws), padding bottom/right (timm's partition), and what undoes it."""
    B, C, H, W = x.shape
    if H == ws and W == ws:
        return x, ()
    x = x.permute(0, 2, 3, 1)
    pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    nH, nW = (H + pad_b) // ws, (W + pad_r) // ws
    x = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(B * nH * nW, ws, ws, C).permute(0, 3, 1, 2)
    return x, (B, H, W, nH, nW)


def window_reverse(x: torch.Tensor, undo: tuple[int, ...]) -> torch.Tensor:
    if not undo:
        return x
    B, H, W, nH, nW = undo
    C, ws = x.shape[1], x.shape[2]
    x = x.permute(0, 2, 3, 1).view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, nH * ws, nW * ws, C)
    return x[:, :H, :W].contiguous().permute(0, 3, 1, 2)


def window_apply(fn, x: torch.Tensor, ws: int) -> torch.Tensor:
    """``fn`` on every ``ws`` x ``ws`` window of ``x`` (B, C, H, W)."""
    xw, undo = window_partition(x, ws)
    return window_reverse(fn(xw), undo)


def cascade_input(chunk: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The next head's input: its chunk with the previous head's output added to its first channels."""
    extra = chunk.shape[1] - prev.shape[1]
    return chunk + (F.pad(prev, (0, 0, 0, 0, 0, extra)) if extra else prev)


def attention_core(q, k, v, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """One CGA head on (B, C, H, W) maps: softmax(q^T k * scale + bias) applied to v."""
    B, _, H, W = v.shape
    q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
    attn = ((q * scale).transpose(-2, -1) @ k + bias).softmax(dim=-1)
    return (v @ attn.transpose(-2, -1)).view(B, -1, H, W)


class CascadedGroupAttention(nn.Module):
    """timm's ``CascadedGroupAttention`` with a free per-head V dim (at most the input chunk)."""

    def __init__(self, dim: int, b: EViTBlockConfig, resolution: int):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = b.heads, b.qk_dim, b.v_dim
        self.scale = b.qk_dim ** -0.5
        self.resolution = resolution
        chunk = dim // b.heads
        self.qkvs = nn.ModuleList(ConvNorm(chunk, 2 * b.qk_dim + b.v_dim) for _ in range(b.heads))
        self.dws = nn.ModuleList(ConvNorm(b.qk_dim, b.qk_dim, k, 1, k // 2, groups=b.qk_dim) for k in b.kernels)
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(b.v_dim * b.heads, dim, bn_weight_init=0))
        self.attention_biases = nn.Parameter(torch.zeros(b.heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", relative_position_index(resolution), persistent=False)

    def forward(self, x):
        feats_in = x.chunk(self.num_heads, dim=1)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        outs, feat = [], feats_in[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = cascade_input(feats_in[i], feat)
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.val_dim], dim=1)
            feat = attention_core(dw(q), k, v, bias[i], self.scale)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))


class LocalWindowAttention(nn.Module):
    def __init__(self, dim: int, b: EViTBlockConfig, resolution: int, window: int):
        super().__init__()
        self.resolution = resolution
        self.attn = CascadedGroupAttention(dim, b, min(window, resolution))

    def forward(self, x):
        return window_apply(self.attn, x, self.attn.resolution)


def _dw(dim: int, bn_weight_init: float = 1.0) -> ConvNorm:
    return ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=bn_weight_init)


class EfficientViTBlock(nn.Module):
    """dw0 -> ffn0 -> mixer (CGA in windows) -> dw1 -> ffn1, each residual (timm's ``EfficientVitBlock``)."""

    def __init__(self, dim: int, b: EViTBlockConfig, resolution: int, window: int):
        super().__init__()
        self.dw0 = ResidualDrop(_dw(dim, 0.0))
        self.ffn0 = ResidualDrop(ConvMlp(dim, b.hidden(dim)))
        self.mixer = ResidualDrop(LocalWindowAttention(dim, b, resolution, window))
        self.dw1 = ResidualDrop(_dw(dim, 0.0))
        self.ffn1 = ResidualDrop(ConvMlp(dim, b.hidden(dim)))

    def forward(self, x):
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def subsample(in_dim: int, out_dim: int) -> nn.Sequential:
    """timm's stage downsample: res1 (dw + FFN) -> patch merging -> res2 (dw + FFN)."""
    return nn.Sequential(OrderedDict([
        ("res1", nn.Sequential(ResidualDrop(_dw(in_dim)), ResidualDrop(ConvMlp(in_dim, int(in_dim * SUB_FFN_RATIO))))),
        ("patchmerge", PatchMerging(in_dim, out_dim)),
        ("res2", nn.Sequential(ResidualDrop(_dw(out_dim)),
                               ResidualDrop(ConvMlp(out_dim, int(out_dim * SUB_FFN_RATIO))))),
    ]))


class EfficientViTStage(nn.Module):
    def __init__(self, cfg: EfficientViTConfig, si: int):
        super().__init__()
        st = cfg.stages[si]
        self.downsample = subsample(cfg.stages[si - 1].width, st.width) if si > 0 else nn.Identity()
        self.blocks = nn.Sequential(*(EfficientViTBlock(st.width, b, cfg.resolution(si), cfg.window)
                                      for b in st.blocks))

    def forward(self, x):
        return self.blocks(self.downsample(x))


class EfficientViTNet(nn.Module):
    """A standalone EfficientViT network with timm's model API."""

    def __init__(self, cfg: EfficientViTConfig, *, drop_rate: float = 0.0):
        super().__init__()
        assert MERGE_RATIO == 4  # timm's PatchMerging hard-codes its hidden width
        self.arch = cfg
        self.num_classes, self.in_chans, self.global_pool = cfg.num_classes, cfg.in_chans, "avg"
        self.distilled_training = False
        self.pretrained_cfg = self.default_cfg = _cfg(
            cfg, architecture="slimformer_efficientvit", first_conv="patch_embed",
            classifier=("head", "head_dist") if cfg.distillation and cfg.num_classes > 0 else "head")
        self.patch_embed = PatchEmbedding(cfg.in_chans, cfg.stages[0].width)
        self.stages = nn.Sequential(*(EfficientViTStage(cfg, si) for si in range(len(cfg.stages))))
        self.num_features = self.head_hidden_size = cfg.num_features
        self.head = NormLinear(self.num_features, cfg.num_classes, drop=drop_rate) if cfg.num_classes > 0 \
            else nn.Identity()
        self.head_dist = (NormLinear(self.num_features, cfg.num_classes, drop=drop_rate)
                          if cfg.distillation and cfg.num_classes > 0 else None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else classify(self, x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.head.linear if self.head_dist is None else (self.head.linear, self.head_dist.linear)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        self.num_classes = num_classes
        self.head = NormLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = NormLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def set_distilled_training(self, enable: bool = True):
        self.distilled_training = enable

    @torch.jit.ignore
    def no_weight_decay(self):
        return {k for k in self.state_dict() if "attention_biases" in k}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def fuse(self) -> EfficientViTNet:
        """A deploy copy in eval mode: every ConvNorm one conv with bias, every NormLinear one linear (timm's
        ``fuse()``), the classifier and distillation head (averaged in eval) one linear. Exact in eval."""
        import copy

        m = copy.deepcopy(self).eval()
        m.distilled_training = False
        for _, parent in list(m.named_modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (ConvNorm, NormLinear)):
                    setattr(parent, name, child.fuse())
        if m.head_dist is not None:
            a, b = m.head, m.head_dist
            merged = nn.Linear(a.in_features, a.out_features)
            merged.weight.copy_((a.weight + b.weight) / 2)
            merged.bias.copy_((a.bias + b.bias) / 2)
            m.head, m.head_dist = merged, None
        return m

    def num_macs(self) -> int:
        from ._profile import count_macs

        return count_macs(self.arch)
