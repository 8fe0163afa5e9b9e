"""Lazy package exports (PEP 562): a public name loads its submodule on first use.

The CLI parses arguments, prints ``--help``/``--version`` and lists tables without torch or timm;
packages whose modules need them export through :func:`lazy_exports` so ``from slimformer.supernet
import get_space`` imports only the pure-Python config modules.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to its submodule
    (``"_mod"``, or ``"_mod:other"`` where the module calls it ``other``)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = exports[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", package), attr or name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
