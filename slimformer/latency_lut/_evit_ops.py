"""``build_evit_op(key)``: the module an EfficientViT op key stands for, built from the family's own layers.

Each op is the piece of :class:`~slimformer.supernet.efficientvit.EfficientViTNet` that runs in a subnet,
in eval mode, with example inputs of the shapes it sees there (attention heads see windows stacked on
the batch axis). ``MixPart`` and ``HeadPart`` share the parameters of a real ``CascadedGroupAttention``,
and ``compose_mixer`` runs them as the block's mixer does (tested equal), so measuring the parts
measures the mixer.
"""
from __future__ import annotations

import math

import torch
from timm.models.efficientvit_msra import ConvMlp, NormLinear, PatchEmbedding, ResidualDrop
from torch import nn

from ..supernet.efficientvit import EViTBlockConfig
from ..supernet.efficientvit._model import (
    CascadedGroupAttention,
    _dw,
    attention_core,
    cascade_input,
    subsample,
    window_partition,
    window_reverse,
)


class MixPart(nn.Module):
    """Window partition, chunks, cascade adds, concat, ReLU + projection, window reverse, residual.

    ``forward(x, *head_outputs)`` returns the block's new ``x`` and the ``h`` inputs of the heads."""

    def __init__(self, attn: CascadedGroupAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x, *outs):
        xw, undo = window_partition(x, self.attn.resolution)
        chunks = xw.chunk(self.attn.num_heads, dim=1)
        inputs = [chunks[0], *(cascade_input(chunks[i], outs[i - 1]) for i in range(1, len(chunks)))]
        y = window_reverse(self.attn.proj(torch.cat(outs, 1)), undo)
        return (x + y, *inputs)


class HeadPart(nn.Module):
    """One head of cascaded group attention on its (windowed) input: qkv, query depthwise conv, attention."""

    def __init__(self, attn: CascadedGroupAttention, i: int):
        super().__init__()
        self.qkv, self.dw = attn.qkvs[i], attn.dws[i]
        self.attention_biases = attn.attention_biases
        self.register_buffer("attention_bias_idxs", attn.attention_bias_idxs.clone(), persistent=False)
        self.i, self.key_dim, self.val_dim, self.scale = i, attn.key_dim, attn.val_dim, attn.scale

    def forward(self, feat):
        q, k, v = self.qkv(feat).split([self.key_dim, self.key_dim, self.val_dim], dim=1)
        bias = self.attention_biases[self.i][self.attention_bias_idxs]
        return attention_core(self.dw(q), k, v, bias, self.scale)


def mixer_parts(attn: CascadedGroupAttention) -> tuple[MixPart, list[HeadPart]]:
    return MixPart(attn), [HeadPart(attn, i) for i in range(attn.num_heads)]


def compose_mixer(mix: MixPart, heads: list[HeadPart], x: torch.Tensor) -> torch.Tensor:
    """``x + mixer(x)`` from the parts, in the block's order (the first pass feeds zeros, the cascade is
    replayed head by head)."""
    xw, _ = window_partition(x, mix.attn.resolution)
    chunks = xw.chunk(mix.attn.num_heads, dim=1)
    outs, feat = [], chunks[0]
    for i, head in enumerate(heads):
        if i > 0:
            feat = cascade_input(chunks[i], outs[-1])
        outs.append(head(feat))
    return mix(x, *outs)[0]


class ClsPart(nn.Module):
    def __init__(self, dim: int, num_classes: int, heads: int):
        super().__init__()
        self.head = NormLinear(dim, num_classes) if heads else nn.Identity()
        self.head_dist = NormLinear(dim, num_classes) if heads == 2 else None

    def forward(self, x):
        x = x.mean((2, 3))
        return self.head(x) if self.head_dist is None else (self.head(x) + self.head_dist(x)) / 2


def _attn(width: int, heads: int, qk: int, v: int, kernels: tuple[int, ...], ws: int) -> CascadedGroupAttention:
    return CascadedGroupAttention(width, EViTBlockConfig(heads, qk, v, 1.0, kernels), ws)


def build_evit_op(kind: str, d: dict[str, int], batch: int = 1) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(shape, generator=g)

    if kind == "evit.stem":
        return PatchEmbedding(d["i"], d["c"]), (rand(batch, d["i"], d["r"], d["r"]),)
    if kind == "evit.sub":
        return subsample(d["c"], d["o"]), (rand(batch, d["c"], d["r"], d["r"]),)
    if kind == "evit.dwffn":
        m = nn.Sequential(ResidualDrop(_dw(d["c"])), ResidualDrop(ConvMlp(d["c"], d["f"])))
        return m, (rand(batch, d["c"], d["r"], d["r"]),)
    if kind == "evit.cls":
        return ClsPart(d["c"], d["k"], d["d"]), (rand(batch, d["c"], d["r"], d["r"]),)
    ws = d["w"]
    windows = batch * math.ceil(d["r"] / ws) ** 2
    if kind == "evit.mix":
        h, v = d["h"], d["v"]
        mix = MixPart(_attn(d["c"], h, 8, v, (3,) * h, ws))
        return mix, (rand(batch, d["c"], d["r"], d["r"]), *(rand(windows, v, ws, ws) for _ in range(h)))
    # evit.head: a one-head attention whose input is the head's chunk
    head = HeadPart(_attn(d["i"], 1, d["qk"], d["v"], (d["k"],), ws), 0)
    return head, (rand(windows, d["i"], ws, ws),)
