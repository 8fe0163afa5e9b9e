"""``EfficientViTConfig``: one subnet of the EfficientViT (MSRA, CVPR 2023) family, as plain immutable data.

A config lists, for each of the three stages, its width and one :class:`EViTBlockConfig` per block (the
first ``depth`` positions of the stage; depth is elastic by prefix). Every block is the sandwich
``dw0 -> ffn0 -> cascaded group attention -> dw1 -> ffn1`` of timm's ``EfficientVitBlock``; a subsample
block (``res1 -> patch merging -> res2``) sits between stages, sized by the two stage widths.

Cascaded group attention splits the stage width into ``heads`` chunks of ``width // heads`` channels;
head ``i`` sees its chunk plus the previous head's output. Per head it has ``qk_dim`` query and key
channels, ``v_dim`` value channels (at most the chunk: the previous head's output is added to the first
``v_dim`` channels of the next chunk, which is timm's cascade when ``v_dim`` equals the chunk) and a
depthwise ``kernels[i]`` x ``kernels[i]`` convolution on the queries.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from ..._errors import ConfigError
from .._base import StagedConfig

FAMILY = "efficientvit"
SCHEMA = "slimformer.efficientvit.arch/1"
PATCH = 16            # the patch embedding's stride
SUB_FFN_RATIO = 2.0   # the subsample block's two FFNs (timm: int(dim * 2))
MERGE_RATIO = 4       # patch merging's hidden width (timm: int(dim * 4))


def stage_resolutions(img_size: int, n_stages: int = 3) -> tuple[int, ...]:
    """Feature-map side of each stage: img/16, then ``(r - 1) // 2 + 1`` per subsample (timm's rule)."""
    r = img_size // PATCH
    out = [r]
    for _ in range(n_stages - 1):
        r = (r - 1) // 2 + 1
        out.append(r)
    return tuple(out)


@dataclass(frozen=True)
class EViTBlockConfig:
    """One EfficientViT block; ``qk_dim`` and ``v_dim`` are per head, ``kernels`` has one odd size per head."""

    heads: int = 4
    qk_dim: int = 16
    v_dim: int = 16
    ffn_ratio: float = 2.0
    kernels: tuple[int, ...] = (5, 5, 5, 5)

    def __post_init__(self):
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))

    kind = "evit"

    def hidden(self, width: int) -> int:
        """Hidden width of each of the block's two FFNs (timm's ``int(dim * ratio)``)."""
        return int(width * self.ffn_ratio)

    def faults(self, width: int, where: str) -> list[str]:
        f = []
        for attr in ("heads", "qk_dim", "v_dim"):
            if getattr(self, attr) <= 0:
                f.append(f"{where}: {attr} must be positive, got {getattr(self, attr)}")
        if f:
            return f
        if width % self.heads:
            f.append(f"{where}: width {width} is not divisible by {self.heads} heads")
        elif self.v_dim > width // self.heads:
            f.append(f"{where}: v_dim {self.v_dim} exceeds the head's input chunk {width // self.heads}")
        if self.hidden(width) < 1:
            f.append(f"{where}: ffn_ratio must be positive, got {self.ffn_ratio}")
        if len(self.kernels) != self.heads or any(k < 1 or k % 2 == 0 for k in self.kernels):
            f.append(f"{where}: kernels must be {self.heads} odd sizes (one per head), got {list(self.kernels)}")
        return f

    def to_dict(self) -> dict[str, Any]:
        return {"heads": self.heads, "qk_dim": self.qk_dim, "v_dim": self.v_dim, "ffn_ratio": self.ffn_ratio,
                "kernels": list(self.kernels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EViTBlockConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"an EfficientViT block must be an object, got {d!r}")
        unknown = set(d) - {"heads", "qk_dim", "v_dim", "ffn_ratio", "kernels", "kind"}
        if unknown:
            raise ConfigError(f"unknown block field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(heads=int(d.get("heads", 4)), qk_dim=int(d.get("qk_dim", 16)), v_dim=int(d.get("v_dim", 16)),
                       ffn_ratio=float(d.get("ffn_ratio", 2.0)), kernels=tuple(d.get("kernels", (5,) * 4)))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"malformed EfficientViT block {d!r} ({e})") from None


@dataclass(frozen=True)
class EViTStageConfig:
    width: int
    blocks: tuple[EViTBlockConfig, ...]

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(self.blocks))

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class EfficientViTConfig(StagedConfig):
    """A complete EfficientViT subnet: patch embedding, three stages, BN + linear classifier."""

    stages: tuple[EViTStageConfig, ...]
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    window: int = 7
    distillation: bool = False
    name: str = field(default="", compare=False)

    family = FAMILY

    def resolution(self, stage: int) -> int:
        return stage_resolutions(self.img_size, len(self.stages))[stage]

    def window_size(self, stage: int) -> int:
        """The attention window side in ``stage`` (timm: ``min(window, resolution)``)."""
        return min(self.window, self.resolution(stage))

    def block(self, stage: int, pos: int) -> EViTBlockConfig | None:
        blocks = self.stages[stage].blocks
        return blocks[pos] if pos < len(blocks) else None

    # ----------------------------------------------------------------- edits (return new configs)
    def with_block(self, stage: int, pos: int, block: EViTBlockConfig) -> EfficientViTConfig:
        blocks = list(self.stages[stage].blocks)
        blocks[pos] = block
        return self.with_stage(stage, replace(self.stages[stage], blocks=tuple(blocks)))

    def with_depth(self, stage: int, depth: int) -> EfficientViTConfig:
        return self.with_stage(stage, replace(self.stages[stage], blocks=self.stages[stage].blocks[:depth]))

    # ----------------------------------------------------------------- validation
    def faults(self) -> list[str]:
        f: list[str] = []
        if len(self.stages) != 3:
            f.append(f"an EfficientViT config has 3 stages, got {len(self.stages)}")
        if self.img_size < PATCH or self.img_size % PATCH:
            f.append(f"img_size must be a positive multiple of {PATCH}, got {self.img_size}")
        if self.num_classes < 0 or self.in_chans <= 0:
            f.append("num_classes must be >= 0 and in_chans > 0")
        if self.window < 1:
            f.append(f"window must be positive, got {self.window}")
        for si, s in enumerate(self.stages):
            name = f"stage {si + 1}"
            if s.width < 8 or (si == 0 and s.width % 8):
                f.append(f"{name}: width must be >= 8{' and a multiple of 8' if si == 0 else ''}, got {s.width}")
                continue
            if s.depth == 0:
                f.append(f"{name} has no block (every stage needs at least one)")
            for bi, b in enumerate(s.blocks):
                if not isinstance(b, EViTBlockConfig):
                    f.append(f"{name} block {bi + 1}: not an EfficientViT block ({type(b).__name__})")
                    continue
                f.extend(b.faults(s.width, f"{name} block {bi + 1}"))
        return f

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA, "family": FAMILY, "img_size": self.img_size, "in_chans": self.in_chans,
            "stages": [{"width": s.width, "blocks": [b.to_dict() for b in s.blocks]} for s in self.stages],
            "num_classes": self.num_classes, "window": self.window, "distillation": self.distillation,
        }
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EfficientViTConfig:
        if not isinstance(d, dict):
            raise ConfigError("an architecture config must be a JSON object")
        if "arch" in d and "stages" not in d:
            d = d["arch"]
        if d.get("schema") != SCHEMA:
            raise ConfigError(f"unsupported architecture schema {d.get('schema')!r} (expected {SCHEMA!r})")
        if "stages" not in d:
            raise ConfigError("architecture config is missing stages")
        try:
            stages = tuple(EViTStageConfig(int(s["width"]), tuple(EViTBlockConfig.from_dict(b) for b in s["blocks"]))
                           for s in d["stages"])
        except (KeyError, TypeError) as e:
            raise ConfigError(f"malformed stage in architecture config ({e!r})") from None
        return cls(stages=stages, img_size=int(d.get("img_size", 224)), in_chans=int(d.get("in_chans", 3)),
                   num_classes=int(d.get("num_classes", 1000)), window=int(d.get("window", 7)),
                   distillation=bool(d.get("distillation", False)), name=str(d.get("name", "")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EfficientViTConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"architecture config is not valid JSON: {e}") from None

    def key(self) -> str:
        d = self.to_dict()
        d.pop("name", None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def summary(self) -> str:
        """One line, e.g. ``evit w64-128-192 d1-2-3 h4-4-4 @224px`` (heads of each stage's first block)."""
        heads = "-".join(str(s.blocks[0].heads) if s.blocks else "0" for s in self.stages)
        return (f"evit w{'-'.join(map(str, self.widths))} d{'-'.join(map(str, self.depths))} h{heads} "
                f"@{self.img_size}px")
