"""Search under a latency budget: latency-driven slimming (EfficientFormer), optuna (TPE / NSGA-II) or
evolution (once-for-all).

``search(budget_ms=1.6, table="iphone-lut")`` returns a :class:`SearchResult`; with ``out=`` (or
``runs_root=``) it also writes a run directory (``arch.json``, trace, plots, per-op breakdown,
``report.md``/``report.html`` and, with a supernet, ``subnet.pt``). Unless ``strategy`` is named, a search with a
supernet runs optuna's TPE on inherited accuracy and one without it slims on a proxy (:func:`default_strategy`).

On a table measured on this machine the answer is timed here and searched again at a re-scaled budget while it
misses (:mod:`._measured`; ``measure=False`` turns that off).

Optuna studies default to SQLite in the run directory. Several workers may share one study: give them
the same ``--storage`` URL and ``--study-name`` with ``--resume``. On one machine a SQLite URL works
(``sqlite:////abs/path/study.db``); across machines use a database server, e.g.
``--storage postgresql://user:pass@host/slimformer`` (needs a PostgreSQL driver such as psycopg2).
"""
from __future__ import annotations

from ._actions import Action, all_grows, all_shrinks, importance_shrinks
from ._api import STRATEGIES, CachedPredictor, default_strategy, search, torch_device
from ._evolution import evolve
from ._options import EvalOptions, SearchOptions, StudyOptions
from ._optuna import MODES, SAMPLERS, config_from_params, params_of, run_study
from ._report import format_table, predicted_text, summary_rows, write_run
from ._result import SearchResult, typical_error
from ._scorers import (
                       PROXIES,
                       AlphaScorer,
                       MacsProxy,
                       ParamsProxy,
                       Scorer,
                       SupernetAccuracy,
                       block_importance,
                       get_proxy,
)
from ._slim import slim

__all__ = [  # noqa: RUF022 (grouped by topic)
    "search", "SearchOptions", "StudyOptions", "EvalOptions", "SearchResult", "torch_device", "STRATEGIES", "SAMPLERS", "MODES", "PROXIES", "CachedPredictor",
    "slim", "evolve", "run_study", "default_strategy", "config_from_params", "params_of",
    "Action", "all_shrinks", "all_grows", "importance_shrinks",
    "Scorer", "MacsProxy", "ParamsProxy", "AlphaScorer", "SupernetAccuracy", "block_importance",
    "get_proxy", "typical_error", "write_run", "summary_rows", "format_table", "predicted_text",
]
