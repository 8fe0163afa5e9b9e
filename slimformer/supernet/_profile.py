"""Parameter and multiply-accumulate counts of an ``ArchConfig``, computed from the config alone.

MACs count convolutions, linear layers and the two attention matmuls (Q·Kᵀ and A·V); pooling,
norms, activations and the attention bias add are not MACs (the usual convention, as in fvcore).
Tests check both figures against the built model (``numel`` and torch's FLOP counter).
"""
from __future__ import annotations

from ._config import ArchConfig, BlockConfig


def block_params(width: int, b: BlockConfig, tokens: int) -> int:
    c = width
    if b.kind == "skip":
        return 0
    h = b.hidden(c)
    if b.kind == "mb4d":  # ls1, fc1(+b), bn1, fc2(+b), bn2, ls2
        return c + (c * h + h) + 2 * h + (h * c + c) + 2 * c + c
    qkv = b.heads * (2 * b.qk_dim + b.v_dim)
    return (2 * c + (c * qkv + qkv) + (b.heads * b.v_dim * c + c) + b.heads * tokens + c
            + 2 * c + (c * h + h) + (h * c + c) + c)


def block_macs(width: int, b: BlockConfig, tokens: int) -> int:
    c, n = width, tokens
    if b.kind == "skip":
        return 0
    h = b.hidden(c)
    if b.kind == "mb4d":
        return n * 2 * c * h
    qkv = b.heads * (2 * b.qk_dim + b.v_dim)
    attn = b.heads * n * n * (b.qk_dim + b.v_dim)
    return n * c * qkv + attn + n * b.heads * b.v_dim * c + n * 2 * c * h


def count_params(cfg: ArchConfig) -> int:
    if cfg.family == "efficientvit":
        from .efficientvit._profile import count_params as evit_params

        return evit_params(cfg)
    s, w0 = cfg.stem_width, cfg.stages[0].width
    total = (cfg.in_chans * s * 9 + s) + 2 * s + (s * w0 * 9 + w0) + 2 * w0
    for si, st in enumerate(cfg.stages):
        if si > 0:
            c_in = cfg.stages[si - 1].width
            total += c_in * st.width * 9 + st.width + 2 * st.width
        total += sum(block_params(st.width, b, cfg.tokens(si)) for b in st.blocks)
    c, k = cfg.num_features, cfg.num_classes
    total += 2 * c + (c * k + k) * (2 if cfg.distillation else 1)
    return total


def count_macs(cfg: ArchConfig) -> int:
    if cfg.family == "efficientvit":
        from .efficientvit._profile import count_macs as evit_macs

        return evit_macs(cfg)
    s, w0 = cfg.stem_width, cfg.stages[0].width
    half, quarter = cfg.img_size // 2, cfg.img_size // 4
    total = half * half * s * cfg.in_chans * 9 + quarter * quarter * w0 * s * 9
    for si, st in enumerate(cfg.stages):
        if si > 0:
            total += cfg.tokens(si) * st.width * cfg.stages[si - 1].width * 9
        total += sum(block_macs(st.width, b, cfg.tokens(si)) for b in st.blocks)
    total += cfg.num_features * cfg.num_classes * (2 if cfg.distillation else 1)
    return total
