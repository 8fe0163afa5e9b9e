"""Taylor-importance pruning: score channel groups, reorder the supernet, reallocate under a budget."""
from __future__ import annotations

from ._importance import BlockImportance, Importance, taylor_importance
from ._mckp import Infeasible, solve_greedy, solve_milp
from ._realloc import STRATEGIES, Allocation, Problem, allocate, block_options, build_problem, expand, option_value
from ._report import channel_rows, pattern_verdict
from ._run import prune_supernet, summary_line
from ._vit import PrunedAttention, VitChoice, create_vit, mask_vit, prune_vit, vit_allocate, vit_importance
from ._reorder import (BlockPermutation, permutations, permute_importance, reorder_by_importance,
                       reorder_supernet)

__all__ = [
    "BlockImportance", "Importance", "taylor_importance",
    "Infeasible", "solve_greedy", "solve_milp",
    "STRATEGIES", "Allocation", "Problem", "allocate", "block_options", "build_problem", "expand", "option_value",
    "channel_rows", "pattern_verdict", "prune_supernet", "summary_line",
    "PrunedAttention", "VitChoice", "create_vit", "mask_vit", "prune_vit", "vit_allocate", "vit_importance",
    "BlockPermutation", "permutations", "permute_importance", "reorder_by_importance", "reorder_supernet",
]
