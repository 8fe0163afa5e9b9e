"""``ArchConfig``: one subnet of the EfficientFormer MetaBlock space, as plain immutable data.

A config lists, for each of the four stages, its width and one :class:`BlockConfig` per block
position. A position is ``mb4d`` (pool mixer + Conv-BN MLP), ``mb3d`` (LayerNorm + MHSA with
attention bias + linear MLP) or ``skip``. Trailing skips are implied, so ``L1`` is written with
3/2/6/4 blocks even inside a space with 6/6/18/8 positions. Positions matter: the supernet shares
weights by position, so a skip in the middle keeps the blocks after it on their own weights.

Structural rules checked here (space-independent): every stage holds at least one block, MB3D
blocks form one contiguous tail of the network (no MB4D after the first MB3D), dimensions are
positive, finite and under the stated caps (``slimformer._validate.CAPS``), and the image side is a
multiple of 32. Whether a config belongs to a given space is
:meth:`SearchSpace.check`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import ConfigError, SlimformerError
from .._validate import CAPS, check_float, check_int
from ._base import StagedConfig
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
    def from_dict(cls, d: dict[str, Any], where: str = "block") -> BlockConfig:
        if not isinstance(d, dict) or "kind" not in d:
            raise ConfigError(f"{where} must be an object with a 'kind', got {d!r}")
        unknown = set(d) - {"kind", "mlp_ratio", "heads", "qk_dim", "v_dim"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s): {', '.join(sorted(unknown))}")
        kind = d["kind"]
        if kind == "skip":
            return SKIP
        if not isinstance(kind, str):
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return cls(kind=kind, mlp_ratio=_read(check_float, d, "mlp_ratio", where, 4.0),
                   heads=_read(check_int, d, "heads", where, 0), qk_dim=_read(check_int, d, "qk_dim", where, 0),
                   v_dim=_read(check_int, d, "v_dim", where, 0))


def _read(check, d: dict[str, Any], key: str, where: str, default: Any = None):
    """``d[key]`` (or ``default``) through a :mod:`slimformer._validate` check: type and finiteness here,
    ranges in :meth:`ArchConfig.faults` (which lists every problem at once)."""
    try:
        return check(d.get(key, default), f"{where}: {key}" if where else key)
    except SlimformerError as e:
        raise ConfigError(str(e)) from None


SKIP = BlockConfig(kind="skip", mlp_ratio=0.0)


def _sized(v: Any, lo: int, hi: int | None = None) -> bool:
    """``v`` is an int (not a bool) in ``[lo, hi]``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


def _block_faults(where: str, b: BlockConfig, width: int | None, after_mb3d: bool) -> list[str]:
    """The problems of one block; ``width`` is its stage's (``None`` when that is itself faulty)."""
    if b.kind not in KINDS:
        return [f"{where}: unknown kind {b.kind!r} (choose from {', '.join(KINDS)})"]
    if b.kind == "skip":
        return []
    f = []
    r = b.mlp_ratio
    if (not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r) or not 0 < r <= CAPS["mlp_ratio"]
            or (width is not None and int(width * r) < 1)):
        f.append(f"{where}: mlp_ratio must be a positive number up to {CAPS['mlp_ratio']:g}"
                 + (" giving at least one hidden channel" if width is not None else "") + f", got {r!r}")
    if b.kind == "mb4d" and after_mb3d:
        f.append(f"{where}: mb4d after an mb3d block (MB3D blocks must be the contiguous tail)")
    if b.kind == "mb3d":
        for attr in ("heads", "qk_dim", "v_dim"):
            if not _sized(getattr(b, attr), 1, CAPS[attr]):
                f.append(f"{where}: mb3d needs a positive {attr} up to {CAPS[attr]}, got {getattr(b, attr)!r}")
    return f


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
        # The blocks' kinds, skips included: what flatten_at reads on the table's hot path. A plain attribute
        # set once here, not a cached_property (whose per-instance lock on Python 3.11 cost more than the sum).
        object.__setattr__(self, "kinds", tuple(b.kind for b in blocks))

    @property
    def depth(self) -> int:
        """Number of non-skip blocks."""
        return sum(b.kind != "skip" for b in self.blocks)


@dataclass(frozen=True)
class ArchConfig(StagedConfig):
    """A complete subnet: stem, four stages, final norm and classifier (plus distillation head)."""

    stem_width: int
    stages: tuple[StageConfig, ...]
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    distillation: bool = True
    name: str = field(default="", compare=False)

    family = "efficientformer"

    def resolution(self, stage: int) -> int:
        """Feature-map side in ``stage`` (stride 4 after the stem, then x2 per stage)."""
        return stage_resolution(self.img_size, stage)

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

    def block(self, stage: int, pos: int) -> BlockConfig:
        blocks = self.stages[stage].blocks
        return blocks[pos] if pos < len(blocks) else SKIP

    # ----------------------------------------------------------------- edits (return new configs)
    def with_block(self, stage: int, pos: int, block: BlockConfig) -> ArchConfig:
        blocks = list(self.stages[stage].blocks)
        blocks += [SKIP] * (pos + 1 - len(blocks))
        blocks[pos] = block
        return self.with_stage(stage, replace(self.stages[stage], blocks=tuple(blocks)))

    # ----------------------------------------------------------------- validation
    def faults(self) -> list[str]:
        """Every structural problem of this config, one readable sentence each (empty if valid)."""
        f: list[str] = []
        if len(self.stages) != 4:
            f.append(f"an EfficientFormer config has 4 stages, got {len(self.stages)}")
        if not _sized(self.img_size, 32, CAPS["img_size"]) or self.img_size % 32:
            f.append(f"img_size must be a positive multiple of 32 up to {CAPS['img_size']}, got {self.img_size}")
        for attr, lo in (("stem_width", 1), ("in_chans", 1), ("num_classes", 0)):
            if not _sized(getattr(self, attr), lo, CAPS[attr]):
                f.append(f"{attr} must be between {lo} and {CAPS[attr]}, got {getattr(self, attr)!r}")
        seen_mb3d = False
        for si, s in enumerate(self.stages):
            name = f"stage {si + 1}"
            width_ok = _sized(s.width, 1, CAPS["width"])
            if not width_ok:
                f.append(f"{name}: width must be between 1 and {CAPS['width']}, got {s.width!r}")
            if s.depth == 0:
                f.append(f"{name} has no block (every stage needs at least one mb4d or mb3d block)")
            if len(s.blocks) > CAPS["blocks"]:
                f.append(f"{name}: {len(s.blocks)} block positions, more than the cap of {CAPS['blocks']}")
            for bi, b in enumerate(s.blocks):
                f.extend(_block_faults(f"{name} block {bi + 1}", b, s.width if width_ok else None, seen_mb3d))
                seen_mb3d = seen_mb3d or b.kind == "mb3d"
        if not f and len(self.stages) == 4:
            from ._profile import count_params

            n = count_params(self)
            if n > CAPS["params"]:
                f.append(f"the model would have {n / 1e6:,.0f} M parameters, more than the cap of "
                         f"{CAPS['params'] / 1e6:,.0f} M")
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
        if not isinstance(d["stages"], list):
            raise ConfigError(f"stages must be a list of 4 stage objects, got {d['stages']!r}")
        stages = []
        for si, s in enumerate(d["stages"]):
            where = f"stage {si + 1}"
            if not isinstance(s, dict) or not isinstance(s.get("blocks"), list) or "width" not in s:
                raise ConfigError(f"{where} must be an object with a 'width' and a list of 'blocks', got {s!r}")
            if len(s["blocks"]) > CAPS["blocks"]:
                raise ConfigError(f"{where}: {len(s['blocks'])} blocks, more than the cap of {CAPS['blocks']}")
            blocks = tuple(BlockConfig.from_dict(b, f"{where} block {bi + 1}") for bi, b in enumerate(s["blocks"]))
            stages.append(StageConfig(_read(check_int, s, "width", where), blocks))
        if not isinstance(d.get("distillation", True), bool):
            raise ConfigError(f"distillation must be true or false, got {d['distillation']!r}")
        return cls(
            stem_width=_read(check_int, d, "stem_width", ""),
            stages=tuple(stages),
            img_size=_read(check_int, d, "img_size", "", 224),
            in_chans=_read(check_int, d, "in_chans", "", 3),
            num_classes=_read(check_int, d, "num_classes", "", 1000),
            distillation=d.get("distillation", True),
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
