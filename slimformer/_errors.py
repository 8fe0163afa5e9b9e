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


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line. An error raised in a DataLoader worker comes back wrapped in
    "Caught ... in DataLoader worker process N. Original Traceback ..."; its last line is the message."""
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return text
    if "Original Traceback" in text:
        last = lines[-1]
        return last.split("Error: ", 1)[1] if "Error: " in last else last
    return "; ".join(lines)
