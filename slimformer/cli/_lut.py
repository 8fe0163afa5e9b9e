"""CLI for latency tables: ``slimformer lut build|validate|list|show|profile`` (+ bundle/import)."""
from __future__ import annotations

from . import _lut_remote


def register(sub) -> None:
    p = sub.add_parser("lut", help="build, inspect and validate per-device latency lookup tables")
    lut_sub = p.add_subparsers(dest="lut_command", metavar="ACTION", required=True)
    _lut_remote.register(lut_sub)
