"""Taylor pruning of a timm ViT/DeiT: ``slimformer prune --model timm:NAME``.

Per block the most important heads, Q/K and V dims and FFN channels are kept under a parameter budget or a
latency budget on ops measured here (:func:`measure_vit_latency`); the model is pruned physically
(:func:`prune_vit`) or masked (:func:`mask_vit`). Reuses the supernet pruner's Taylor scores and solvers.
"""
from __future__ import annotations

from ._latency import VitLatency, measure_model_ms, measure_vit_latency
from ._prune import PrunedAttention, VitChoice, create_vit, mask_vit, prune_vit, vit_allocate, vit_importance
from ._run import load_pruned_vit, prune_timm, vit_rows

__all__ = [
    "PrunedAttention",
    "VitChoice",
    "VitLatency",
    "create_vit",
    "load_pruned_vit",
    "mask_vit",
    "measure_model_ms",
    "measure_vit_latency",
    "prune_timm",
    "prune_vit",
    "vit_allocate",
    "vit_importance",
    "vit_rows",
]
