"""The EfficientFormer MetaBlock supernet: configs, search spaces, weight sharing and extraction."""
from __future__ import annotations

from ._bn import recalibrate_bn
from ._checkpoint import (
                          SupernetCheckpoint,
                          arch_key,
                          load_supernet,
                          parse_arch_key,
                          read_checkpoint,
                          save_supernet,
)
from ._config import KINDS, SKIP, ArchConfig, BlockConfig, StageConfig, mb3d, mb4d
from ._layout import flatten_at, stage_resolution
from ._model import EfficientFormerNet
from ._presets import EFFICIENTFORMER, PRESETS, SPACES, efficientformer_config, get_arch, get_space, read_arch
from ._profile import block_macs, block_params, count_macs, count_params
from ._space import SearchSpace
from ._supernet import Supernet
from ._timm import checkpoint_filter_fn, load_pretrained, read_state_dict, supernet_from_pretrained

__all__ = [
    "EFFICIENTFORMER", "KINDS", "PRESETS", "SKIP", "SPACES", "ArchConfig", "BlockConfig",
    "EfficientFormerNet", "SearchSpace", "StageConfig", "Supernet", "SupernetCheckpoint", "arch_key",
    "block_macs", "block_params", "checkpoint_filter_fn", "count_macs", "count_params",
    "efficientformer_config", "flatten_at", "get_arch", "get_space", "load_pretrained", "load_supernet", "mb3d", "mb4d",
    "parse_arch_key", "read_arch", "read_checkpoint", "read_state_dict", "recalibrate_bn", "save_supernet",
    "stage_resolution", "supernet_from_pretrained",
]
