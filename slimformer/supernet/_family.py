"""Model families: one small protocol so downstream code never asks which design a config belongs to.

A family names its architecture config, search space, supernet and standalone model classes, the JSON
schemas they are written with, and its named presets and spaces. ``family_of`` finds the family of a
config, space, supernet or JSON dict; ``arch_from_dict``, ``space_from_dict``, ``build_model`` and
``build_supernet`` are what call sites use instead of naming a class. Two families exist: the
EfficientFormer MetaBlock design (``efficientformer``) and EfficientViT (``efficientvit``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str
    arch_schema: str
    space_schema: str
    config_cls: type
    space_cls: type
    model: Callable[..., Any]       # (cfg, **kw) -> standalone nn.Module
    supernet: Callable[..., Any]    # (space) -> supernet nn.Module
    presets: dict[str, Callable[[], Any]]
    spaces: dict[str, Callable[[], Any]]
    checkpoint_filter_fn: Callable[..., dict]  # (state_dict, model) -> our keys (timm + original layouts)


def _efficientformer() -> Family:
    from ._config import SCHEMA, ArchConfig
    from ._model import EfficientFormerNet
    from ._presets import PRESETS, SPACES
    from ._space import SPACE_SCHEMA, SearchSpace
    from ._supernet import Supernet
    from ._timm import checkpoint_filter_fn

    return Family("efficientformer", SCHEMA, SPACE_SCHEMA, ArchConfig, SearchSpace, EfficientFormerNet, Supernet,
                  PRESETS, SPACES, checkpoint_filter_fn)


def _efficientvit() -> Family:
    from .efficientvit import (
        EVIT_PRESETS,
        EVIT_SPACES,
        EfficientViTConfig,
        EfficientViTNet,
        EfficientViTSpace,
        EfficientViTSupernet,
    )
    from .efficientvit._config import SCHEMA
    from .efficientvit._space import SPACE_SCHEMA
    from .efficientvit._timm import checkpoint_filter_fn

    return Family("efficientvit", SCHEMA, SPACE_SCHEMA, EfficientViTConfig, EfficientViTSpace, EfficientViTNet,
                  EfficientViTSupernet, EVIT_PRESETS, EVIT_SPACES, checkpoint_filter_fn)


_LOADERS = {"efficientformer": _efficientformer, "efficientvit": _efficientvit}
_CACHE: dict[str, Family] = {}


def get_family(name: str) -> Family:
    if name not in _LOADERS:
        raise ConfigError(f"unknown model family {name!r} (choose from {', '.join(_LOADERS)})")
    if name not in _CACHE:
        _CACHE[name] = _LOADERS[name]()
    return _CACHE[name]


def families() -> list[Family]:
    return [get_family(n) for n in _LOADERS]


def family_of(obj: Any) -> Family:
    """The family of a config, space, supernet (its ``space``), standalone model (its ``arch``) or JSON dict."""
    if isinstance(obj, dict):
        if "arch" in obj and "stages" not in obj:
            obj = obj["arch"]
        schema = obj.get("schema")
        for fam in families():
            if schema in (fam.arch_schema, fam.space_schema):
                return fam
        if schema is None or "family" not in obj:
            return get_family("efficientformer")  # files written before families existed carry no schema
        return get_family(str(obj["family"]))
    for attr in ("space", "arch"):
        inner = getattr(obj, attr, None)
        if inner is not None and hasattr(inner, "family"):
            obj = inner
            break
    return get_family(getattr(obj, "family", "efficientformer"))


def arch_from_dict(d: dict) -> Any:
    """An architecture config of whichever family ``d`` was written by."""
    if not isinstance(d, dict):
        raise ConfigError("an architecture config must be a JSON object")
    return family_of(d).config_cls.from_dict(d)


def space_from_dict(d: dict) -> Any:
    if not isinstance(d, dict):
        raise ConfigError("a search space must be a JSON object")
    return family_of(d).space_cls.from_dict(d)


def build_model(cfg: Any, **kw) -> Any:
    """The standalone model of ``cfg`` (``EfficientFormerNet`` or ``EfficientViTNet``)."""
    return family_of(cfg).model(cfg, **kw)


def build_supernet(space: Any) -> Any:
    return family_of(space).supernet(space)
