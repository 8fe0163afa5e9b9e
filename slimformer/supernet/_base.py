"""What every family's subnet config shares, written once.

:class:`StagedConfig` is mixed into each family's frozen config dataclass (``stages`` of objects with a
``width`` and ``blocks``): it checks the config on construction and gives the derived per-stage facts
and the copy-on-edit methods. Plain Python: configs load without torch (``slimformer --help`` stays fast).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from .._errors import ConfigError


class StagedConfig:
    """Shared part of a family config: a frozen dataclass with ``stages`` and a ``faults()`` method."""

    stages: tuple[Any, ...]

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        faults = self.faults()
        if faults:
            raise ConfigError(faults)

    def faults(self) -> list[str]:  # each family lists its own structural problems
        raise NotImplementedError

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def num_features(self) -> int:
        """Width of the classifier input (the last stage's width)."""
        return self.stages[-1].width

    def tokens(self, stage: int) -> int:
        return self.resolution(stage) ** 2

    def iter_blocks(self) -> Iterator[tuple[int, int, Any]]:
        """(stage, position, block) for every position given."""
        for si, s in enumerate(self.stages):
            for bi, b in enumerate(s.blocks):
                yield si, bi, b

    def with_stage(self, stage: int, new: Any):
        """A copy with one stage replaced; an edited config is no longer the named one, so it has no name."""
        stages = list(self.stages)
        stages[stage] = new
        return replace(self, stages=tuple(stages), name="")

    def with_width(self, stage: int, width: int):
        return self.with_stage(stage, replace(self.stages[stage], width=int(width)))
