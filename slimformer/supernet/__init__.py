"""The EfficientFormer MetaBlock supernet: configs, search spaces, weight sharing and extraction."""
from __future__ import annotations

from ._bn import recalibrate_bn
from ._checkpoint import (SupernetCheckpoint, arch_key, load_supernet, parse_arch_key, read_checkpoint,
                          save_supernet)
from ._config import KINDS, SKIP, ArchConfig, BlockConfig, StageConfig, mb3d, mb4d
from ._model import EfficientFormerNet
from ._presets import EFFICIENTFORMER, PRESETS, SPACES, efficientformer_config, get_arch, get_space
from ._profile import block_macs, block_params, count_macs, count_params
from ._space import SearchSpace
from ._supernet import Supernet
from ._timm import checkpoint_filter_fn, load_pretrained, read_state_dict, supernet_from_pretrained

__all__ = [
    "KINDS", "SKIP", "ArchConfig", "BlockConfig", "StageConfig", "mb3d", "mb4d",
    "SearchSpace", "Supernet", "EfficientFormerNet",
    "EFFICIENTFORMER", "PRESETS", "SPACES", "efficientformer_config", "get_arch", "get_space",
    "count_params", "count_macs", "block_params", "block_macs", "recalibrate_bn",
    "SupernetCheckpoint", "save_supernet", "load_supernet", "read_checkpoint", "arch_key", "parse_arch_key",
    "checkpoint_filter_fn", "load_pretrained", "read_state_dict", "supernet_from_pretrained",
]
