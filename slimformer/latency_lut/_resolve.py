"""``resolve_table``: the one way search, pruning and training turn a ``--device`` value into a table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from ..supernet import SearchSpace
from ._build import build_table
from ._registry import get_table
from ._table import LatencyTable


def resolve_table(table: Any, *, space: SearchSpace | None = None, lut_dir: str | Path | None = None,
                  build: bool = False, progress: bool = False) -> LatencyTable:
    """A :class:`LatencyTable` from a name, a path (``get_table``) or a table object.

    ``build=True`` measures a missing ``cpu-*`` table on this machine first (``build_table``, resumable),
    for ``space`` or the default space. ``space`` given: a table built for another search space is an error."""
    if isinstance(table, (str, Path)):
        table = _named_table(str(table), space=space, lut_dir=lut_dir, build=build, progress=progress)
    if space is not None and table.space_hash != space.hash:
        raise SlimformerError(f"latency table {getattr(table, 'name', '?')!r} was built for another search space "
                              f"({table.space_hash}) than the supernet's {space.name!r} ({space.hash}); a table of "
                              f"another space cannot price its subnets: build one for it (`slimformer lut build "
                              f"--space ...`)")
    return table


def _named_table(name: str, *, space: SearchSpace | None, lut_dir, build: bool, progress: bool) -> LatencyTable:
    try:
        return get_table(name, lut_dir=lut_dir)
    except SlimformerError:
        if not build or not name.startswith("cpu"):
            raise
    backend = "torch" if "torch" in name else "onnxruntime"
    return build_table(name=name, backend=backend, space=space if space is not None else "default",
                       lut_dir=lut_dir, progress=progress)
