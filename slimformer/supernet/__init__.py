"""The EfficientFormer MetaBlock supernet: configs, search spaces, weight sharing and extraction.

Names load their module on first use (:mod:`slimformer._lazy`): configs, spaces and presets are plain
Python, so ``from slimformer.supernet import get_space`` does not import torch or timm.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("KINDS", "SKIP", "ArchConfig", "BlockConfig", "StageConfig", "mb3d", "mb4d"), "_config"),
    **dict.fromkeys(("EFFICIENTFORMER", "PRESETS", "SPACES", "efficientformer_config", "get_arch", "get_space",
                     "read_arch"), "_presets"),
    **dict.fromkeys(("block_macs", "block_params", "count_macs", "count_params"), "_profile"),
    "SearchSpace": "_space",
    "flatten_at": "_layout", "stage_resolution": "_layout",
    # torch / timm from here on
    "recalibrate_bn": "_bn",
    **dict.fromkeys(("SupernetCheckpoint", "arch_key", "load_supernet", "parse_arch_key", "read_checkpoint",
                     "save_supernet"), "_checkpoint"),
    "EfficientFormerNet": "_model",
    "Supernet": "_supernet",
    **dict.fromkeys(("checkpoint_filter_fn", "load_pretrained", "read_state_dict", "supernet_from_pretrained"),
                    "_timm"),
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the names _EXPORTS loads lazily
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
