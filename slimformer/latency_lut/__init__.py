"""Per-device latency lookup tables: op keys, measured/imported/estimated tables, fast prediction.

A table stores the latency of every op of a search space on one device (:mod:`._keys` names the ops);
``LatencyTable.predict(cfg)`` sums them. ``build_table`` measures one on this machine
(onnxruntime, torch, or torch on a CUDA GPU), ``validate_table`` checks its fidelity against whole subnets measured end to end.

Names load their module on first use (:mod:`slimformer._lazy`): tables, keys and the registry are
plain Python, so ``slimformer lut list`` runs without torch; measuring, bundles and the shipped iPhone
estimates import what they need when used.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("OP_KINDS", "arch_ops", "arch_ops_by_stage", "block_keys", "op_kind", "parse_key",
                     "space_ops"), "_keys"),
    **dict.fromkeys(("SHIPPED_DIR", "build_target", "get_table", "list_tables", "table_path", "user_lut_dir"),
                    "_registry"),
    **dict.fromkeys(("SCHEMA", "TABLE_KINDS", "LatencyTable"), "_table"),
    **dict.fromkeys(("by_kind", "by_stage", "describe", "profile"), "_report"),
    "build_table": "_build", "calibration_configs": "_build",
    **dict.fromkeys(("fidelity", "fit_correction", "measure_arch", "repeatability"), "_fidelity"),
    **dict.fromkeys(("BACKENDS", "ONNX_EXPORT", "export_onnx", "measure_callable", "measure_module",
                     "measure_overhead", "ort_session", "summarize"), "_measure"),
    **dict.fromkeys(("build_op", "compose_mb3d", "mb3d_parts"), "_ops"),
    "validate_table": "_validate",
    "resolve_table": "_resolve",
    # devices this machine cannot reach (bundle -> runner -> import) and the shipped iPhone estimates
    **dict.fromkeys(("write_bundle", "read_manifest", "import_results"), "_bundle"),
    "estimate_table": "_iphone", "fit_series": "_iphone",
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the names _EXPORTS loads lazily
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
