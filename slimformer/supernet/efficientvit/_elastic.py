"""Elastic EfficientViT modules: the largest tensors of each layer and the slices a subnet uses.

Same protocol as the MetaBlock supernet (``supernet/_elastic.py``): ``slices(prefix, ...)`` maps the
standalone module's state-dict names (timm's) to ``(supernet tensor, index)``, and the forward pass,
extraction and loading all go through it. A narrower layer keeps the first channels; a smaller depthwise
kernel keeps the centre of the largest kernel (a centred k x k conv with padding k // 2 equals the
largest kernel with a zero ring). In cascaded group attention head ``i`` keeps, of its qkv rows laid out
[q | k | v] at their largest, the first ``qk`` query, first ``qk`` key and first ``v`` value rows.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from torch import nn

from .._elastic import Slices, get
from .._model import relative_position_index
from ._config import MERGE_RATIO, SUB_FFN_RATIO, EViTBlockConfig
from ._model import attention_core, cascade_input, window_apply

Index = slice | torch.Tensor


def _idx(c: int | torch.Tensor) -> Index:
    return slice(0, c) if isinstance(c, int) else c


def bn_slices(prefix: str, bn: nn.modules.batchnorm._BatchNorm, idx: Index) -> Slices:
    return {f"{prefix}.weight": (bn.weight, (idx,)), f"{prefix}.bias": (bn.bias, (idx,)),
            f"{prefix}.running_mean": (bn.running_mean, (idx,)), f"{prefix}.running_var": (bn.running_var, (idx,)),
            f"{prefix}.num_batches_tracked": (bn.num_batches_tracked, ())}


def bn_apply(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, idx: Index) -> torch.Tensor:
    """``bn`` on the channels ``idx``; in training their running statistics update in place."""
    training = bn.training or not bn.track_running_stats
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    if isinstance(idx, slice):  # views: the update lands in the buffers
        return F.batch_norm(x, bn.running_mean[idx], bn.running_var[idx], bn.weight[idx], bn.bias[idx],
                            training, factor, bn.eps)
    mean, var = bn.running_mean[idx], bn.running_var[idx]  # copies: write them back after the update
    y = F.batch_norm(x, mean, var, bn.weight[idx], bn.bias[idx], training, factor, bn.eps)
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.running_mean[idx], bn.running_var[idx] = mean, var
    return y


class ElasticConvNorm(nn.Module):
    """timm's ``ConvNorm`` (bias-free conv + BN) at its largest; dense or depthwise, odd kernel."""

    def __init__(self, max_in: int, max_out: int, k: int = 1, stride: int = 1, depthwise: bool = False):
        super().__init__()
        self.k, self.stride, self.depthwise = k, stride, depthwise
        self.conv = nn.Conv2d(max_in, max_out, k, stride, k // 2, groups=max_out if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(max_out)

    def _weight_index(self, out: Index, cin: Index | None, k: int | None) -> tuple:
        k = k or self.k
        off = (self.k - k) // 2
        ks = slice(off, off + k)
        return (out, slice(None), ks, ks) if self.depthwise else (out, cin, ks, ks)

    def slices(self, prefix: str, out, cin=None, k: int | None = None) -> Slices:
        o = _idx(out)
        return {f"{prefix}.conv.weight": (self.conv.weight, self._weight_index(o, _idx(cin) if cin is not None
                                                                                 else None, k)),
                **bn_slices(f"{prefix}.bn", self.bn, o)}

    def forward(self, x, out, cin=None, k: int | None = None):
        o = _idx(out)
        w = self.conv.weight[self._weight_index(o, _idx(cin) if cin is not None else None, k)]
        y = F.conv2d(x, w, None, self.stride, w.shape[-1] // 2, 1, w.shape[0] if self.depthwise else 1)
        return bn_apply(self.bn, y, o)


class ElasticFFN(nn.Module):
    """timm's ``ConvMlp``: pw1 (ConvNorm) -> ReLU -> pw2 (ConvNorm)."""

    def __init__(self, max_dim: int, max_hidden: int):
        super().__init__()
        self.pw1 = ElasticConvNorm(max_dim, max_hidden)
        self.pw2 = ElasticConvNorm(max_hidden, max_dim)

    def slices(self, prefix: str, dim: int, hidden: int) -> Slices:
        return {**self.pw1.slices(f"{prefix}.pw1", hidden, dim), **self.pw2.slices(f"{prefix}.pw2", dim, hidden)}

    def forward(self, x, dim: int, hidden: int):
        return self.pw2(F.relu(self.pw1(x, hidden, dim)), dim, hidden)


@lru_cache(maxsize=1024)
def _qkv_rows(qk: int, v: int, max_qk: int) -> torch.Tensor:
    rows = [*range(qk), *range(max_qk, max_qk + qk), *range(2 * max_qk, 2 * max_qk + v)]
    return torch.tensor(rows, dtype=torch.long)


@lru_cache(maxsize=1024)
def _v_cols(heads: int, v: int, max_v: int) -> torch.Tensor:
    return torch.tensor([i * max_v + j for i in range(heads) for j in range(v)], dtype=torch.long)


@lru_cache(maxsize=4096)
def _index_on(device: torch.device, qk: int, v: int, heads: int, max_qk: int, max_v: int):
    """The Q/K/V rows and V columns of one choice on ``device``, made once per choice and device: without it
    every forward of a CGA block on a GPU copied two index tensors host -> device."""
    return _qkv_rows(qk, v, max_qk).to(device), _v_cols(heads, v, max_v).to(device)


class ElasticCGA(nn.Module):
    """Cascaded group attention at its largest: per head position a qkv ConvNorm and a query depthwise conv."""

    def __init__(self, max_dim: int, max_heads: int, max_chunk: int, max_qk: int, max_v: int, max_k: int,
                 window: int):
        super().__init__()
        self.max_qk, self.max_v = max_qk, max_v
        self.qkvs = nn.ModuleList(ElasticConvNorm(max_chunk, 2 * max_qk + max_v) for _ in range(max_heads))
        self.dws = nn.ModuleList(ElasticConvNorm(max_qk, max_qk, max_k, depthwise=True) for _ in range(max_heads))
        self.proj = ElasticConvNorm(max_heads * max_v, max_dim)
        self.attention_biases = nn.Parameter(torch.zeros(max_heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_position_index(window), persistent=False)

    def _index(self, b: EViTBlockConfig) -> tuple[torch.Tensor, torch.Tensor]:
        return _index_on(self.attention_biases.device, b.qk_dim, b.v_dim, b.heads, self.max_qk, self.max_v)

    def slices(self, prefix: str, dim: int, b: EViTBlockConfig) -> Slices:
        rows, cols = self._index(b)
        out: Slices = {}
        for i in range(b.heads):
            out.update(self.qkvs[i].slices(f"{prefix}.qkvs.{i}", rows, dim // b.heads))
            out.update(self.dws[i].slices(f"{prefix}.dws.{i}", b.qk_dim, k=b.kernels[i]))
        out.update(self.proj.slices(f"{prefix}.proj.1", dim, cols))
        out[f"{prefix}.attention_biases"] = (self.attention_biases, (slice(0, b.heads),))
        return out

    def forward(self, x, dim: int, b: EViTBlockConfig):
        rows, cols = self._index(b)
        feats_in = x.chunk(b.heads, dim=1)
        bias = self.attention_biases[:b.heads][:, self.attention_bias_idxs]
        outs, feat = [], feats_in[0]
        for i in range(b.heads):
            if i > 0:
                feat = cascade_input(feats_in[i], feat)
            q, k, v = self.qkvs[i](feat, rows, dim // b.heads).split([b.qk_dim, b.qk_dim, b.v_dim], dim=1)
            feat = attention_core(self.dws[i](q, b.qk_dim, k=b.kernels[i]), k, v, bias[i], b.qk_dim ** -0.5)
            outs.append(feat)
        return self.proj(F.relu(torch.cat(outs, 1)), dim, cols)


class ElasticEViTBlock(nn.Module):
    """One block position: dw0, ffn0, the windowed CGA mixer, dw1, ffn1 at their largest."""

    def __init__(self, max_dim: int, max_hidden: int, cga: dict, window: int):
        super().__init__()
        self.window = window
        self.dw0 = ElasticConvNorm(max_dim, max_dim, 3, depthwise=True)
        self.ffn0 = ElasticFFN(max_dim, max_hidden)
        self.mixer = ElasticCGA(max_dim, window=window, **cga)
        self.dw1 = ElasticConvNorm(max_dim, max_dim, 3, depthwise=True)
        self.ffn1 = ElasticFFN(max_dim, max_hidden)

    def slices(self, prefix: str, dim: int, b: EViTBlockConfig) -> Slices:
        h = b.hidden(dim)
        return {**self.dw0.slices(f"{prefix}.dw0.m", dim), **self.ffn0.slices(f"{prefix}.ffn0.m", dim, h),
                **self.mixer.slices(f"{prefix}.mixer.m.attn", dim, b),
                **self.dw1.slices(f"{prefix}.dw1.m", dim), **self.ffn1.slices(f"{prefix}.ffn1.m", dim, h)}

    def forward(self, x, dim: int, b: EViTBlockConfig, ws: int):
        h = b.hidden(dim)
        x = x + self.dw0(x, dim)
        x = x + self.ffn0(x, dim, h)
        x = x + window_apply(lambda t: self.mixer(t, dim, b), x, ws)
        x = x + self.dw1(x, dim)
        return x + self.ffn1(x, dim, h)


def se_channels(hidden: int) -> int:
    """timm's ``SqueezeExcite(hidden, 0.25)`` reduction width."""
    return make_divisible(hidden * 0.25, 8, round_limit=0.0)


class ElasticSubsample(nn.Module):
    """res1 (dw + FFN at the input width) -> patch merging (1x1, dw 3x3/2, SE, 1x1) -> res2 (dw + FFN)."""

    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        hid = max_in * MERGE_RATIO
        self.res1_dw = ElasticConvNorm(max_in, max_in, 3, depthwise=True)
        self.res1_ffn = ElasticFFN(max_in, int(max_in * SUB_FFN_RATIO))
        self.conv1 = ElasticConvNorm(max_in, hid)
        self.conv2 = ElasticConvNorm(hid, hid, 3, 2, depthwise=True)
        self.se_fc1 = nn.Conv2d(hid, se_channels(hid), 1)
        self.se_fc2 = nn.Conv2d(se_channels(hid), hid, 1)
        self.conv3 = ElasticConvNorm(hid, max_out)
        self.res2_dw = ElasticConvNorm(max_out, max_out, 3, depthwise=True)
        self.res2_ffn = ElasticFFN(max_out, int(max_out * SUB_FFN_RATIO))

    def slices(self, prefix: str, c_in: int, c_out: int) -> Slices:
        hid, rd = c_in * MERGE_RATIO, se_channels(c_in * MERGE_RATIO)
        p = f"{prefix}.patchmerge"
        h, r = slice(0, hid), slice(0, rd)
        return {
            **self.res1_dw.slices(f"{prefix}.res1.0.m", c_in),
            **self.res1_ffn.slices(f"{prefix}.res1.1.m", c_in, int(c_in * SUB_FFN_RATIO)),
            **self.conv1.slices(f"{p}.conv1", hid, c_in), **self.conv2.slices(f"{p}.conv2", hid),
            f"{p}.se.fc1.weight": (self.se_fc1.weight, (r, h)), f"{p}.se.fc1.bias": (self.se_fc1.bias, (r,)),
            f"{p}.se.fc2.weight": (self.se_fc2.weight, (h, r)), f"{p}.se.fc2.bias": (self.se_fc2.bias, (h,)),
            **self.conv3.slices(f"{p}.conv3", c_out, hid),
            **self.res2_dw.slices(f"{prefix}.res2.0.m", c_out),
            **self.res2_ffn.slices(f"{prefix}.res2.1.m", c_out, int(c_out * SUB_FFN_RATIO)),
        }

    def forward(self, x, c_in: int, c_out: int):
        sl = self.slices("", c_in, c_out)
        hid = c_in * MERGE_RATIO
        x = x + self.res1_dw(x, c_in)
        x = x + self.res1_ffn(x, c_in, int(c_in * SUB_FFN_RATIO))
        y = F.relu(self.conv2(F.relu(self.conv1(x, hid, c_in)), hid))
        s = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), get(sl, ".patchmerge.se.fc1.weight"),
                            get(sl, ".patchmerge.se.fc1.bias")))
        s = F.conv2d(s, get(sl, ".patchmerge.se.fc2.weight"), get(sl, ".patchmerge.se.fc2.bias"))
        x = self.conv3(y * s.sigmoid(), c_out, hid)
        x = x + self.res2_dw(x, c_out)
        return x + self.res2_ffn(x, c_out, int(c_out * SUB_FFN_RATIO))


class ElasticPatchEmbed(nn.Module):
    """Four 3x3 stride-2 ConvNorms to width/8, /4, /2 and width, ReLU between (timm's ``PatchEmbedding``)."""

    def __init__(self, in_chans: int, max_width: int):
        super().__init__()
        self.in_chans = in_chans
        w = max_width
        self.convs = nn.ModuleList(ElasticConvNorm(i, o, 3, 2) for i, o in
                                   ((in_chans, w // 8), (w // 8, w // 4), (w // 4, w // 2), (w // 2, w)))

    def _dims(self, width: int) -> list[tuple[int, int]]:
        d = [self.in_chans, width // 8, width // 4, width // 2, width]
        return list(itertools.pairwise(d))

    def slices(self, prefix: str, width: int) -> Slices:
        out: Slices = {}
        for i, (conv, (ci, co)) in enumerate(zip(self.convs, self._dims(width))):
            out.update(conv.slices(f"{prefix}.conv{i + 1}", co, ci))
        return out

    def forward(self, x, width: int):
        for i, (conv, (ci, co)) in enumerate(zip(self.convs, self._dims(width))):
            x = conv(x, co, ci)
            x = F.relu(x) if i < 3 else x
        return x


class ElasticNormLinear(nn.Module):
    """timm's ``NormLinear`` classifier: BatchNorm1d + linear, elastic in its input width."""

    def __init__(self, max_dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(max_dim)
        self.linear = nn.Linear(max_dim, num_classes)

    def slices(self, prefix: str, dim: int) -> Slices:
        return {**bn_slices(f"{prefix}.bn", self.bn, slice(0, dim)),
                f"{prefix}.linear.weight": (self.linear.weight, (slice(None), slice(0, dim))),
                f"{prefix}.linear.bias": (self.linear.bias, ())}

    def forward(self, x, dim: int):
        return F.linear(bn_apply(self.bn, x, slice(0, dim)), self.linear.weight[:, :dim], self.linear.bias)
