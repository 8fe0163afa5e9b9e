"""User-facing errors.

Anything a user can cause (a bad file, an unknown device, an infeasible budget) raises
:class:`SlimformerError`; the CLI prints its message as one line and exits non-zero.
"""
from __future__ import annotations


class SlimformerError(Exception):
    """An error caused by the user's input, with a message meant for a person."""


class ConfigError(SlimformerError, ValueError):
    """An architecture config or search space is invalid; ``faults`` lists every problem found."""

    def __init__(self, faults: list[str] | str):
        self.faults = [faults] if isinstance(faults, str) else list(faults)
        super().__init__("; ".join(self.faults))
