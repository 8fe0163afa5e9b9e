"""The EfficientViT (MSRA, CVPR 2023) family: configs, search spaces, elastic supernet, presets M0...M5."""
from __future__ import annotations

from ._config import FAMILY, EfficientViTConfig, EViTBlockConfig, EViTStageConfig, stage_resolutions
from ._model import EfficientViTNet
from ._presets import EFFICIENTVIT, EVIT_PRESETS, EVIT_SPACES, efficientvit_config
from ._space import EfficientViTSpace
from ._supernet import EfficientViTSupernet

__all__ = [
    "EFFICIENTVIT", "EVIT_PRESETS", "EVIT_SPACES", "FAMILY", "EViTBlockConfig", "EViTStageConfig",
    "EfficientViTConfig", "EfficientViTNet", "EfficientViTSpace", "EfficientViTSupernet", "efficientvit_config",
    "stage_resolutions",
]
