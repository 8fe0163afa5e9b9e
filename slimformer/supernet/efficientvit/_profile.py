"""Parameter and multiply-accumulate counts of an ``EfficientViTConfig``, from the config alone.

MACs count convolutions, linear layers and the two attention matmuls per head and window (q^T k and
v attn^T, over the padded windows); norms, activations, pooling and the bias add are not MACs (the
fvcore convention). Tests check both against the built model (``numel``, torch's FLOP counter).
"""
from __future__ import annotations

import itertools
import math

from ._config import MERGE_RATIO, SUB_FFN_RATIO, EfficientViTConfig, EViTBlockConfig
from ._elastic import se_channels


def _cn(c_in: int, c_out: int, k: int = 1, dw: bool = False) -> int:
    """A ConvNorm's parameters: bias-free conv + BN (weight, bias)."""
    return (c_out if dw else c_in * c_out) * k * k + 2 * c_out


def _dwffn_params(c: int, hidden: int) -> int:
    return _cn(c, c, 3, dw=True) + _cn(c, hidden) + _cn(hidden, c)


def block_params(width: int, b: EViTBlockConfig, ws: int) -> int:
    chunk = width // b.heads
    attn = sum(_cn(chunk, 2 * b.qk_dim + b.v_dim) + _cn(b.qk_dim, b.qk_dim, k, dw=True) for k in b.kernels)
    attn += _cn(b.heads * b.v_dim, width) + b.heads * ws * ws
    return 2 * _dwffn_params(width, b.hidden(width)) + attn


def subsample_params(c_in: int, c_out: int) -> int:
    hid = c_in * MERGE_RATIO
    rd = se_channels(hid)
    merge = _cn(c_in, hid) + _cn(hid, hid, 3, dw=True) + (hid * rd + rd) + (rd * hid + hid) + _cn(hid, c_out)
    return (_dwffn_params(c_in, int(c_in * SUB_FFN_RATIO)) + merge
            + _dwffn_params(c_out, int(c_out * SUB_FFN_RATIO)))


def count_params(cfg: EfficientViTConfig) -> int:
    w0 = cfg.stages[0].width
    dims = [cfg.in_chans, w0 // 8, w0 // 4, w0 // 2, w0]
    total = sum(_cn(a, b, 3) for a, b in itertools.pairwise(dims))
    for si, st in enumerate(cfg.stages):
        if si > 0:
            total += subsample_params(cfg.stages[si - 1].width, st.width)
        total += sum(block_params(st.width, b, cfg.window_size(si)) for b in st.blocks)
    c, k = cfg.num_features, cfg.num_classes
    if k > 0:
        total += (2 * c + c * k + k) * (2 if cfg.distillation else 1)
    return total


def _dwffn_macs(c: int, hidden: int, r: int) -> int:
    return r * r * (9 * c + 2 * c * hidden)


def block_macs(width: int, b: EViTBlockConfig, res: int, ws: int) -> int:
    windows = math.ceil(res / ws) ** 2
    n = ws * ws
    chunk = width // b.heads
    per_head = [n * (chunk * (2 * b.qk_dim + b.v_dim) + b.qk_dim * k * k) + n * n * (b.qk_dim + b.v_dim)
                for k in b.kernels]
    attn = windows * (sum(per_head) + n * b.heads * b.v_dim * width)
    return 2 * _dwffn_macs(width, b.hidden(width), res) + attn


def subsample_macs(c_in: int, c_out: int, r_in: int, r_out: int) -> int:
    hid = c_in * MERGE_RATIO
    rd = se_channels(hid)
    return (_dwffn_macs(c_in, int(c_in * SUB_FFN_RATIO), r_in) + r_in * r_in * c_in * hid
            + r_out * r_out * (9 * hid + hid * c_out) + 2 * hid * rd
            + _dwffn_macs(c_out, int(c_out * SUB_FFN_RATIO), r_out))


def count_macs(cfg: EfficientViTConfig) -> int:
    w0 = cfg.stages[0].width
    dims = [cfg.in_chans, w0 // 8, w0 // 4, w0 // 2, w0]
    side, total = cfg.img_size, 0
    for a, b in itertools.pairwise(dims):
        side = (side - 1) // 2 + 1
        total += side * side * a * b * 9
    for si, st in enumerate(cfg.stages):
        if si > 0:
            total += subsample_macs(cfg.stages[si - 1].width, st.width, cfg.resolution(si - 1), cfg.resolution(si))
        total += sum(block_macs(st.width, b, cfg.resolution(si), cfg.window_size(si)) for b in st.blocks)
    if cfg.num_classes > 0:
        total += cfg.num_features * cfg.num_classes * (2 if cfg.distillation else 1)
    return total
