"""Export, loading, benchmarking and the web demo for searched subnets.

``fold_bn`` (exact deploy folding), ``export_model`` (pt / ONNX / TorchScript / CoreML + model card),
``load`` / ``create_model`` (get a model back), ``run_bench`` (latency and throughput vs timm baselines)
and ``create_app`` (the FastAPI demo) live in private modules re-exported here.
"""
from __future__ import annotations

from ._card import build_card, default_class_names, predicted_latency
from ._export import FORMATS, export_model, export_onnx, export_torchscript
from ._fold import DeployAttention, fold_bn, is_folded
from ._load import OnnxModel, Source, create_model, find_card, load, resolve_source
from ._measure import measure_onnx, measure_torch, ort_session, time_fn

__all__ = [
    "FORMATS",
    "DeployAttention",
    "OnnxModel",
    "Source",
    "build_card",
    "create_model",
    "default_class_names",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "find_card",
    "fold_bn",
    "is_folded",
    "load",
    "measure_onnx",
    "measure_torch",
    "ort_session",
    "predicted_latency",
    "resolve_source",
    "time_fn",
]
