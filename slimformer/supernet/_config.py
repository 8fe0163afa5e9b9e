"""``ArchConfig``: one subnet of the EfficientFormer MetaBlock space, as plain immutable data.

A config lists, for each of the four stages, its width and one :class:`BlockConfig` per block
position. A position is ``mb4d`` (pool mixer + Conv-BN MLP), ``mb3d`` (LayerNorm + MHSA with
attention bias + linear MLP) or ``skip``. Trailing skips are implied, so ``L1`` is written with
3/2/6/4 blocks even inside a space with 6/6/18/8 positions. Positions matter: the supernet shares
weights by position, so a skip in the middle keeps the blocks after it on their own weights.

Structural rules checked here (space-independent): every stage holds at least one block, MB3D
blocks form one contiguous tail of the network (no MB4D after the first MB3D), dimensions are
positive and the image side is a multiple of 32. Whether a config belongs to a given space is
:meth:`SearchSpace.check`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .._errors import ConfigError
from ._layout import stage_resolution

KINDS = ("mb4d", "mb3d", "skip")
SCHEMA = "slimformer.arch/1"


@dataclass(frozen=True)
class BlockConfig:
    """One block position. ``mlp_ratio`` applies to MB4D and MB3D; heads/qk_dim/v_dim to MB3D only.

    ``qk_dim`` and ``v_dim`` are per head: the block has ``heads * qk_dim`` query (and key)
    channels and ``heads * v_dim`` value channels, as in EfficientFormer's ``Attention``.
    """

    kind: str
    mlp_ratio: float = 4.0
    heads: int = 0
    qk_dim: int = 0
    v_dim: int = 0

    def hidden(self, width: int) -> int:
        """MLP hidden width of this block in a stage of ``width`` channels (timm's ``int(dim * r)``)."""
        return int(width * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "skip":
            return {"kind": "skip"}
        d: dict[str, Any] = {"kind": self.kind, "mlp_ratio": self.mlp_ratio}
        if self.kind == "mb3d":
            d.update(heads=self.heads, qk_dim=self.qk_dim, v_dim=self.v_dim)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockConfig:
        if not isinstance(d, dict) or "kind" not in d:
            raise ConfigError(f"a block must be an object with a 'kind', got {d!r}")
        unknown = set(d) - {"kind", "mlp_ratio", "heads", "qk_dim", "v_dim"}
        if unknown:
            raise ConfigError(f"unknown block field(s): {', '.join(sorted(unknown))}")
        kind = d["kind"]
        if kind == "skip":
            return SKIP
        return cls(kind=kind, mlp_ratio=float(d.get("mlp_ratio", 4.0)), heads=int(d.get("heads", 0)),
                   qk_dim=int(d.get("qk_dim", 0)), v_dim=int(d.get("v_dim", 0)))


SKIP = BlockConfig(kind="skip", mlp_ratio=0.0)


def mb4d(mlp_ratio: float = 4.0) -> BlockConfig:
    return BlockConfig("mb4d", float(mlp_ratio))


def mb3d(heads: int = 8, qk_dim: int = 32, v_dim: int = 128, mlp_ratio: float = 4.0) -> BlockConfig:
    return BlockConfig("mb3d", float(mlp_ratio), int(heads), int(qk_dim), int(v_dim))


@dataclass(frozen=True)
class StageConfig:
    width: int
    blocks: tuple[BlockConfig, ...]

    def __post_init__(self):
        blocks = tuple(self.blocks)
        while blocks and blocks[-1].kind == "skip":  # trailing skips are implied
            blocks = blocks[:-1]
        object.__setattr__(self, "blocks", blocks)

    @property
    def depth(self) -> int:
        """Number of non-skip blocks."""
        return sum(b.kind != "skip" for b in self.blocks)

    @cached_property
    def kinds(self) -> tuple[str, ...]:
        """The blocks' kinds, skips included (what :func:`flatten_at` reads; cached: the table's hot path)."""
        return tuple(b.kind for b in self.blocks)


@dataclass(frozen=True)
class ArchConfig:
    """A complete subnet: stem, four stages, final norm and classifier (plus distillation head)."""

    stem_width: int
    stages: tuple[StageConfig, ...]
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    distillation: bool = True
    name: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        faults = self.faults()
        if faults:
            raise ConfigError(faults)

    # ----------------------------------------------------------------- derived facts
    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def num_features(self) -> int:
        """Width of the final norm and classifier input (the last stage's width)."""
        return self.stages[-1].width

    def resolution(self, stage: int) -> int:
        """Feature-map side in ``stage`` (stride 4 after the stem, then x2 per stage)."""
        return stage_resolution(self.img_size, stage)

    def tokens(self, stage: int) -> int:
        return self.resolution(stage) ** 2

    @property
    def num_mb3d(self) -> int:
        return sum(b.kind == "mb3d" for s in self.stages for b in s.blocks)

    def first_mb3d(self) -> tuple[int, int] | None:
        """(stage, position) of the first MB3D block, or ``None``."""
        for si, s in enumerate(self.stages):
            for bi, b in enumerate(s.blocks):
                if b.kind == "mb3d":
                    return si, bi
        return None

    def iter_blocks(self) -> Iterator[tuple[int, int, BlockConfig]]:
        """(stage, position, block) for every position given, skips included."""
        for si, s in enumerate(self.stages):
            for bi, b in enumerate(s.blocks):
                yield si, bi, b

    def block(self, stage: int, pos: int) -> BlockConfig:
        blocks = self.stages[stage].blocks
        return blocks[pos] if pos < len(blocks) else SKIP

    # ----------------------------------------------------------------- edits (return new configs)
    def with_block(self, stage: int, pos: int, block: BlockConfig) -> ArchConfig:
        blocks = list(self.stages[stage].blocks)
        blocks += [SKIP] * (pos + 1 - len(blocks))
        blocks[pos] = block
        return self.with_stage(stage, replace(self.stages[stage], blocks=tuple(blocks)))

    def with_stage(self, stage: int, new: StageConfig) -> ArchConfig:
        """A copy with one stage replaced; an edited config is no longer the named one, so it has no name."""
        stages = list(self.stages)
        stages[stage] = new
        return replace(self, stages=tuple(stages), name="")

    def with_width(self, stage: int, width: int) -> ArchConfig:
        return self.with_stage(stage, replace(self.stages[stage], width=int(width)))

    # ----------------------------------------------------------------- validation
    def faults(self) -> list[str]:
        """Every structural problem of this config, one readable sentence each (empty if valid)."""
        f: list[str] = []
        if len(self.stages) != 4:
            f.append(f"an EfficientFormer config has 4 stages, got {len(self.stages)}")
        if self.img_size <= 0 or self.img_size % 32:
            f.append(f"img_size must be a positive multiple of 32, got {self.img_size}")
        if self.stem_width <= 0:
            f.append(f"stem_width must be positive, got {self.stem_width}")
        if self.num_classes < 0 or self.in_chans <= 0:
            f.append("num_classes must be >= 0 and in_chans > 0")
        seen_mb3d = False
        for si, s in enumerate(self.stages):
            name = f"stage {si + 1}"
            if s.width <= 0:
                f.append(f"{name}: width must be positive, got {s.width}")
            if s.depth == 0:
                f.append(f"{name} has no block (every stage needs at least one mb4d or mb3d block)")
            for bi, b in enumerate(s.blocks):
                where = f"{name} block {bi + 1}"
                if b.kind not in KINDS:
                    f.append(f"{where}: unknown kind {b.kind!r} (choose from {', '.join(KINDS)})")
                    continue
                if b.kind == "skip":
                    continue
                if b.mlp_ratio <= 0 or int(s.width * b.mlp_ratio) < 1:
                    f.append(f"{where}: mlp_ratio must be positive, got {b.mlp_ratio}")
                if b.kind == "mb4d" and seen_mb3d:
                    f.append(f"{where}: mb4d after an mb3d block (MB3D blocks must be the contiguous tail)")
                if b.kind == "mb3d":
                    seen_mb3d = True
                    for attr in ("heads", "qk_dim", "v_dim"):
                        if getattr(b, attr) <= 0:
                            f.append(f"{where}: mb3d needs a positive {attr}, got {getattr(b, attr)}")
        return f

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA,
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "stem_width": self.stem_width,
            "stages": [{"width": s.width, "blocks": [b.to_dict() for b in s.blocks]} for s in self.stages],
            "num_classes": self.num_classes,
            "distillation": self.distillation,
        }
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchConfig:
        if not isinstance(d, dict):
            raise ConfigError("an architecture config must be a JSON object")
        if "arch" in d and "stages" not in d:  # an arch.json written by `search` wraps the config
            d = d["arch"]
        schema = d.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise ConfigError(f"unsupported architecture schema {schema!r} (expected {SCHEMA!r})")
        missing = [k for k in ("stem_width", "stages") if k not in d]
        if missing:
            raise ConfigError(f"architecture config is missing {', '.join(missing)}")
        try:
            stages = tuple(
                StageConfig(int(s["width"]), tuple(BlockConfig.from_dict(b) for b in s["blocks"]))
                for s in d["stages"]
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"malformed stage in architecture config ({e!r})") from None
        return cls(
            stem_width=int(d["stem_width"]),
            stages=stages,
            img_size=int(d.get("img_size", 224)),
            in_chans=int(d.get("in_chans", 3)),
            num_classes=int(d.get("num_classes", 1000)),
            distillation=bool(d.get("distillation", True)),
            name=str(d.get("name", "")),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"architecture config is not valid JSON: {e}") from None

    def key(self) -> str:
        """A canonical string for hashing/caching (the name is not part of it)."""
        d = self.to_dict()
        d.pop("name", None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def summary(self) -> str:
        """One line: widths, depths and the MB3D tail, e.g. ``w48-96-224-448 d3-2-6-4 mb3d1``."""
        return (f"w{'-'.join(map(str, self.widths))} d{'-'.join(map(str, self.depths))} "
                f"mb3d{self.num_mb3d} stem{self.stem_width} @{self.img_size}px")
