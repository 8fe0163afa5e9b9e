"""CLI for the lut command group (see slimformer.lut)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this group's subcommands to the top-level subparsers."""
