"""Presets: the EfficientFormer v1 models (L1, L3, L7) exactly, and named search spaces.

Widths and depths are timm's ``EfficientFormer_width`` / ``EfficientFormer_depth``; every model ends
stage 4 with 1, 4 or 8 MB3D blocks (8 heads, key dim 32, attention ratio 4 so V dim 128, MLP ratio 4)
and carries the distillation head. The default space contains all three.
"""
from __future__ import annotations

from pathlib import Path

from .._errors import ConfigError, SlimformerError
from .._io import read_json
from ._config import ArchConfig, StageConfig, mb3d, mb4d
from ._family import arch_from_dict, space_from_dict
from ._space import SearchSpace
from .efficientvit import EVIT_PRESETS, EVIT_SPACES

EFFICIENTFORMER = {
    # name: (widths, depths, num_vit)
    "l1": ((48, 96, 224, 448), (3, 2, 6, 4), 1),
    "l3": ((64, 128, 320, 512), (4, 4, 12, 6), 4),
    "l7": ((96, 192, 384, 768), (6, 6, 18, 8), 8),
}


def efficientformer_config(variant: str, *, img_size: int = 224, num_classes: int = 1000) -> ArchConfig:
    """The exact EfficientFormer-``variant`` architecture (``l1``, ``l3`` or ``l7``)."""
    widths, depths, num_vit = EFFICIENTFORMER[variant]
    stages = []
    for si, (w, d) in enumerate(zip(widths, depths)):
        n3 = num_vit if si == 3 else 0
        stages.append(StageConfig(w, tuple([mb4d(4.0)] * (d - n3) + [mb3d(8, 32, 128, 4.0)] * n3)))
    return ArchConfig(stem_width=widths[0] // 2, stages=tuple(stages), img_size=img_size,
                      num_classes=num_classes, distillation=True, name=f"efficientformer_{variant}")


PRESETS = {name: (lambda n=name: efficientformer_config(n)) for name in EFFICIENTFORMER}

SPACES = {
    "default": SearchSpace,
    # a small space for tests, demos and CPU training on 32-64 px images
    "tiny": lambda: SearchSpace(
        stage_widths=((16, 32), (32, 48), (48, 64), (64, 80, 96)),
        depths=(2, 2, 3, 3),
        stem_widths=(8, 16),
        mb3d_stages=(3,),
        mlp_ratios=(1.0, 2.0, 4.0),
        heads=(1, 2),
        qk_dims=(8, 16),
        v_dims=(16, 32),
        img_size=32,
        num_classes=10,
        distillation=True,
        name="tiny",
    ),
}


def get_space(name_or_path: str | Path | None = None) -> SearchSpace:
    """A named space (``default``, ``tiny``) or a space JSON file."""
    if name_or_path is None or str(name_or_path) == "default":
        return SearchSpace()
    key = str(name_or_path)
    if key in SPACES:
        return SPACES[key]()
    if key in EVIT_SPACES:
        return EVIT_SPACES[key]()
    if not Path(key).suffix == ".json" and not Path(key).exists():
        raise SlimformerError(f"unknown search space {key!r}: use one of {', '.join([*SPACES, *EVIT_SPACES])} "
                              "or a JSON file")
    return space_from_dict(read_json(key, "search space file"))


def read_arch(src: str | Path) -> tuple[ArchConfig, dict, Path | None]:
    """(config, the JSON it was read from, its folder) for a preset, an ArchConfig JSON file, or a run
    directory holding ``arch.json`` (search, prune, finetune). A preset has no JSON and no folder."""
    key = str(src)
    short = key.removeprefix("efficientformer_")
    if short in PRESETS:
        return PRESETS[short](), {}, None
    if key.removeprefix("efficientvit_") in EVIT_PRESETS:
        return EVIT_PRESETS[key.removeprefix("efficientvit_")](), {}, None
    p = Path(key)
    if p.is_dir():
        if not (p / "arch.json").is_file():
            raise SlimformerError(f"{p} holds no arch.json (expected a search, prune or finetune run directory)")
        p = p / "arch.json"
    if p.suffix != ".json" and not p.exists():
        raise SlimformerError(f"unknown architecture {key!r}: use a preset ({', '.join([*PRESETS, *EVIT_PRESETS])}), "
                              "an arch JSON file or a run directory")
    data = read_json(p, "architecture file")
    try:
        return arch_from_dict(data), data, p.parent
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def get_arch(name_or_path: str | Path) -> ArchConfig:
    """A preset (``l1``, ``l3``, ``l7``, ``m0``...``m5``, also ``efficientformer_l1``, ``efficientvit_m0``...),
    an architecture JSON file of either family or a run dir."""
    return read_arch(name_or_path)[0]
