"""Data: loaders (the built-in toy set or an ImageFolder tree) and top-1 evaluation.

Beneath train, search, pruning and export: every stage that reads images gets them from here.
"""
from __future__ import annotations

from ._builtin import CLASSES as BUILTIN_CLASSES
from ._builtin import BuiltinShapes, render
from ._loaders import BUILTIN, Loaders, build_datasets, build_loaders, evaluate

__all__ = [
    "BUILTIN",
    "BUILTIN_CLASSES",
    "BuiltinShapes",
    "Loaders",
    "build_datasets",
    "build_loaders",
    "evaluate",
    "render",
]
