"""Per-device latency lookup tables: op keys, measured/imported/estimated tables, fast prediction.

A table stores the latency of every op of a search space on one device (:mod:`._keys` names the ops);
``LatencyTable.predict(cfg)`` sums them. ``build_table`` measures one on this machine
(onnxruntime or torch), ``validate_table`` checks its fidelity against whole subnets measured end to end.
"""
from __future__ import annotations

from ._keys import OP_KINDS, arch_ops, arch_ops_by_stage, block_keys, op_kind, parse_key, space_ops
from ._build import build_table, calibration_configs
from ._fidelity import fidelity, fit_correction, measure_arch
from ._measure import BACKENDS, export_onnx, measure_module, measure_overhead, ort_session
from ._ops import build_op, compose_mb3d, mb3d_parts
from ._registry import SHIPPED_DIR, build_target, get_table, list_tables, table_path, user_lut_dir
from ._report import by_kind, by_stage, describe, profile
from ._table import SCHEMA, TABLE_KINDS, LatencyTable
from ._validate import validate_table

__all__ = [
    "OP_KINDS", "arch_ops", "arch_ops_by_stage", "block_keys", "op_kind", "parse_key", "space_ops", "build_op", "compose_mb3d",
    "mb3d_parts", "BACKENDS", "export_onnx", "measure_module", "measure_overhead", "ort_session",
    "SHIPPED_DIR", "build_target", "get_table", "list_tables", "table_path", "user_lut_dir", "SCHEMA", "TABLE_KINDS",
    "LatencyTable", "build_table", "calibration_configs", "fidelity", "fit_correction", "measure_arch",
    "validate_table", "by_kind", "by_stage", "describe", "profile",
]
