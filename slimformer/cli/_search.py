"""CLI for the search command group (see slimformer.search)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this group's subcommands to the top-level subparsers."""
