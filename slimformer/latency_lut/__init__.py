"""Per-device latency lookup tables: op keys, measured/imported/estimated tables, fast prediction.

A table stores the latency of every op of a search space on one device (:mod:`._keys` names the ops);
``LatencyTable.predict(cfg)`` sums them. ``build_table`` measures one on this machine
(onnxruntime or torch), ``validate_table`` checks its fidelity against whole subnets measured end to end.
"""
from __future__ import annotations

from ._build import build_table, calibration_configs
from ._fidelity import fidelity, fit_correction, measure_arch
from ._keys import OP_KINDS, arch_ops, arch_ops_by_stage, block_keys, op_kind, parse_key, space_ops
from ._measure import BACKENDS, export_onnx, measure_module, measure_overhead, ort_session
from ._ops import build_op, compose_mb3d, mb3d_parts
from ._registry import SHIPPED_DIR, build_target, get_table, list_tables, table_path, user_lut_dir
from ._report import by_kind, by_stage, describe, profile
from ._resolve import resolve_table
from ._table import SCHEMA, TABLE_KINDS, LatencyTable
from ._validate import validate_table

__all__ = [
    "BACKENDS",
    "OP_KINDS",
    "SCHEMA",
    "SHIPPED_DIR",
    "TABLE_KINDS",
    "LatencyTable",
    "arch_ops",
    "arch_ops_by_stage",
    "block_keys",
    "build_op",
    "build_table",
    "build_target",
    "by_kind",
    "by_stage",
    "calibration_configs",
    "compose_mb3d",
    "describe",
    "export_onnx",
    "fidelity",
    "fit_correction",
    "get_table",
    "list_tables",
    "mb3d_parts",
    "measure_arch",
    "measure_module",
    "measure_overhead",
    "op_kind",
    "ort_session",
    "parse_key",
    "profile",
    "resolve_table",
    "space_ops",
    "table_path",
    "user_lut_dir",
    "validate_table",
]

# Tables for devices this machine cannot reach (bundle -> runner -> import) and the shipped iPhone
# estimates: loaded on first use, so importing the package stays light.
_LAZY = {"write_bundle": "_bundle", "read_manifest": "_bundle", "import_results": "_bundle",
         "estimate_table": "_iphone", "fit_series": "_iphone"}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
