"""CLI for the export command group (see slimformer.export)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this group's subcommands to the top-level subparsers."""
