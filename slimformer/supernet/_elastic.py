"""Elastic building blocks of the supernet.

Each elastic module holds the largest tensors of its kind and, for an active sub-config, answers
``slices(...)``: a mapping from the standalone module's state-dict names (timm's names) to
``(supernet tensor, index)``. The forward pass computes with ``tensor[index]``; extraction copies
``tensor[index]`` into a standalone module; loading writes ``tensor[index] = value``. One source of
truth for the slicing keeps extraction honest (``extract == active`` is tested on random subnets).

Slicing rule: a narrower width keeps the first channels; an MB3D block with ``h`` heads, per-head
Q/K dim ``d`` and V dim ``e`` keeps the first ``h`` heads and, inside each head, the first ``d``
query, first ``d`` key and first ``e`` value channels (``qkv`` rows are laid out per head as
[q | k | v], timm's layout). Pruning reorders channels so that "first" means "most important".
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ._config import BlockConfig
from ._model import relative_position_index

Index = tuple  # a tuple usable as ``tensor[index]``
Slices = dict[str, tuple[torch.Tensor, Index]]


def _bn_slices(prefix: str, bn: nn.BatchNorm2d, c: int) -> Slices:
    s = slice(0, c)
    return {
        f"{prefix}.weight": (bn.weight, (s,)),
        f"{prefix}.bias": (bn.bias, (s,)),
        f"{prefix}.running_mean": (bn.running_mean, (s,)),
        f"{prefix}.running_var": (bn.running_var, (s,)),
        f"{prefix}.num_batches_tracked": (bn.num_batches_tracked, ()),
    }


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, c: int) -> torch.Tensor:
    """``bn`` on its first ``c`` channels; in training the running stats of those channels update in place."""
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training or not bn.track_running_stats, factor, bn.eps)


def get(slices: Slices, name: str) -> torch.Tensor:
    t, idx = slices[name]
    return t[idx]


class ElasticStem(nn.Module):
    def __init__(self, in_chans: int, max_stem: int, max_width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, max_stem, 3, 2, 1)
        self.norm1 = nn.BatchNorm2d(max_stem)
        self.conv2 = nn.Conv2d(max_stem, max_width, 3, 2, 1)
        self.norm2 = nn.BatchNorm2d(max_width)

    def slices(self, stem: int, width: int) -> Slices:
        s, w = slice(0, stem), slice(0, width)
        return {
            "conv1.weight": (self.conv1.weight, (s,)), "conv1.bias": (self.conv1.bias, (s,)),
            **_bn_slices("norm1", self.norm1, stem),
            "conv2.weight": (self.conv2.weight, (w, s)), "conv2.bias": (self.conv2.bias, (w,)),
            **_bn_slices("norm2", self.norm2, width),
        }

    def forward(self, x, stem: int, width: int):
        sl = self.slices(stem, width)
        x = F.conv2d(x, get(sl, "conv1.weight"), get(sl, "conv1.bias"), 2, 1)
        x = F.relu(batch_norm(self.norm1, x, stem))
        x = F.conv2d(x, get(sl, "conv2.weight"), get(sl, "conv2.bias"), 2, 1)
        return F.relu(batch_norm(self.norm2, x, width))


class ElasticDownsample(nn.Module):
    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        self.conv = nn.Conv2d(max_in, max_out, 3, 2, 1)
        self.norm = nn.BatchNorm2d(max_out)

    def slices(self, c_in: int, c_out: int) -> Slices:
        i, o = slice(0, c_in), slice(0, c_out)
        return {"conv.weight": (self.conv.weight, (o, i)), "conv.bias": (self.conv.bias, (o,)),
                **_bn_slices("norm", self.norm, c_out)}

    def forward(self, x, c_in: int, c_out: int):
        sl = self.slices(c_in, c_out)
        x = F.conv2d(x, get(sl, "conv.weight"), get(sl, "conv.bias"), 2, 1)
        return batch_norm(self.norm, x, c_out)


class ElasticMB4D(nn.Module):
    """Pool mixer + Conv1x1-BN-GELU-Conv1x1-BN MLP, elastic in width and hidden width."""

    def __init__(self, max_dim: int, max_hidden: int, ls_init: float = 1e-5):
        super().__init__()
        self.ls1 = nn.Parameter(torch.full((max_dim,), ls_init))
        self.fc1 = nn.Conv2d(max_dim, max_hidden, 1)
        self.norm1 = nn.BatchNorm2d(max_hidden)
        self.fc2 = nn.Conv2d(max_hidden, max_dim, 1)
        self.norm2 = nn.BatchNorm2d(max_dim)
        self.ls2 = nn.Parameter(torch.full((max_dim,), ls_init))

    def slices(self, dim: int, hidden: int) -> Slices:
        c, h = slice(0, dim), slice(0, hidden)
        return {
            "ls1.gamma": (self.ls1, (c,)),
            "mlp.fc1.weight": (self.fc1.weight, (h, c)), "mlp.fc1.bias": (self.fc1.bias, (h,)),
            **_bn_slices("mlp.norm1", self.norm1, hidden),
            "mlp.fc2.weight": (self.fc2.weight, (c, h)), "mlp.fc2.bias": (self.fc2.bias, (c,)),
            **_bn_slices("mlp.norm2", self.norm2, dim),
            "ls2.gamma": (self.ls2, (c,)),
        }

    def forward(self, x, dim: int, hidden: int):
        sl = self.slices(dim, hidden)
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        x = x + get(sl, "ls1.gamma").view(1, -1, 1, 1) * (pooled - x)
        y = F.conv2d(x, get(sl, "mlp.fc1.weight"), get(sl, "mlp.fc1.bias"))
        y = F.gelu(batch_norm(self.norm1, y, hidden))
        y = F.conv2d(y, get(sl, "mlp.fc2.weight"), get(sl, "mlp.fc2.bias"))
        y = batch_norm(self.norm2, y, dim)
        return x + get(sl, "ls2.gamma").view(1, -1, 1, 1) * y


@lru_cache(maxsize=4096)
def _qkv_rows(heads: int, qk: int, v: int, max_qk: int, max_v: int) -> torch.Tensor:
    per_head = 2 * max_qk + max_v
    rows = []
    for i in range(heads):
        base = i * per_head
        rows += [range(base, base + qk), range(base + max_qk, base + max_qk + qk),
                 range(base + 2 * max_qk, base + 2 * max_qk + v)]
    return torch.tensor([r for rng in rows for r in rng], dtype=torch.long)


@lru_cache(maxsize=4096)
def _v_cols(heads: int, v: int, max_v: int) -> torch.Tensor:
    return torch.tensor([i * max_v + j for i in range(heads) for j in range(v)], dtype=torch.long)


@lru_cache(maxsize=4096)
def _index_on(device: torch.device, kind: str, *args: int) -> torch.Tensor:
    """The Q/K/V row or V column index on ``device``, made once per choice and device: without it every
    forward of an MB3D block on a GPU copied two index tensors host -> device."""
    return (_qkv_rows if kind == "rows" else _v_cols)(*args).to(device)


class ElasticMB3D(nn.Module):
    """LN + MHSA with attention bias + LN + linear MLP, elastic in width, heads, Q/K dim, V dim, hidden."""

    def __init__(self, max_dim: int, max_heads: int, max_qk: int, max_v: int, max_hidden: int,
                 resolution: int, ls_init: float = 1e-5):
        super().__init__()
        self.max_heads, self.max_qk, self.max_v = max_heads, max_qk, max_v
        self.norm1 = nn.LayerNorm(max_dim)
        self.qkv = nn.Linear(max_dim, max_heads * (2 * max_qk + max_v))
        self.proj = nn.Linear(max_heads * max_v, max_dim)
        self.attention_biases = nn.Parameter(torch.zeros(max_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", relative_position_index(resolution))
        self.ls1 = nn.Parameter(torch.full((max_dim,), ls_init))
        self.norm2 = nn.LayerNorm(max_dim)
        self.fc1 = nn.Linear(max_dim, max_hidden)
        self.fc2 = nn.Linear(max_hidden, max_dim)
        self.ls2 = nn.Parameter(torch.full((max_dim,), ls_init))

    def slices(self, dim: int, b: BlockConfig) -> Slices:
        c, m = slice(0, dim), slice(0, b.hidden(dim))
        dev = self.qkv.weight.device
        rows = _index_on(dev, "rows", b.heads, b.qk_dim, b.v_dim, self.max_qk, self.max_v)
        cols = _index_on(dev, "cols", b.heads, b.v_dim, self.max_v)
        return {
            "norm1.weight": (self.norm1.weight, (c,)), "norm1.bias": (self.norm1.bias, (c,)),
            "token_mixer.qkv.weight": (self.qkv.weight, (rows, c)),
            "token_mixer.qkv.bias": (self.qkv.bias, (rows,)),
            "token_mixer.proj.weight": (self.proj.weight, (c, cols)),
            "token_mixer.proj.bias": (self.proj.bias, (c,)),
            "token_mixer.attention_biases": (self.attention_biases, (slice(0, b.heads),)),
            "token_mixer.attention_bias_idxs": (self.attention_bias_idxs, ()),
            "ls1.gamma": (self.ls1, (c,)),
            "norm2.weight": (self.norm2.weight, (c,)), "norm2.bias": (self.norm2.bias, (c,)),
            "mlp.fc1.weight": (self.fc1.weight, (m, c)), "mlp.fc1.bias": (self.fc1.bias, (m,)),
            "mlp.fc2.weight": (self.fc2.weight, (c, m)), "mlp.fc2.bias": (self.fc2.bias, (c,)),
            "ls2.gamma": (self.ls2, (c,)),
        }

    def forward(self, x, dim: int, b: BlockConfig):  # x: (B, N, C) tokens
        sl = self.slices(dim, b)
        B, N, _ = x.shape
        y = F.layer_norm(x, (dim,), get(sl, "norm1.weight"), get(sl, "norm1.bias"), self.norm1.eps)
        qkv = F.linear(y, get(sl, "token_mixer.qkv.weight"), get(sl, "token_mixer.qkv.bias"))
        q, k, v = qkv.reshape(B, N, b.heads, -1).permute(0, 2, 1, 3).split([b.qk_dim, b.qk_dim, b.v_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * (b.qk_dim ** -0.5)
        attn = attn + get(sl, "token_mixer.attention_biases")[:, self.attention_bias_idxs]
        y = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, b.heads * b.v_dim)
        y = F.linear(y, get(sl, "token_mixer.proj.weight"), get(sl, "token_mixer.proj.bias"))
        x = x + get(sl, "ls1.gamma") * y
        y = F.layer_norm(x, (dim,), get(sl, "norm2.weight"), get(sl, "norm2.bias"), self.norm2.eps)
        y = F.linear(F.gelu(F.linear(y, get(sl, "mlp.fc1.weight"), get(sl, "mlp.fc1.bias"))),
                     get(sl, "mlp.fc2.weight"), get(sl, "mlp.fc2.bias"))
        return x + get(sl, "ls2.gamma") * y


class ElasticHead(nn.Module):
    """Final LayerNorm, token average and the classifier (plus distillation classifier)."""

    def __init__(self, max_dim: int, num_classes: int, distillation: bool):
        super().__init__()
        self.norm = nn.LayerNorm(max_dim)
        self.head = nn.Linear(max_dim, num_classes)
        self.head_dist = nn.Linear(max_dim, num_classes) if distillation else None

    def slices(self, dim: int) -> Slices:
        c = slice(0, dim)
        out = {"norm.weight": (self.norm.weight, (c,)), "norm.bias": (self.norm.bias, (c,)),
               "head.weight": (self.head.weight, (slice(None), c)), "head.bias": (self.head.bias, ())}
        if self.head_dist is not None:
            out.update({"head_dist.weight": (self.head_dist.weight, (slice(None), c)),
                        "head_dist.bias": (self.head_dist.bias, ())})
        return out


def read_slices(slices: Slices) -> dict[str, torch.Tensor]:
    """Copies of the active tensors, named as in the standalone module."""
    return {k: t[idx].detach().clone() for k, (t, idx) in slices.items()}


@torch.no_grad()
def write_slices(slices: Slices, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Write a standalone module's tensors into the supernet's slices (the inverse of ``read_slices``)."""
    for k, (t, idx) in slices.items():
        v = state[prefix + k]
        if idx == ():
            t.copy_(v)
        else:
            t[idx] = v.to(t.dtype)
