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
from ._family import (
                          Family,
                          arch_from_dict,
                          build_model,
                          build_supernet,
                          families,
                          family_of,
                          get_family,
                          space_from_dict,
)
from ._layout import flatten_at, stage_resolution
from ._model import EfficientFormerNet
from ._presets import EFFICIENTFORMER, PRESETS, SPACES, efficientformer_config, get_arch, get_space, read_arch
from ._profile import block_macs, block_params, count_macs, count_params
from ._space import SearchSpace
from ._supernet import Supernet
from ._timm import checkpoint_filter_fn, load_pretrained, read_state_dict, supernet_from_pretrained

__all__ = [
                          "EFFICIENTFORMER",
                          "KINDS",
                          "PRESETS",
                          "SKIP",
                          "SPACES",
                          "ArchConfig",
                          "BlockConfig",
                          "EfficientFormerNet",
                          "Family",
                          "SearchSpace",
                          "StageConfig",
                          "Supernet",
                          "SupernetCheckpoint",
                          "arch_from_dict",
                          "arch_key",
                          "block_macs",
                          "block_params",
                          "build_model",
                          "build_supernet",
                          "checkpoint_filter_fn",
                          "count_macs",
                          "count_params",
                          "efficientformer_config",
                          "families",
                          "family_of",
                          "flatten_at",
                          "get_arch",
                          "get_family",
                          "get_space",
                          "load_pretrained",
                          "load_supernet",
                          "mb3d",
                          "mb4d",
                          "parse_arch_key",
                          "read_arch",
                          "read_checkpoint",
                          "read_state_dict",
                          "recalibrate_bn",
                          "save_supernet",
                          "space_from_dict",
                          "stage_resolution",
                          "supernet_from_pretrained",
]
