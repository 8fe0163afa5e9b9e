"""Training: data loaders, evaluation, supernet training (sandwich rule, in-place KD, Gumbel) and fine-tuning."""
from __future__ import annotations

from ._builtin import CLASSES as BUILTIN_CLASSES
from ._builtin import BuiltinShapes, render
from ._data import Loaders, build_datasets, build_loaders, evaluate

__all__ = ["BUILTIN_CLASSES", "BuiltinShapes", "render", "Loaders", "build_datasets", "build_loaders", "evaluate"]
