"""Op keys of the EfficientViT family: how an ``EfficientViTConfig`` decomposes into measurable ops.

==========================================  ========================================================
``evit.stem-r224-i3-c64``                   patch embedding: four 3x3/2 ConvNorms (image side, in, width)
``evit.sub-r14-c64-o128``                   subsample block between stages (input side, in, out width)
``evit.dwffn-r14-c64-f128``                 residual depthwise 3x3 ConvNorm + residual FFN (hidden f);
                                            a block runs two (dw0 + ffn0, dw1 + ffn1)
``evit.mix-r14-w7-c64-h4-v16``              the mixer's frame: window partition, split into ``h``
                                            chunks, the ``h - 1`` cascade adds, concat of the ``h`` head
                                            outputs (``v`` each), ReLU + projection ConvNorm, window
                                            reverse, residual
``evit.head-r14-w7-i16-qk16-v16-k5``        one cascaded attention head on its ``i``-channel input:
                                            qkv ConvNorm, query depthwise ``k`` x ``k``, attention + bias
``evit.cls-r4-c192-k1000-d1``               global average pool + ``d`` BatchNorm-linear classifiers
==========================================  ========================================================

A block is ``dwffn, mix, head x heads, dwffn``: the heads of cascaded group attention run one after
another, so their costs add, and each depends only on its own chunk, Q/K and V dims and kernel.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from ..supernet.efficientvit import EfficientViTConfig, EfficientViTSpace, EViTBlockConfig, stage_resolutions
from ..supernet.efficientvit._config import SUB_FFN_RATIO  # noqa: F401  (documented: subsample FFNs are fixed)

EVIT_FIELDS = {
    "evit.stem": ("r", "i", "c"),
    "evit.sub": ("r", "c", "o"),
    "evit.dwffn": ("r", "c", "f"),
    "evit.mix": ("r", "w", "c", "h", "v"),
    "evit.head": ("r", "w", "i", "qk", "v", "k"),
    "evit.cls": ("r", "c", "k", "d"),
}
EVIT_OP_KINDS = tuple(EVIT_FIELDS)


def stem_key(img: int, in_chans: int, width: int) -> str:
    return f"evit.stem-r{img}-i{in_chans}-c{width}"


def sub_key(res_in: int, c_in: int, c_out: int) -> str:
    return f"evit.sub-r{res_in}-c{c_in}-o{c_out}"


def dwffn_key(res: int, width: int, hidden: int) -> str:
    return f"evit.dwffn-r{res}-c{width}-f{hidden}"


def mix_key(res: int, ws: int, width: int, heads: int, v: int) -> str:
    return f"evit.mix-r{res}-w{ws}-c{width}-h{heads}-v{v}"


def head_key(res: int, ws: int, chunk: int, qk: int, v: int, k: int) -> str:
    return f"evit.head-r{res}-w{ws}-i{chunk}-qk{qk}-v{v}-k{k}"


def cls_key(res: int, width: int, num_classes: int, distillation: bool) -> str:
    d = 0 if num_classes <= 0 else (2 if distillation else 1)
    return f"evit.cls-r{res}-c{width}-k{num_classes}-d{d}"


def block_keys(b: EViTBlockConfig, *, res: int, ws: int, width: int) -> tuple[str, ...]:
    ffn = dwffn_key(res, width, b.hidden(width))
    heads = tuple(head_key(res, ws, width // b.heads, b.qk_dim, b.v_dim, k) for k in b.kernels)
    return (ffn, mix_key(res, ws, width, b.heads, b.v_dim), *heads, ffn)


def arch_ops_by_stage(cfg: EfficientViTConfig) -> list[tuple[str, str]]:
    """``(part, key)`` in network order (mirrors ``EfficientViTNet``'s module tree)."""
    ops = [("stem", stem_key(cfg.img_size, cfg.in_chans, cfg.stages[0].width))]
    for si, st in enumerate(cfg.stages):
        part = f"stage{si + 1}"
        res, ws = cfg.resolution(si), cfg.window_size(si)
        if si > 0:
            ops.append((part, sub_key(cfg.resolution(si - 1), cfg.stages[si - 1].width, st.width)))
        for b in st.blocks:
            ops.extend((part, k) for k in block_keys(b, res=res, ws=ws, width=st.width))
    last = len(cfg.stages) - 1
    ops.append(("head", cls_key(cfg.resolution(last), cfg.num_features, cfg.num_classes, cfg.distillation)))
    return ops


def arch_groups(cfg: EfficientViTConfig):
    """``(cache key, keys thunk)`` per cached unit of a prediction: stem, subsamples, blocks, classifier."""
    res = stage_resolutions(cfg.img_size, len(cfg.stages))
    yield ("stem", cfg.img_size, cfg.in_chans, cfg.stages[0].width), \
        lambda: (stem_key(cfg.img_size, cfg.in_chans, cfg.stages[0].width),)
    for si, st in enumerate(cfg.stages):
        w, ws = st.width, min(cfg.window, res[si])
        if si > 0:
            c_in = cfg.stages[si - 1].width
            yield ("sub", res[si - 1], c_in, w), lambda r=res[si - 1], c=c_in, o=w: (sub_key(r, c, o),)
        for b in st.blocks:
            yield (si, res[si], ws, w, b), lambda b=b, r=res[si], ws=ws, w=w: block_keys(b, res=r, ws=ws, width=w)
    yield ("cls", res[-1], cfg.num_features, cfg.num_classes, cfg.distillation), \
        lambda: (cls_key(res[-1], cfg.num_features, cfg.num_classes, cfg.distillation),)


def space_ops(space: EfficientViTSpace) -> list[str]:
    """Every distinct op key of every subnet of ``space``, enumerated from the choices."""
    out: dict[str, None] = {}
    res = stage_resolutions(space.img_size, 3)
    for w0 in space.stage_widths[0]:
        out.setdefault(stem_key(space.img_size, space.in_chans, w0))
    for si, widths in enumerate(space.stage_widths):
        r, ws = res[si], min(space.window, res[si])
        if si > 0:
            for c_in in space.stage_widths[si - 1]:
                for w in widths:
                    out.setdefault(sub_key(res[si - 1], c_in, w))
        for w in widths:
            for f in sorted({int(w * x) for x in space.ffn_ratios}):
                out.setdefault(dwffn_key(r, w, f))
            for h, vs in space.attention_options(w):
                for v in vs:
                    out.setdefault(mix_key(r, ws, w, h, v))
                    for qk in space.qk_dims:
                        for k in space.kernels:
                            out.setdefault(head_key(r, ws, w // h, qk, v, k))
    for w in space.stage_widths[-1]:
        out.setdefault(cls_key(res[-1], w, space.num_classes, space.distillation))
    return list(out)


_NODE = re.compile(r"^/stages/stages\.(\d+)/(downsample|blocks/blocks\.(\d+))(/|$)(.*)")
_HEAD = re.compile(r"^mixer/m/attn/(?:qkvs|dws)\.(\d+)/")


def node_key(cfg: EfficientViTConfig) -> Callable[[str], str | None]:
    """A function: onnx node name (the exporter's module path in ``EfficientViTNet``) -> op key, or ``None``
    for a node that belongs to the op running before it (made-up nodes, and the attention's own matmuls,
    softmax and bias add, which run between one head's ``qkvs.i``/``dws.i`` and the next)."""
    ops = arch_ops_by_stage(cfg)
    stem, cls = ops[0][1], ops[-1][1]
    subs, blocks = {}, {}
    for si, st in enumerate(cfg.stages):
        res, ws = cfg.resolution(si), cfg.window_size(si)
        if si > 0:
            subs[si] = sub_key(cfg.resolution(si - 1), cfg.stages[si - 1].width, st.width)
        for j, b in enumerate(st.blocks):
            blocks[si, j] = block_keys(b, res=res, ws=ws, width=st.width)

    def key(name: str) -> str | None:
        if name.startswith("/patch_embed/"):
            return stem
        m = _NODE.match(name)
        if m is None:
            return cls if name.startswith("/") else None
        si = int(m.group(1))
        if m.group(3) is None:
            return subs.get(si)
        keys = blocks.get((si, int(m.group(3))))
        return None if keys is None else _block_part(keys, m.group(5))
    return key


def _block_part(keys: tuple[str, ...], rest: str) -> str | None:
    """Which of a block's keys ``(dwffn, mix, head x h, dwffn)`` the node at ``rest`` (below the block) runs."""
    if rest.startswith(("dw0/", "ffn0/")):
        return keys[0]
    if rest.startswith(("dw1/", "ffn1/")):
        return keys[-1]
    h = _HEAD.match(rest)
    if h is not None:
        return keys[2 + int(h.group(1))]
    if rest.startswith("mixer/m/attn/") and not rest.startswith("mixer/m/attn/proj/"):
        return None  # the running head's attention (or, before the first head, the mixer's split)
    return keys[1]  # the mixer's frame: window partition and reverse, projection, residual
