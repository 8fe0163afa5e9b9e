"""Slimming actions of the EfficientViT family (and their reverses for the fill phase).

Every position holds one block kind, so there is no skip/MB3D action; the shrinks are the family's
own elastic dimensions, each one step down:

* ``depth``  -- drop a stage's last block (a stage keeps one);
* ``width``  -- a stage one width step narrower (a block whose heads no longer divide the width takes
  the nearest head count that does; V dims are clipped to the new chunk);
* ``heads``  -- a block one head fewer (its last head and kernel go; V may grow with the chunk later);
* ``qk`` / ``v`` / ``ffn`` -- a block's per-head Q/K dim, per-head V dim or FFN ratio one step down;
* ``kernel`` -- a block's largest query kernel one step down.

Grows are the reverses (``deepen`` repeats the stage's last block). Every action returns a config of the
space or is not offered.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..supernet.efficientvit import EfficientViTConfig, EfficientViTSpace, EViTBlockConfig, EViTStageConfig


@dataclass(frozen=True)
class EvitAction:
    kind: str
    stage: int
    pos: int
    cfg: EfficientViTConfig
    text: str

    def describe(self) -> str:
        return self.text


def _step(choices, value, d: int):
    i = choices.index(value) + d if value in choices else -1
    return choices[i] if 0 <= i < len(choices) else None


def fit_block(space: EfficientViTSpace, width: int, b: EViTBlockConfig) -> EViTBlockConfig | None:
    """``b`` made valid for ``width``: nearest allowed head count, V clipped to the chunk, kernels kept."""
    opts = dict(space.attention_options(width))
    if not opts:
        return None
    h = min(opts, key=lambda x: (abs(x - b.heads), -x))
    vs = [v for v in opts[h] if v <= b.v_dim] or [opts[h][0]]
    kernels = (b.kernels + (b.kernels[-1],) * h)[:h]
    return replace(b, heads=h, v_dim=vs[-1], kernels=kernels)


def _with_width(space, cfg, si: int, w: int) -> EfficientViTConfig | None:
    blocks = [fit_block(space, w, b) for b in cfg.stages[si].blocks]
    if any(b is None for b in blocks):
        return None
    return cfg.with_stage(si, EViTStageConfig(w, tuple(blocks)))


def _block_moves(space: EfficientViTSpace, w: int, b: EViTBlockConfig, d: int):
    """(kind, new block) one step down (d=-1) or up (d=+1) in each block dimension."""
    opts = dict(space.attention_options(w))
    heads = _step(tuple(opts), b.heads, d)
    if heads is not None:
        vs = [v for v in opts[heads] if v <= b.v_dim] or [opts[heads][0]]
        ks = (b.kernels + (space.kernels[0],) * heads)[:heads]
        yield "heads", replace(b, heads=heads, v_dim=vs[-1], kernels=ks)
    for kind, attr, choices in (("qk", "qk_dim", space.qk_dims), ("v", "v_dim", opts.get(b.heads, ())),
                                ("ffn", "ffn_ratio", space.ffn_ratios)):
        x = _step(tuple(choices), getattr(b, attr), d)
        if x is not None:
            yield kind, replace(b, **{attr: x})
    i = max(range(b.heads), key=lambda j: b.kernels[j]) if d < 0 else min(range(b.heads), key=lambda j: b.kernels[j])
    k = _step(space.kernels, b.kernels[i], d)
    if k is not None:
        yield "kernel", replace(b, kernels=b.kernels[:i] + (k,) + b.kernels[i + 1:])


def _describe(kind: str, si: int, pos: int, b: EViTBlockConfig | None, cfg) -> str:
    s, p = si + 1, pos + 1
    if kind in ("width", "widen"):
        return f"stage {s} width -> {cfg.stages[si].width}"
    if kind in ("depth", "deepen"):
        return f"stage {s} depth -> {cfg.stages[si].depth}"
    val = {"heads": b.heads, "qk": b.qk_dim, "v": b.v_dim, "ffn": f"{b.ffn_ratio:g}",
           "kernel": "/".join(map(str, b.kernels))}[kind.removesuffix("_up")]
    return f"stage {s} block {p} {kind.removesuffix('_up')} -> {val}"


def evit_moves(space: EfficientViTSpace, cfg: EfficientViTConfig, d: int) -> list[EvitAction]:
    acts = []
    for si, st in enumerate(cfg.stages):
        w = _step(space.stage_widths[si], st.width, d)
        new = _with_width(space, cfg, si, w) if w is not None else None
        if new is not None:
            acts.append(EvitAction("width" if d < 0 else "widen", si, -1, new, ""))
        if d < 0 and st.depth > 1:
            acts.append(EvitAction("depth", si, st.depth - 1, cfg.with_depth(si, st.depth - 1), ""))
        if d > 0 and st.depth < space.depths[si]:
            grown = cfg.with_stage(si, EViTStageConfig(st.width, st.blocks + (st.blocks[-1],)))
            acts.append(EvitAction("deepen", si, st.depth, grown, ""))
        for pos in reversed(range(st.depth)):  # deeper blocks first: ties go to the later block
            for kind, nb in _block_moves(space, st.width, st.blocks[pos], d):
                kind = kind if d < 0 else f"{kind}_up"
                acts.append(EvitAction(kind, si, pos, cfg.with_block(si, pos, nb), ""))
    return [replace(a, text=_describe(a.kind, a.stage, a.pos, a.cfg.block(a.stage, a.pos) if a.pos >= 0 else None,
                                      a.cfg)) for a in acts if space.contains(a.cfg)]


def all_shrinks(space: EfficientViTSpace, cfg: EfficientViTConfig, *, stem: bool = True) -> list[EvitAction]:
    return evit_moves(space, cfg, -1)


def all_grows(space: EfficientViTSpace, cfg: EfficientViTConfig, *, stem: bool = True) -> list[EvitAction]:
    return evit_moves(space, cfg, +1)


def width_jumps(space: EfficientViTSpace, cfg: EfficientViTConfig) -> list[EvitAction]:
    """Each stage at every narrower width, not only one step down (``_actions.width_jumps``)."""
    acts = []
    for si, st in enumerate(cfg.stages):
        for w in (w for w in space.stage_widths[si] if w < st.width):
            new = _with_width(space, cfg, si, w)
            if new is not None and space.contains(new):
                acts.append(EvitAction("width", si, -1, new, f"stage {si + 1} width -> {w}"))
    return acts


def importance_shrinks(space: EfficientViTSpace, cfg: EfficientViTConfig, importance) -> list[EvitAction]:
    """Without Gumbel block importance in this family, every single-step shrink is a candidate."""
    return all_shrinks(space, cfg)
