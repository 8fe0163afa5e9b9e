"""Where a network's feature maps are and where they become tokens: one rule for the model, the keys and the table.

EfficientFormer runs its first stages on feature maps ``(B, C, H, W)`` and its MB3D tail on tokens
``(B, N, C)``. :func:`stage_resolution` gives a stage's feature-map side; :func:`flatten_at` says where in a
stage the map is flattened to tokens. ``EfficientFormerNet`` places its ``Flat`` modules by it, and the
latency keys (``arch_ops``, ``space_ops``) and the table's fast sum place their ``flat`` ops by it, so the
ops a table prices are the modules the model runs.
"""
from __future__ import annotations

from collections.abc import Sequence


def stage_resolution(img_size: int, stage: int) -> int:
    """Feature-map side in ``stage`` (0-based): stride 4 after the stem, then x2 per stage."""
    return img_size // (4 * 2 ** stage)


def flatten_at(kinds: Sequence[str], *, tokens_in: bool, last: bool) -> int | None:
    """Where a stage with blocks of ``kinds`` turns feature maps into tokens, or None if it ends as a map.

    The index of the block the flatten goes before; ``len(kinds)`` is after the last block. A stage that
    gets tokens unflattens them for its downsample and flattens again first (0); otherwise it flattens
    before its first MB3D block, and the last stage at its end (the final LayerNorm works on tokens).
    Skips may be in ``kinds`` or left out: they run nothing, so the place is the same."""
    if tokens_in:
        return 0
    for i, kind in enumerate(kinds):
        if kind == "mb3d":
            return i
    return len(kinds) if last else None
