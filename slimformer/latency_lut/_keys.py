"""Canonical op keys: how an ``ArchConfig`` decomposes into measurable ops.

A network is the sequence of ops its standalone model (:class:`~slimformer.supernet.EfficientFormerNet`)
runs, in order. Every key names its kind and every dimension that changes its cost, so identical ops
share one key and one table entry:

==================================  ============================================================
``stem-r224-i3-s24-c48``            two 3x3 stride-2 Conv-BN-ReLU (input side, in, middle, out channels)
``ds-r56-c48-o96``                  3x3 stride-2 Conv-BN between stages (input side, in, out channels);
                                    ``ds.tok-...`` when the input is tokens (unflatten first)
``mb4d-r56-c48-mlp192``             one MB4D block (side, width, MLP hidden width)
``flat-t49-c448``                   feature map to tokens (tokens, width)
``mb3d.qkv-t49-c448-o1536``         MB3D part 1: LayerNorm + QKV projection (out = heads * (2 qk + v))
``mb3d.attn-t49-h8-qk32-v128``      MB3D part 2: attention core (QK^T, scale, bias, softmax, AV, merge heads)
``mb3d.proj-t49-c448-i1024``        MB3D part 3: output projection + layer scale + residual (in = heads * v)
``mb3d.mlp-t49-c448-mlp1792``       MB3D part 4: LayerNorm + MLP + layer scale + residual
``head-t49-c448-k1000-d2``          final LayerNorm, token average, ``d`` classifiers of ``k`` classes
==================================  ============================================================

MB3D blocks are keyed by parts because their choices multiply (heads x Q/K x V x MLP ratio x width):
the parts depend on at most three of them each, which keeps a table of the default space measurable
in minutes. A skip is no op.
"""
from __future__ import annotations

import re

from .._errors import SlimformerError
from ..supernet import ArchConfig, BlockConfig, SearchSpace, flatten_at, stage_resolution
from . import _evit_keys
from ._evit_keys import EVIT_FIELDS, EVIT_OP_KINDS

OP_KINDS = ("stem", "ds", "ds.tok", "mb4d", "flat", "mb3d.qkv", "mb3d.attn", "mb3d.proj", "mb3d.mlp", "head")
ALL_OP_KINDS = (*OP_KINDS, *EVIT_OP_KINDS)  # every family's
# op keys of the other model families (a config or space names its family; EfficientFormer's are here)
FAMILY_KEYS = {"efficientvit": _evit_keys}
_FIELDS = {
    "stem": ("r", "i", "s", "c"),
    "ds": ("r", "c", "o"),
    "ds.tok": ("r", "c", "o"),
    "mb4d": ("r", "c", "mlp"),
    "flat": ("t", "c"),
    "mb3d.qkv": ("t", "c", "o"),
    "mb3d.attn": ("t", "h", "qk", "v"),
    "mb3d.proj": ("t", "c", "i"),
    "mb3d.mlp": ("t", "c", "mlp"),
    "head": ("t", "c", "k", "d"),
    **EVIT_FIELDS,
}
_PART = re.compile(r"([a-z]+)(\d+)")


# --------------------------------------------------------------------------- one key per op
def stem_key(res: int, in_chans: int, stem: int, width: int) -> str:
    return f"stem-r{res}-i{in_chans}-s{stem}-c{width}"


def ds_key(res_in: int, c_in: int, c_out: int, tokens: bool = False) -> str:
    return f"{'ds.tok' if tokens else 'ds'}-r{res_in}-c{c_in}-o{c_out}"


def mb4d_key(res: int, width: int, hidden: int) -> str:
    return f"mb4d-r{res}-c{width}-mlp{hidden}"


def flat_key(tokens: int, width: int) -> str:
    return f"flat-t{tokens}-c{width}"


def mb3d_keys(tokens: int, width: int, b: BlockConfig) -> tuple[str, str, str, str]:
    """The four part keys of one MB3D block, in order."""
    h = b.heads
    return (f"mb3d.qkv-t{tokens}-c{width}-o{h * (2 * b.qk_dim + b.v_dim)}",
            f"mb3d.attn-t{tokens}-h{h}-qk{b.qk_dim}-v{b.v_dim}",
            f"mb3d.proj-t{tokens}-c{width}-i{h * b.v_dim}",
            f"mb3d.mlp-t{tokens}-c{width}-mlp{b.hidden(width)}")


def head_key(tokens: int, width: int, num_classes: int, distillation: bool) -> str:
    heads = 0 if num_classes <= 0 else (2 if distillation else 1)
    return f"head-t{tokens}-c{width}-k{num_classes}-d{heads}"


def block_keys(b: BlockConfig, *, res: int, width: int) -> tuple[str, ...]:
    """Keys of one block (no flatten): one for MB4D, four parts for MB3D, none for a skip."""
    if b.kind == "mb4d":
        return (mb4d_key(res, width, b.hidden(width)),)
    if b.kind == "mb3d":
        return mb3d_keys(res * res, width, b)
    return ()


def op_kind(key: str) -> str:
    """The kind of a key: ``"mb3d.qkv-t49-c448-o1536"`` -> ``"mb3d.qkv"``."""
    return key.split("-", 1)[0]


def parse_key(key: str) -> tuple[str, dict[str, int]]:
    """``(kind, dims)`` of a key; a malformed key is a :class:`SlimformerError`."""
    kind, _, rest = key.partition("-")
    fields = _FIELDS.get(kind)
    parts = rest.split("-") if rest else []
    dims: dict[str, int] = {}
    for p in parts:
        m = _PART.fullmatch(p)
        if not m:
            break
        dims[m.group(1)] = int(m.group(2))
    if fields is None or tuple(dims) != fields or len(parts) != len(fields):
        raise SlimformerError(f"malformed op key {key!r} (expected e.g. 'mb4d-r56-c48-mlp192'; "
                              f"kinds: {', '.join(ALL_OP_KINDS)})")
    return kind, dims


# --------------------------------------------------------------------------- whole networks
def arch_ops(cfg: ArchConfig) -> list[str]:
    """The op keys ``cfg`` runs, in network order (mirrors ``EfficientFormerNet``'s module tree)."""
    return [k for _, k in arch_ops_by_stage(cfg)]


def arch_ops_by_stage(cfg: ArchConfig) -> list[tuple[str, str]]:
    """``(part, key)`` in network order; part is ``stem``, ``stage1``..``stage4`` (a downsample belongs to
    the stage it starts) or ``head``."""
    if cfg.family in FAMILY_KEYS:
        return FAMILY_KEYS[cfg.family].arch_ops_by_stage(cfg)
    ops = [("stem", stem_key(cfg.img_size, cfg.in_chans, cfg.stem_width, cfg.stages[0].width))]
    tokens = False
    last = len(cfg.stages) - 1
    for si, st in enumerate(cfg.stages):
        res, w = cfg.resolution(si), st.width
        t = res * res
        part = f"stage{si + 1}"
        at = flatten_at(st.kinds, tokens_in=tokens, last=si == last)
        if si > 0:
            ops.append((part, ds_key(res * 2, cfg.stages[si - 1].width, w, tokens)))
        for i, b in enumerate(st.blocks):
            if i == at:
                ops.append((part, flat_key(t, w)))
            ops.extend((part, k) for k in block_keys(b, res=res, width=w))
        if at == len(st.blocks):
            ops.append((part, flat_key(t, w)))
        tokens = at is not None
    ops.append(("head", head_key(cfg.tokens(last), cfg.num_features, cfg.num_classes, cfg.distillation)))
    return ops


def space_ops(space: SearchSpace) -> list[str]:
    """Every distinct op key of every subnet of ``space``, enumerated from the choices (not sampled).

    The state carried between stages is whether the MB3D tail has started (then the next stage gets
    tokens and holds only MB3D blocks). Where a stage flattens is :func:`flatten_at`'s rule, applied to
    one stage of each content: no blocks, an MB4D, an MB3D (where the stage allows one)."""
    if space.family in FAMILY_KEYS:
        return FAMILY_KEYS[space.family].space_ops(space)
    out: dict[str, None] = {}

    def add(k: str) -> None:
        out.setdefault(k, None)

    for s in space.stem_widths:
        for w0 in space.stage_widths[0]:
            add(stem_key(space.img_size, space.in_chans, s, w0))
    states = {False}  # has the MB3D tail started before this stage?
    last = len(space.stage_widths) - 1
    for si, widths in enumerate(space.stage_widths):
        res = stage_resolution(space.img_size, si)
        t = res * res
        allow3 = si in space.mb3d_stages
        contents = [(), ("mb4d",), *([("mb3d",)] if allow3 else [])]
        nxt: set[bool] = set()
        for started in sorted(states):
            if started and not allow3:
                continue  # no valid subnet: a stage after the MB3D tail began must hold MB3D blocks
            if si > 0:
                for c_in in space.stage_widths[si - 1]:
                    for w in widths:
                        add(ds_key(res * 2, c_in, w, started))
            flats = {flatten_at(kinds, tokens_in=started, last=si == last) for kinds in contents}
            for w in widths:
                if not started:
                    for r in space.mlp_ratios:
                        add(mb4d_key(res, w, BlockConfig("mb4d", r).hidden(w)))
                if flats != {None}:
                    add(flat_key(t, w))
                if allow3:
                    for h in space.heads:
                        for qk in space.qk_dims:
                            for v in space.v_dims:
                                for r in space.mlp_ratios:
                                    for k in mb3d_keys(t, w, BlockConfig("mb3d", r, h, qk, v)):
                                        add(k)
            nxt |= {at is not None for at in flats}
        states = nxt
    for w in space.stage_widths[-1]:
        add(head_key(space.tokens(last), w, space.num_classes, space.distillation))
    return list(out)
