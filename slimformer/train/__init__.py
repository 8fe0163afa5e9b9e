"""Training: data (built-in toy data or ImageFolder), evaluation, supernet training and subnet fine-tuning."""
from __future__ import annotations

from ._builtin import CLASSES as BUILTIN_CLASSES
from ._builtin import BuiltinShapes, render
from ._data import Loaders, build_loaders, build_mixup, evaluate

__all__ = ["BUILTIN_CLASSES", "BuiltinShapes", "render", "Loaders", "build_loaders", "build_mixup", "evaluate"]
