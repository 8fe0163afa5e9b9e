"""CLI for latency tables of devices we cannot reach: ``lut bundle`` and ``lut import``."""
from __future__ import annotations


def register(lut_sub) -> None:
    """Add ``bundle`` and ``import`` to the ``lut`` subparsers (called from ``_lut.register``)."""
