"""CLI for the prune command group (see slimformer.prune)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this group's subcommands to the top-level subparsers."""
