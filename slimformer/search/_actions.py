"""Slimming actions on an :class:`ArchConfig` (and their reverses, used to fill leftover budget).

EfficientFormer's latency-driven slimming has three actions; slimformer adds a fourth when the space
offers several MLP ratios:

* ``skip``   -- turn a block into a skip (the stage keeps at least one block);
* ``mb3d``   -- remove the first MB3D of the tail: it becomes an MB4D with the same MLP ratio, so the
  MB3D tail starts one block later (the tail stays contiguous);
* ``width``  -- shrink a stage to its next smaller width (a step of 16 channels in the shipped spaces);
* ``mlp``    -- lower a block's MLP ratio one step.

The fill phase uses the reverses (``widen``, ``unskip``, ``mlp_up``, ``mb3d_up``: the last MB4D before
the tail becomes an MB3D, ``stem_up``). ``stem`` (narrower stem) exists for the training-free search only, because alpha says nothing about it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..supernet import SKIP, ArchConfig, SearchSpace, mb3d, mb4d
from . import _evit_actions

# the actions of the other model families (a space names its family; EfficientFormer's are here)
FAMILY_ACTIONS = {"efficientvit": _evit_actions}


@dataclass(frozen=True)
class Action:
    kind: str
    stage: int
    pos: int
    cfg: ArchConfig

    def describe(self) -> str:
        s, p = self.stage + 1, self.pos + 1
        return {
            "skip": f"stage {s} block {p} -> skip",
            "mb3d": f"stage {s} block {p} mb3d -> mb4d",
            "width": f"stage {s} width -> {self.cfg.stages[self.stage].width if self.stage >= 0 else 0}",
            "mlp": f"stage {s} block {p} mlp ratio -> {self.cfg.block(self.stage, self.pos).mlp_ratio:g}",
            "stem": f"stem width -> {self.cfg.stem_width}",
            "unskip": f"stage {s} block {p} skip -> {self.cfg.block(self.stage, self.pos).kind}",
            "widen": f"stage {s} width -> {self.cfg.stages[self.stage].width if self.stage >= 0 else 0}",
            "mlp_up": f"stage {s} block {p} mlp ratio -> {self.cfg.block(self.stage, self.pos).mlp_ratio:g}",
            "stem_up": f"stem width -> {self.cfg.stem_width}",
            "mb3d_up": f"stage {s} block {p} mb4d -> mb3d",
        }[self.kind]


def _lower(choices, value):
    smaller = [c for c in choices if c < value]
    return smaller[-1] if smaller else None


def _higher(choices, value):
    bigger = [c for c in choices if c > value]
    return bigger[0] if bigger else None


def skip_action(cfg: ArchConfig, stage: int, pos: int) -> Action | None:
    b = cfg.block(stage, pos)
    if b.kind == "skip" or cfg.stages[stage].depth <= 1:
        return None
    return Action("skip", stage, pos, cfg.with_block(stage, pos, SKIP))


def mb3d_action(cfg: ArchConfig) -> Action | None:
    first = cfg.first_mb3d()
    if first is None:
        return None
    s, p = first
    return Action("mb3d", s, p, cfg.with_block(s, p, mb4d(cfg.block(s, p).mlp_ratio)))


def width_action(space: SearchSpace, cfg: ArchConfig, stage: int) -> Action | None:
    w = _lower(space.stage_widths[stage], cfg.stages[stage].width)
    return None if w is None else Action("width", stage, -1, cfg.with_width(stage, w))


def mlp_action(space: SearchSpace, cfg: ArchConfig, stage: int, pos: int) -> Action | None:
    b = cfg.block(stage, pos)
    if b.kind == "skip":
        return None
    r = _lower(space.mlp_ratios, b.mlp_ratio)
    if r is None:
        return None
    nb = mb4d(r) if b.kind == "mb4d" else mb3d(b.heads, b.qk_dim, b.v_dim, r)
    return Action("mlp", stage, pos, cfg.with_block(stage, pos, nb))


def stem_action(space: SearchSpace, cfg: ArchConfig) -> Action | None:
    w = _lower(space.stem_widths, cfg.stem_width)
    if w is None:
        return None
    return Action("stem", -1, -1, replace(cfg, stem_width=w))


def all_shrinks(space: SearchSpace, cfg: ArchConfig, *, stem: bool = True) -> list[Action]:
    """Every single-step shrink of ``cfg`` (the broad move set of the training-free search)."""
    if space.family in FAMILY_ACTIONS:
        return FAMILY_ACTIONS[space.family].all_shrinks(space, cfg, stem=stem)
    acts: list[Action | None] = [mb3d_action(cfg)]
    for si in range(4):  # deeper positions first: on ties the later block goes (trailing skips are implied)
        acts.append(width_action(space, cfg, si))
        for pos in reversed(range(len(cfg.stages[si].blocks))):
            acts += [skip_action(cfg, si, pos), mlp_action(space, cfg, si, pos)]
    if stem:
        acts.append(stem_action(space, cfg))
    return [a for a in acts if a is not None]


def width_jumps(space: SearchSpace, cfg: ArchConfig) -> list[Action]:
    """Each stage at every narrower width, not only one step down: the slimming's last resort when no
    single step lowers the predicted latency. Measured latency is not monotone in width (onnxruntime runs
    some widths faster than narrower ones: on the EfficientViT space at 2 threads a first stage of 176
    channels was predicted 0.35 ms slower than one of 192; ``benchmarks/width_monotonicity.py``), so single
    steps alone could stop above a budget the space can meet."""
    if space.family in FAMILY_ACTIONS:
        return FAMILY_ACTIONS[space.family].width_jumps(space, cfg)
    jumps = (Action("width", si, -1, cfg.with_width(si, w)) for si in range(len(cfg.stages))
             for w in space.stage_widths[si] if w < cfg.stages[si].width)
    return [a for a in jumps if space.contains(a.cfg)]


def all_grows(space: SearchSpace, cfg: ArchConfig, *, stem: bool = True) -> list[Action]:
    """Every single-step growth of ``cfg`` that stays in the space (reverses of the shrinks)."""
    if space.family in FAMILY_ACTIONS:
        return FAMILY_ACTIONS[space.family].all_grows(space, cfg, stem=stem)
    acts: list[Action] = []
    first = cfg.first_mb3d()
    for si in range(4):
        w = _higher(space.stage_widths[si], cfg.stages[si].width)
        if w is not None:
            acts.append(Action("widen", si, -1, cfg.with_width(si, w)))
        for pos in range(space.depths[si]):
            b = cfg.block(si, pos)
            if b.kind == "skip":
                after_tail = first is not None and (si, pos) > first
                if after_tail:
                    nb = space.largest_mb3d()
                    nb = mb3d(nb.heads, nb.qk_dim, nb.v_dim, space.mlp_ratios[0])
                else:
                    nb = mb4d(space.mlp_ratios[0])
                acts.append(Action("unskip", si, pos, cfg.with_block(si, pos, nb)))
                continue
            r = _higher(space.mlp_ratios, b.mlp_ratio)
            if r is not None:
                nb = mb4d(r) if b.kind == "mb4d" else mb3d(b.heads, b.qk_dim, b.v_dim, r)
                acts.append(Action("mlp_up", si, pos, cfg.with_block(si, pos, nb)))
    last4 = _last_mb4d_before_tail(space, cfg)
    if last4 is not None:
        si, pos = last4
        big = space.largest_mb3d()
        nb = mb3d(big.heads, big.qk_dim, big.v_dim, cfg.block(si, pos).mlp_ratio)
        acts.append(Action("mb3d_up", si, pos, cfg.with_block(si, pos, nb)))
    if stem:
        w = _higher(space.stem_widths, cfg.stem_width)
        if w is not None:
            acts.append(Action("stem_up", -1, -1, replace(cfg, stem_width=w)))
    return acts


def _last_mb4d_before_tail(space: SearchSpace, cfg: ArchConfig) -> tuple[int, int] | None:
    """The MB4D block that can become the new first MB3D (in an MB3D stage, right before the tail)."""
    cands = [(si, pos) for si, pos, b in cfg.iter_blocks() if b.kind == "mb4d" and si in space.mb3d_stages]
    return cands[-1] if cands else None


def importance_shrinks(space: SearchSpace, cfg: ArchConfig, importance) -> list[Action]:
    """EfficientFormer's candidate actions: the least important block -> skip, the first MB3D -> MB4D,
    the least important stage one width step narrower, and the least important block one MLP step down.

    ``importance(stage, pos)`` is the block importance; a stage's importance is the sum over its blocks.
    Ties go to the later position (deeper blocks first), then the later stage.
    """
    if space.family in FAMILY_ACTIONS:
        return FAMILY_ACTIONS[space.family].importance_shrinks(space, cfg, importance)
    blocks = [(si, pos) for si, pos, b in cfg.iter_blocks() if b.kind != "skip"]
    acts: list[Action | None] = [mb3d_action(cfg)]
    skippable = [(si, p) for si, p in blocks if cfg.stages[si].depth > 1]
    if skippable:
        si, p = min(skippable, key=lambda sp: (importance(*sp), -sp[0], -sp[1]))
        acts.append(skip_action(cfg, si, p))
    stages = [si for si in range(4) if _lower(space.stage_widths[si], cfg.stages[si].width) is not None]
    if stages:
        stage_imp = {si: sum(importance(s, p) for s, p in blocks if s == si) for si in stages}
        acts.append(width_action(space, cfg, min(stages, key=lambda si: (stage_imp[si], -si))))
    if len(space.mlp_ratios) > 1:
        lowerable = [(si, p) for si, p in blocks if _lower(space.mlp_ratios, cfg.block(si, p).mlp_ratio) is not None]
        if lowerable:
            si, p = min(lowerable, key=lambda sp: (importance(*sp), -sp[0], -sp[1]))
            acts.append(mlp_action(space, cfg, si, p))
    return [a for a in acts if a is not None]
