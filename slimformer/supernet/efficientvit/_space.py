"""``EfficientViTSpace``: the choices an EfficientViT supernet offers.

Per stage a set of widths and a number of block positions (depth is elastic by prefix); per block the
number of heads (dividing the width), per-head Q/K dim, per-head V dim (at most the head's input chunk),
FFN ratio and one query kernel per head. The supernet holds the largest of each; a subnet uses the first
channels of every tensor and the centre of every kernel.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..._errors import ConfigError
from ._config import FAMILY, EfficientViTConfig, EViTBlockConfig, EViTStageConfig

SPACE_SCHEMA = "slimformer.efficientvit.space/1"
_TUPLES = ("depths", "heads", "qk_dims", "v_dims", "ffn_ratios", "kernels")


@dataclass(frozen=True)
class EfficientViTSpace:
    stage_widths: tuple[tuple[int, ...], ...]
    depths: tuple[int, ...]
    heads: tuple[int, ...] = (2, 3, 4)
    qk_dims: tuple[int, ...] = (8, 16, 24, 32)
    v_dims: tuple[int, ...] = (16, 32, 48, 64)
    ffn_ratios: tuple[float, ...] = (1.0, 2.0)
    kernels: tuple[int, ...] = (3, 5, 7)
    img_size: int = 224
    window: int = 7
    in_chans: int = 3
    num_classes: int = 1000
    distillation: bool = False
    width_step: int = 8
    name: str = field(default="efficientvit", compare=False)

    family = FAMILY

    def __post_init__(self):
        object.__setattr__(self, "stage_widths", tuple(tuple(sorted(int(w) for w in ws)) for ws in self.stage_widths))
        for k in _TUPLES:
            conv = float if k == "ffn_ratios" else int
            object.__setattr__(self, k, tuple(conv(x) for x in getattr(self, k)) if k == "depths"
                               else tuple(sorted(conv(x) for x in getattr(self, k))))
        f = []
        if len(self.stage_widths) != 3 or len(self.depths) != 3:
            f.append("an EfficientViT space has 3 stages: give 3 width choice lists and 3 depths")
        if any(not ws for ws in self.stage_widths) or any(d < 1 for d in self.depths):
            f.append("every stage needs at least one width choice and one block position")
        if any(w % self.width_step for ws in self.stage_widths for w in ws):
            f.append(f"stage widths must be multiples of the width step {self.width_step}")
        if not all(getattr(self, k) for k in _TUPLES):
            f.append("heads, qk_dims, v_dims, ffn_ratios and kernels need at least one choice each")
        elif any(k % 2 == 0 for k in self.kernels):
            f.append("kernels must be odd")
        if self.img_size % 16:
            f.append(f"img_size must be a multiple of 16, got {self.img_size}")
        if not f:
            f += [f"stage {si + 1}: width {w} has no head choice that divides it and no V dim fitting its chunk"
                  for si, ws in enumerate(self.stage_widths) for w in ws if not self.attention_options(w)]
        if f:
            raise ConfigError(f)

    # ----------------------------------------------------------------- maxima (the supernet's shapes)
    @property
    def max_widths(self) -> tuple[int, ...]:
        return tuple(ws[-1] for ws in self.stage_widths)

    def max_chunk(self, stage: int) -> int:
        return max(w // h for w in self.stage_widths[stage] for h, _ in self.attention_options(w))

    def max_v(self, stage: int) -> int:
        return max(v for w in self.stage_widths[stage] for _, vs in self.attention_options(w) for v in vs)

    def max_hidden(self, stage: int) -> int:
        return int(self.max_widths[stage] * self.ffn_ratios[-1])

    def attention_options(self, width: int) -> list[tuple[int, tuple[int, ...]]]:
        """(heads, V dims allowed with them) for a stage of ``width`` channels."""
        out = []
        for h in self.heads:
            vs = tuple(v for v in self.v_dims if v <= width // h)
            if width % h == 0 and vs:
                out.append((h, vs))
        return out

    def _arch(self, stages, name: str = "") -> EfficientViTConfig:
        return EfficientViTConfig(stages=tuple(stages), img_size=self.img_size, in_chans=self.in_chans,
                                  num_classes=self.num_classes, window=self.window,
                                  distillation=self.distillation, name=name)

    # ----------------------------------------------------------------- membership
    def check(self, cfg) -> list[str]:
        if getattr(cfg, "family", None) != FAMILY:
            return [f"a {getattr(cfg, 'family', type(cfg).__name__)} config is not in an EfficientViT space"]
        f = [f"{a} is {getattr(cfg, a)} but the space has {getattr(self, a)}"
             for a in ("img_size", "in_chans", "num_classes", "window", "distillation")
             if getattr(cfg, a) != getattr(self, a)]
        for si, s in enumerate(cfg.stages):
            name = f"stage {si + 1}"
            if s.width not in self.stage_widths[si]:
                f.append(f"{name}: width {s.width} is not offered (choices: {_fmt(self.stage_widths[si])})")
            if s.depth > self.depths[si]:
                f.append(f"{name}: {s.depth} blocks but the space has {self.depths[si]} positions")
            for bi, b in enumerate(s.blocks):
                where = f"{name} block {bi + 1}"
                for attr, choices in (("heads", self.heads), ("qk_dim", self.qk_dims), ("v_dim", self.v_dims),
                                      ("ffn_ratio", self.ffn_ratios)):
                    if getattr(b, attr) not in choices:
                        f.append(f"{where}: {attr} {getattr(b, attr):g} is not offered (choices: {_fmt(choices)})")
                if any(k not in self.kernels for k in b.kernels):
                    f.append(f"{where}: kernels {list(b.kernels)} are not all offered (choices: {_fmt(self.kernels)})")
        return f

    def contains(self, cfg) -> bool:
        return not self.check(cfg)

    def validate(self, cfg) -> EfficientViTConfig:
        faults = self.check(cfg)
        if faults:
            raise ConfigError([f"not in space {self.name!r}: {x}" for x in faults])
        return cfg

    # ----------------------------------------------------------------- canonical subnets
    def largest_block(self, width: int) -> EViTBlockConfig:
        """Most heads that fit ``width``, the largest Q/K dim, V dim, FFN ratio and kernels."""
        h, vs = self.attention_options(width)[-1]
        return EViTBlockConfig(h, self.qk_dims[-1], vs[-1], self.ffn_ratios[-1], (self.kernels[-1],) * h)

    def largest(self) -> EfficientViTConfig:
        return self._arch([EViTStageConfig(w, (self.largest_block(w),) * d)
                           for w, d in zip(self.max_widths, self.depths)], "largest")

    def smallest(self) -> EfficientViTConfig:
        stages = []
        for ws in self.stage_widths:
            h, vs = self.attention_options(ws[0])[0]
            blk = EViTBlockConfig(h, self.qk_dims[0], vs[0], self.ffn_ratios[0], (self.kernels[0],) * h)
            stages.append(EViTStageConfig(ws[0], (blk,)))
        return self._arch(stages, "smallest")

    def sample_block(self, width: int, rng: random.Random) -> EViTBlockConfig:
        h, vs = rng.choice(self.attention_options(width))
        return EViTBlockConfig(h, rng.choice(self.qk_dims), rng.choice(vs), rng.choice(self.ffn_ratios),
                               tuple(rng.choice(self.kernels) for _ in range(h)))

    def sample(self, seed: int | random.Random | None = None) -> EfficientViTConfig:
        """A random subnet: width, depth ~ U{1..positions} and every block choice uniform. Seeded."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        stages = []
        for si, ws in enumerate(self.stage_widths):
            w = rng.choice(ws)
            stages.append(EViTStageConfig(w, tuple(self.sample_block(w, rng)
                                                   for _ in range(rng.randint(1, self.depths[si])))))
        return self._arch(stages)

    def num_subnets(self) -> int:
        """Exact number of distinct subnets."""
        total = 1
        for si, ws in enumerate(self.stage_widths):
            per_stage = 0
            for w in ws:
                n = sum(len(self.qk_dims) * len(vs) * len(self.ffn_ratios) * len(self.kernels) ** h
                        for h, vs in self.attention_options(w))
                per_stage += sum(n ** d for d in range(1, self.depths[si] + 1))
            total *= per_stage
        return total

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        d = {"schema": SPACE_SCHEMA, "family": FAMILY, "name": self.name,
             "stage_widths": [list(ws) for ws in self.stage_widths]}
        d.update({k: list(getattr(self, k)) for k in _TUPLES})
        d.update({k: getattr(self, k) for k in ("img_size", "window", "in_chans", "num_classes", "distillation",
                                                "width_step")})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EfficientViTSpace:
        if not isinstance(d, dict) or d.get("schema") != SPACE_SCHEMA:
            raise ConfigError(f"not an EfficientViT search space (schema {SPACE_SCHEMA!r} expected)")
        known = set(cls.__dataclass_fields__) | {"schema", "family"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown search space field(s): {', '.join(sorted(unknown))}")
        kw = {k: v for k, v in d.items() if k not in ("schema", "family")}
        if "stage_widths" in kw:
            kw["stage_widths"] = tuple(tuple(x) for x in kw["stage_widths"])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ConfigError(f"malformed search space: {e}") from None

    @cached_property
    def hash(self) -> str:
        d = self.to_dict()
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _fmt(xs) -> str:
    xs = [f"{x:g}" if isinstance(x, float) else str(x) for x in xs]
    return ", ".join(xs) if len(xs) <= 8 else f"{', '.join(xs[:3])}, ..., {', '.join(xs[-2:])}"
