"""``SearchSpace``: the choices a supernet offers, and the questions one asks of them.

The space fixes the image size, the number of block positions per stage and which stages may hold
MB3D blocks; it offers per stage a set of widths (steps of 16), per block an MLP ratio, and per
MB3D block the number of heads and the per-head Q/K and V dims. The supernet holds the largest of
each; every subnet uses the first channels of every tensor (so pruning can reorder them).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .._errors import ConfigError, SlimformerError
from .._validate import CAPS, check_float, check_int
from ._config import SKIP, ArchConfig, BlockConfig, StageConfig, mb3d, mb4d
from ._layout import stage_resolution

SPACE_SCHEMA = "slimformer.space/1"


def _steps(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


@dataclass(frozen=True)
class SearchSpace:
    """Choices of the MetaBlock supernet. All tuples are sorted ascending."""

    stage_widths: tuple[tuple[int, ...], ...] = (
        _steps(32, 96, 16), _steps(64, 192, 16), _steps(160, 384, 16), _steps(320, 768, 16))
    depths: tuple[int, ...] = (6, 6, 18, 8)
    stem_widths: tuple[int, ...] = (16, 24, 32, 40, 48)
    mb3d_stages: tuple[int, ...] = (3,)
    mlp_ratios: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
    heads: tuple[int, ...] = (4, 6, 8)
    qk_dims: tuple[int, ...] = (8, 16, 24, 32)
    v_dims: tuple[int, ...] = (32, 64, 96, 128)
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    distillation: bool = True
    width_step: int = 16
    name: str = field(default="default", compare=False)

    def __post_init__(self):
        try:
            self._normalise()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"malformed search space: {e}") from None
        f = self._faults()
        if f:
            raise ConfigError(f)

    def _normalise(self) -> None:
        norm = {
            "stage_widths": tuple(tuple(sorted(int(w) for w in ws)) for ws in self.stage_widths),
            "depths": tuple(int(d) for d in self.depths),
            "stem_widths": tuple(sorted(int(w) for w in self.stem_widths)),
            "mb3d_stages": tuple(sorted(int(s) for s in self.mb3d_stages)),
            "mlp_ratios": tuple(sorted(float(r) for r in self.mlp_ratios)),
            "heads": tuple(sorted(int(h) for h in self.heads)),
            "qk_dims": tuple(sorted(int(d) for d in self.qk_dims)),
            "v_dims": tuple(sorted(int(d) for d in self.v_dims)),
        }
        for k, v in norm.items():
            object.__setattr__(self, k, v)

    def _faults(self) -> list[str]:
        f = []
        if len(self.stage_widths) != 4 or len(self.depths) != 4:
            f.append("a space has 4 stages: give 4 width choice lists and 4 depths")
        if any(not ws for ws in self.stage_widths) or any(d < 1 for d in self.depths):
            f.append("every stage needs at least one width choice and one block position")
        if self.width_step >= 1 and any(w % self.width_step for ws in self.stage_widths for w in ws):
            f.append(f"stage widths must be multiples of the width step {self.width_step}")
        if not self.stem_widths or not self.mlp_ratios:
            f.append("stem_widths and mlp_ratios need at least one choice")
        if any(s not in range(4) for s in self.mb3d_stages):
            f.append("mb3d_stages are stage indices 0..3")
        if self.mb3d_stages and self.mb3d_stages != tuple(range(self.mb3d_stages[0], 4)):
            f.append("mb3d_stages must be the last stage(s), e.g. [3] or [2, 3] (dimension-consistent design)")
        if self.mb3d_stages and not (self.heads and self.qk_dims and self.v_dims):
            f.append("a space with mb3d stages needs head, qk_dim and v_dim choices")
        if not 32 <= self.img_size <= CAPS["img_size"] or self.img_size % 32:
            f.append(f"img_size must be a positive multiple of 32 up to {CAPS['img_size']}, got {self.img_size}")
        bounds = (("stage_widths", [w for ws in self.stage_widths for w in ws], 1, CAPS["width"]),
                  ("depths", self.depths, 1, CAPS["blocks"]), ("stem_widths", self.stem_widths, 1, CAPS["stem_width"]),
                  ("heads", self.heads, 1, CAPS["heads"]), ("qk_dims", self.qk_dims, 1, CAPS["qk_dim"]),
                  ("v_dims", self.v_dims, 1, CAPS["v_dim"]), ("in_chans", [self.in_chans], 1, CAPS["in_chans"]),
                  ("num_classes", [self.num_classes], 0, CAPS["num_classes"]), ("width_step", [self.width_step], 1, None))
        for name, values, lo, hi in bounds:
            bad = [v for v in values if v < lo or (hi is not None and v > hi)]
            if bad:
                f.append(f"{name} must be between {lo} and {hi}, got {bad[0]}" if hi is not None
                         else f"{name} must be at least {lo}, got {bad[0]}")
        if any(not 0 < r <= CAPS["mlp_ratio"] for r in self.mlp_ratios):  # NaN fails this too
            f.append(f"mlp_ratios must be positive numbers up to {CAPS['mlp_ratio']:g}, got {list(self.mlp_ratios)}")
        return f

    # ----------------------------------------------------------------- maxima (the supernet's shapes)
    @property
    def max_widths(self) -> tuple[int, ...]:
        return tuple(ws[-1] for ws in self.stage_widths)

    @property
    def max_mlp_ratio(self) -> float:
        return self.mlp_ratios[-1]

    def max_hidden(self, stage: int) -> int:
        return int(self.max_widths[stage] * self.max_mlp_ratio)

    def kinds_at(self, stage: int) -> tuple[str, ...]:
        """Block kinds a position of ``stage`` may take (the Gumbel choices there)."""
        return ("mb4d", "mb3d", "skip") if stage in self.mb3d_stages else ("mb4d", "skip")

    def tokens(self, stage: int) -> int:
        return stage_resolution(self.img_size, stage) ** 2

    # ----------------------------------------------------------------- membership
    def check(self, cfg: ArchConfig) -> list[str]:
        """Every reason ``cfg`` is not a subnet of this space (empty list: it is)."""
        f: list[str] = []
        for attr in ("img_size", "in_chans", "num_classes", "distillation"):
            if getattr(cfg, attr) != getattr(self, attr):
                f.append(f"{attr} is {getattr(cfg, attr)} but the space has {getattr(self, attr)}")
        if cfg.stem_width not in self.stem_widths:
            f.append(f"stem width {cfg.stem_width} is not offered (choices: {_fmt(self.stem_widths)})")
        for si, s in enumerate(cfg.stages):
            name = f"stage {si + 1}"
            if s.width not in self.stage_widths[si]:
                f.append(f"{name}: width {s.width} is not offered (choices: {_fmt(self.stage_widths[si])})")
            if len(s.blocks) > self.depths[si]:
                f.append(f"{name}: {len(s.blocks)} block positions but the space has {self.depths[si]}")
            for bi, b in enumerate(s.blocks):
                where = f"{name} block {bi + 1}"
                if b.kind == "skip":
                    continue
                if b.kind == "mb3d" and si not in self.mb3d_stages:
                    f.append(f"{where}: mb3d is only allowed in stage(s) "
                             f"{', '.join(str(x + 1) for x in self.mb3d_stages) or 'none'}")
                if b.mlp_ratio not in self.mlp_ratios:
                    f.append(f"{where}: mlp_ratio {b.mlp_ratio:g} is not offered (choices: {_fmt(self.mlp_ratios)})")
                if b.kind == "mb3d":
                    for attr, choices in (("heads", self.heads), ("qk_dim", self.qk_dims), ("v_dim", self.v_dims)):
                        if getattr(b, attr) not in choices:
                            f.append(f"{where}: {attr} {getattr(b, attr)} is not offered (choices: {_fmt(choices)})")
        return f

    def contains(self, cfg: ArchConfig) -> bool:
        return not self.check(cfg)

    def validate(self, cfg: ArchConfig) -> ArchConfig:
        faults = self.check(cfg)
        if faults:
            raise ConfigError([f"not in space {self.name!r}: {x}" for x in faults])
        return cfg

    # ----------------------------------------------------------------- canonical subnets
    def _arch(self, stem: int, stages: list[StageConfig], name: str = "") -> ArchConfig:
        return ArchConfig(stem_width=stem, stages=tuple(stages), img_size=self.img_size, in_chans=self.in_chans,
                          num_classes=self.num_classes, distillation=self.distillation, name=name)

    def largest_mb3d(self) -> BlockConfig:
        return mb3d(self.heads[-1], self.qk_dims[-1], self.v_dims[-1], self.max_mlp_ratio)

    def largest(self) -> ArchConfig:
        """Every position used at its widest; the MB3D stages hold only MB3D blocks (the most costly kind)."""
        stages = []
        for si, ws in enumerate(self.stage_widths):
            blk = self.largest_mb3d() if si in self.mb3d_stages else mb4d(self.max_mlp_ratio)
            stages.append(StageConfig(ws[-1], (blk,) * self.depths[si]))
        return self._arch(self.stem_widths[-1], stages, "largest")

    def smallest(self) -> ArchConfig:
        """One narrowest MB4D block per stage at the smallest MLP ratio."""
        stages = [StageConfig(ws[0], (mb4d(self.mlp_ratios[0]),)) for ws in self.stage_widths]
        return self._arch(self.stem_widths[0], stages, "smallest")

    def sample(self, seed: int | random.Random | None = None) -> ArchConfig:
        """A random subnet. Depth n ~ U{1..positions}; half the time the first n positions, else n random
        ones; in MB3D stages a random-length MB3D tail; every other choice uniform. Seeded: same seed,
        same config."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        stages = []
        mb3d_started = False
        for si, ws in enumerate(self.stage_widths):
            width = rng.choice(ws)
            n = rng.randint(1, self.depths[si])
            pos = list(range(n)) if rng.random() < 0.5 else sorted(rng.sample(range(self.depths[si]), n))
            if si in self.mb3d_stages:
                n3 = n if mb3d_started else rng.randint(0, n)
            else:
                n3 = 0
            blocks = [SKIP] * (pos[-1] + 1)
            for i, p in enumerate(pos):
                ratio = rng.choice(self.mlp_ratios)
                if i >= n - n3:
                    blocks[p] = mb3d(rng.choice(self.heads), rng.choice(self.qk_dims), rng.choice(self.v_dims), ratio)
                else:
                    blocks[p] = mb4d(ratio)
            mb3d_started = mb3d_started or n3 > 0
            stages.append(StageConfig(width, tuple(blocks)))
        return self._arch(rng.choice(self.stem_widths), stages)

    # ----------------------------------------------------------------- size of the space
    def num_subnets(self) -> int:
        """Exact number of distinct subnets (dynamic programme over positions; exact integer)."""
        n4 = len(self.mlp_ratios)
        n3 = len(self.mlp_ratios) * len(self.heads) * len(self.qk_dims) * len(self.v_dims)
        # state: (mb3d already started?) -> number of ways; per stage also track "has a block"
        ways = {False: 1, True: 0}
        for si in range(4):
            allow3 = si in self.mb3d_stages
            # per-stage DP state: (started, nonempty)
            st = {(s, False): w for s, w in ways.items() if w}
            for _ in range(self.depths[si]):
                nxt: dict[tuple[bool, bool], int] = {}
                for (started, nonempty), w in st.items():
                    moves = [((started, nonempty), w)]                  # skip
                    if not started:
                        moves.append(((False, True), w * n4))          # mb4d
                    if allow3:
                        moves.append(((True, True), w * n3))           # mb3d
                    for k, v in moves:
                        nxt[k] = nxt.get(k, 0) + v
                st = nxt
            ways = {False: 0, True: 0}
            for (started, nonempty), w in st.items():
                if nonempty:
                    ways[started] += w * len(self.stage_widths[si])
        return (ways[False] + ways[True]) * len(self.stem_widths)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SPACE_SCHEMA,
            "name": self.name,
            "stage_widths": [list(ws) for ws in self.stage_widths],
            "depths": list(self.depths),
            "stem_widths": list(self.stem_widths),
            "mb3d_stages": list(self.mb3d_stages),
            "mlp_ratios": list(self.mlp_ratios),
            "heads": list(self.heads),
            "qk_dims": list(self.qk_dims),
            "v_dims": list(self.v_dims),
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "distillation": self.distillation,
            "width_step": self.width_step,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        if not isinstance(d, dict):
            raise ConfigError("a search space must be a JSON object")
        if d.get("schema", SPACE_SCHEMA) != SPACE_SCHEMA:
            raise ConfigError(f"unsupported search space schema {d.get('schema')!r} (expected {SPACE_SCHEMA!r})")
        known = set(cls.__dataclass_fields__) | {"schema"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown search space field(s): {', '.join(sorted(unknown))}")
        kw = {k: v for k, v in d.items() if k != "schema"}
        try:
            if "stage_widths" in kw:
                kw["stage_widths"] = tuple(_checked(check_int, ws, f"stage_widths[{i}]")
                                           for i, ws in enumerate(_list(kw["stage_widths"], "stage_widths")))
            for k in ("depths", "stem_widths", "mb3d_stages", "mlp_ratios", "heads", "qk_dims", "v_dims"):
                if k in kw:
                    kw[k] = _checked(check_float if k == "mlp_ratios" else check_int, kw[k], k)
            for k in ("img_size", "in_chans", "num_classes", "width_step"):
                if k in kw:
                    kw[k] = check_int(kw[k], k)
        except SlimformerError as e:
            raise ConfigError(str(e)) from None
        if not isinstance(kw.get("distillation", True), bool):
            raise ConfigError(f"distillation must be true or false, got {kw['distillation']!r}")
        if "name" in kw:
            kw["name"] = str(kw["name"])
        return cls(**kw)

    @cached_property
    def hash(self) -> str:
        """Short content hash: tables and checkpoints record it to refuse a foreign space."""
        d = self.to_dict()
        d.pop("name")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _list(v: Any, field: str) -> list:
    if not isinstance(v, list):
        raise SlimformerError(f"{field} must be a list, got {v!r}")
    return v


def _checked(check, values: Any, field: str) -> tuple:
    """Every element of the JSON list ``values`` through ``check`` (a :mod:`slimformer._validate` check)."""
    return tuple(check(v, f"{field}[{i}]") for i, v in enumerate(_list(values, field)))


def _fmt(xs) -> str:
    xs = [f"{x:g}" if isinstance(x, float) else str(x) for x in xs]
    return ", ".join(xs) if len(xs) <= 8 else f"{', '.join(xs[:3])}, ..., {', '.join(xs[-2:])}"
