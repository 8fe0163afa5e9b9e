"""``build_op(key)``: the module one op key stands for, built from the package's own blocks.

Each op is the exact piece of :class:`~slimformer.supernet.EfficientFormerNet` that runs in a subnet
(timm's ``Stem4``/``Downsample``/``Flat``, the supernet's ``MB4D``, ``MB3D`` cut into its four parts),
in eval mode, with an example input of the shape it sees inside the network. The MB3D parts compose
to the whole block exactly (tested), so measuring them measures the block.

The ops are shape-static: no op reads a size off its input (``B, N, _ = x.shape``); token counts and
widths are fixed when the op is built and only the batch stays free (``-1``). A traced size of a graph
input becomes ``aten::Int`` in TorchScript, and coremltools 9.0 converts that with ``int(array)``, which
numpy >= 2.4 refuses (``only 0-dimensional arrays can be converted to Python scalars``), so a
size-reading op cannot be converted to CoreML with the numpy pip resolves today.
"""
from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.efficientformer import Downsample, Flat, Stem4
from torch import nn

from ..supernet import BlockConfig
from ..supernet._model import MB3D, MB4D
from ._keys import parse_key


class QKVPart(nn.Module):
    """MB3D part 1: ``qkv(norm1(x))``."""

    def __init__(self, block: MB3D):
        super().__init__()
        self.norm1, self.qkv = block.norm1, block.token_mixer.qkv

    def forward(self, x):
        return self.qkv(self.norm1(x))


class AttnCorePart(nn.Module):
    """MB3D part 2: heads split, ``softmax(q k^T * scale + bias) v``, heads merged (``Attention.forward``'s middle)."""

    def __init__(self, block: MB3D):
        super().__init__()
        self.attn = block.token_mixer
        self.tokens = int(self.attn.attention_bias_idxs.shape[0])  # static: no size read off the input

    def forward(self, qkv):
        a, n = self.attn, self.tokens
        qkv = qkv.reshape(-1, n, a.num_heads, 2 * a.key_dim + a.val_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split([a.key_dim, a.key_dim, a.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * a.scale
        attn = attn + a.attention_biases[:, a.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        return (attn @ v).transpose(1, 2).reshape(-1, n, a.val_attn_dim)


class StaticUnflat(nn.Module):
    """``Unflat`` with the width fixed at build time (shape-static, see the module docstring)."""

    def __init__(self, resolution: int, width: int):
        super().__init__()
        self.resolution, self.width = resolution, width

    def forward(self, x):
        return x.transpose(1, 2).reshape(-1, self.width, self.resolution, self.resolution)


class ProjPart(nn.Module):
    """MB3D part 3: ``x + ls1(proj(a))``."""

    def __init__(self, block: MB3D):
        super().__init__()
        self.proj, self.ls1, self.drop_path1 = block.token_mixer.proj, block.ls1, block.drop_path1

    def forward(self, x, a):
        return x + self.drop_path1(self.ls1(self.proj(a)))


class MlpPart(nn.Module):
    """MB3D part 4: ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, block: MB3D):
        super().__init__()
        self.norm2, self.mlp, self.ls2, self.drop_path2 = block.norm2, block.mlp, block.ls2, block.drop_path2

    def forward(self, x):
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def mb3d_parts(block: MB3D) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """The four parts of an MB3D block, sharing its parameters; ``compose_mb3d`` runs them as the block does."""
    return QKVPart(block), AttnCorePart(block), ProjPart(block), MlpPart(block)


def compose_mb3d(parts, x: torch.Tensor) -> torch.Tensor:
    qkv, core, proj, mlp = parts
    return mlp(proj(x, core(qkv(x))))


class Head(nn.Module):
    """Final LayerNorm, token average and classifier(s), as ``EfficientFormerNet.forward_head(norm(x))`` in eval."""

    def __init__(self, dim: int, num_classes: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if heads else nn.Identity()
        self.head_dist = nn.Linear(dim, num_classes) if heads == 2 else None

    def forward(self, x):
        x = self.norm(x).mean(dim=1)
        if self.head_dist is None:
            return self.head(x)
        return (self.head(x) + self.head_dist(x)) / 2


def _stem(in_chans: int, stem: int, width: int) -> nn.Module:
    m = Stem4(in_chans, width)
    if stem != width // 2:  # as EfficientFormerNet does for a free stem width
        m.conv1 = nn.Conv2d(in_chans, stem, 3, 2, 1)
        m.norm1 = nn.BatchNorm2d(stem)
        m.conv2 = nn.Conv2d(stem, width, 3, 2, 1)
    return m


def _block(t: int, c: int, h: int = 1, qk: int = 8, v: int = 8) -> MB3D:
    """A small MB3D block of the right token count; callers swap in the layers their key sizes."""
    return MB3D(c, BlockConfig("mb3d", 1.0, h, qk, v), round(t ** 0.5))


def build_op(key: str, *, batch: int = 1) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """``(module in eval mode, example inputs)`` of the op ``key`` (see :mod:`._keys` for the grammar)."""
    kind, d = parse_key(key)
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn((batch, *shape), generator=g),)

    if kind == "stem":
        m, x = _stem(d["i"], d["s"], d["c"]), rand(d["i"], d["r"], d["r"])
    elif kind in ("ds", "ds.tok"):
        r = d["r"]
        if kind == "ds":
            m, x = Downsample(d["c"], d["o"]), rand(d["c"], r, r)
        else:
            m, x = nn.Sequential(StaticUnflat(r, d["c"]), Downsample(d["c"], d["o"])), rand(r * r, d["c"])
    elif kind == "mb4d":
        m, x = MB4D(d["c"], d["mlp"]), rand(d["c"], d["r"], d["r"])
    elif kind == "flat":
        r = round(d["t"] ** 0.5)
        m, x = Flat(), rand(d["c"], r, r)
    elif kind == "mb3d.qkv":
        blk = _block(d["t"], d["c"])
        blk.token_mixer.qkv = nn.Linear(d["c"], d["o"])
        m, x = QKVPart(blk), rand(d["t"], d["c"])
    elif kind == "mb3d.attn":
        m = AttnCorePart(_block(d["t"], 8, h=d["h"], qk=d["qk"], v=d["v"]))
        x = rand(d["t"], d["h"] * (2 * d["qk"] + d["v"]))
    elif kind == "mb3d.proj":
        blk = _block(d["t"], d["c"])
        blk.token_mixer.proj = nn.Linear(d["i"], d["c"])
        m, x = ProjPart(blk), rand(d["t"], d["c"]) + rand(d["t"], d["i"])
    elif kind == "mb3d.mlp":
        blk = _block(d["t"], d["c"])
        blk.mlp = Mlp(d["c"], hidden_features=d["mlp"], act_layer=nn.GELU)  # as MB3D builds it
        m, x = MlpPart(blk), rand(d["t"], d["c"])
    else:  # head
        m, x = Head(d["c"], d["k"], d["d"]), rand(d["t"], d["c"])
    return m.eval(), x
