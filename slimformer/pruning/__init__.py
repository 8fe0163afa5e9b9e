"""Taylor-importance pruning: score channel groups, reorder the supernet, reallocate under a budget.

``prune_supernet`` is ``slimformer prune --supernet``: importance on the searched stages, reordering,
an exact multiple-choice knapsack (``scipy.optimize.milp``) against a latency table, a smaller model
and a report. The timm ViT/DeiT pruner (``slimformer prune --model timm:NAME``: the same analysis, pruned
physically to a parameter or measured-latency budget) is the subpackage :mod:`slimformer.pruning.vit`.
"""
from __future__ import annotations

from ._importance import BlockImportance, Importance, taylor_importance
from ._mckp import Infeasible, solve_greedy, solve_milp
from ._realloc import (
    STRATEGIES,
    Allocation,
    Problem,
    allocate,
    block_options,
    build_problem,
    expand,
    option_value,
    smallest_predicted_ms,
)
from ._reorder import (
    BlockPermutation,
    permutations,
    permute_importance,
    reorder_by_importance,
    reorder_supernet,
)
from ._report import channel_rows, pattern_verdict
from ._run import prune_supernet, summary_line

__all__ = [
    "STRATEGIES",
    "Allocation",
    "BlockImportance",
    "BlockPermutation",
    "Importance",
    "Infeasible",
    "Problem",
    "allocate",
    "block_options",
    "build_problem",
    "channel_rows",
    "expand",
    "option_value",
    "pattern_verdict",
    "permutations",
    "permute_importance",
    "prune_supernet",
    "reorder_by_importance",
    "reorder_supernet",
    "smallest_predicted_ms",
    "solve_greedy",
    "solve_milp",
    "summary_line",
    "taylor_importance",
]
