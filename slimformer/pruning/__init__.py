"""Taylor-importance pruning: score channel groups, reorder the supernet, reallocate under a budget."""
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
from ._vit import PrunedAttention, VitChoice, create_vit, mask_vit, prune_vit, vit_allocate, vit_importance

__all__ = [
                       "STRATEGIES",
                       "Allocation",
                       "BlockImportance",
                       "BlockPermutation",
                       "Importance",
                       "Infeasible",
                       "Problem",
                       "PrunedAttention",
                       "VitChoice",
                       "allocate",
                       "block_options",
                       "build_problem",
                       "channel_rows",
                       "create_vit",
                       "expand",
                       "mask_vit",
                       "option_value",
                       "pattern_verdict",
                       "permutations",
                       "permute_importance",
                       "prune_supernet",
                       "prune_vit",
                       "reorder_by_importance",
                       "reorder_supernet",
                       "solve_greedy",
                       "solve_milp",
                       "summary_line",
                       "taylor_importance",
                       "vit_allocate",
                       "vit_importance",
]
