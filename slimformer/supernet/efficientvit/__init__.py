"""The EfficientViT (MSRA, CVPR 2023) family: configs, search spaces, elastic supernet, presets M0...M5.

Names load their module on first use (:mod:`slimformer._lazy`): configs, spaces and presets are plain
Python, so the CLI can list presets and spaces without importing torch or timm.
"""
from __future__ import annotations

from ..._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("FAMILY", "EfficientViTConfig", "EViTBlockConfig", "EViTStageConfig", "stage_resolutions"),
                    "_config"),
    **dict.fromkeys(("EFFICIENTVIT", "EVIT_PRESETS", "EVIT_SPACES", "efficientvit_config"), "_presets"),
    "EfficientViTSpace": "_space",
    # torch / timm from here on
    "EfficientViTNet": "_model",
    "EfficientViTSupernet": "_supernet",
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the names _EXPORTS loads lazily
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
