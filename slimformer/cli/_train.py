"""CLI for the train command group (see slimformer.train)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this group's subcommands to the top-level subparsers."""
