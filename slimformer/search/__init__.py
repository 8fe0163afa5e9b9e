"""Search under a latency budget: latency-driven slimming (EfficientFormer) or optuna (TPE / NSGA-II).

``search(budget_ms=1.6, table="iphone-lut")`` returns a :class:`SearchResult`; with ``out=`` it also
writes a run directory (``arch.json``, trace, plots, per-op breakdown, ``report.md``/``report.html`` and,
with a supernet, ``subnet.pt``).
"""
from __future__ import annotations

from ._actions import Action, all_grows, all_shrinks, importance_shrinks
from ._api import STRATEGIES, CachedPredictor, resolve_table, search
from ._optuna import MODES, SAMPLERS, config_from_params, params_of, run_study
from ._report import format_table, predicted_text, summary_rows, write_run
from ._result import SearchResult, typical_error
from ._scorers import (PROXIES, AlphaImportance, MacsProxy, ParamsProxy, Scorer, SupernetAccuracy,
                       block_importance, get_proxy, top1)
from ._slim import slim

__all__ = [
    "search", "resolve_table", "SearchResult", "STRATEGIES", "SAMPLERS", "MODES", "PROXIES", "CachedPredictor",
    "slim", "run_study", "config_from_params", "params_of",
    "Action", "all_shrinks", "all_grows", "importance_shrinks",
    "Scorer", "MacsProxy", "ParamsProxy", "AlphaImportance", "SupernetAccuracy", "block_importance",
    "get_proxy", "top1", "typical_error", "write_run", "summary_rows", "format_table", "predicted_text",
]
