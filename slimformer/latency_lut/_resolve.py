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
    """The table ``name``; where ``space`` is given and ``name`` covers another space, ``<name>-<space name>``
    (how tables of further spaces are named, e.g. ``cpu-ort-efficientvit``). ``build=True`` measures a
    missing ``cpu-*`` table: ``name`` if there is none at all, else ``<name>-<space name>``."""
    try:
        found, err = get_table(name, lut_dir=lut_dir), None
    except SlimformerError as e:
        found, err = None, e
    if found is not None and (space is None or found.space_hash == space.hash):
        return found
    plain = not name.endswith(".json") and "/" not in name and "\\" not in name
    alt = f"{name}-{space.name}" if space is not None and plain else None
    if alt is not None:
        try:
            return get_table(alt, lut_dir=lut_dir)
        except SlimformerError:
            pass
    if not build or not name.startswith("cpu") or (found is not None and alt is None):
        if found is not None:
            return found  # resolve_table names the space mismatch
        if alt is not None and space.name not in ("default",):
            raise SlimformerError(f"{err} (a table of space {space.name!r} is looked up as {alt!r}: build it with "
                                  f"`slimformer lut build --device {alt} --space {space.name}`)") from None
        raise err
    backend = "torch" if "torch" in name else "onnxruntime"
    return build_table(name=name if found is None else alt, backend=backend,
                       space=space if space is not None else "default", lut_dir=lut_dir, progress=progress)
