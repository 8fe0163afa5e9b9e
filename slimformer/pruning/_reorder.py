"""Reorder the supernet's block-internal channels by importance, so "first k" keeps the most important.

Every permutation acts on channels *inside* a block (heads, Q/K pairs per head, V channels per head,
FFN hidden channels) and is applied consistently to every tensor that carries the channel: ``qkv``
rows (q_j and k_j move together), ``proj`` columns, the per-head attention-bias rows, ``fc1`` rows and
bias, ``fc2`` columns, and in MB4D the hidden BatchNorm's weight, bias and running statistics. Stage
widths are untouched, so every subnet that uses a block's channels in full computes exactly what it
computed before (only the order of a sum changes).

Channels the analysed subnet did not use score NaN; they go after the scored ones in their old order,
so when the analysis ran on a narrower subnet, that subnet keeps exactly its channels too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..supernet import Supernet, parse_arch_key
from ..supernet._elastic import ElasticMB3D, ElasticMB4D
from ._importance import BlockTaylorScores, TaylorScores


def order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; NaN (unscored) last, ties and NaNs in their original order."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-s, kind="stable")


@dataclass
class BlockPermutation:
    ffn: np.ndarray
    head: np.ndarray | None = None      # new head slot i holds old head head[i]
    qk: np.ndarray | None = None        # (heads, qk): per OLD head, the order of its Q/K pairs
    v: np.ndarray | None = None         # (heads, v): per OLD head, the order of its V channels


def permutations(imp: TaylorScores) -> dict[str, BlockPermutation]:
    out = {}
    for key, b in imp.blocks.items():
        if b.kind == "mb4d":
            out[key] = BlockPermutation(order(b.ffn))
        else:
            out[key] = BlockPermutation(order(b.ffn), order(b.head),
                                        np.stack([order(r) for r in b.qk]), np.stack([order(r) for r in b.v]))
    return out


def permute_scores(imp: TaylorScores, perms: dict[str, BlockPermutation]) -> TaylorScores:
    """The scores as they sit after :func:`reorder_supernet` (row i of ``qk`` is the head now in slot i)."""
    blocks = {}
    for key, b in imp.blocks.items():
        p = perms[key]
        if b.kind == "mb4d":
            blocks[key] = BlockTaylorScores("mb4d", b.ffn[p.ffn])
        else:
            h = p.head
            blocks[key] = BlockTaylorScores("mb3d", b.ffn[p.ffn], b.head[h],
                                          np.stack([b.qk[o][p.qk[o]] for o in h]),
                                          np.stack([b.v[o][p.v[o]] for o in h]), b.bias[h])
    return TaylorScores(blocks, imp.batches, imp.arch)


def mb3d_rows_cols(p: BlockPermutation, max_qk: int, max_v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """New-from-old index of ``qkv`` rows and ``proj`` columns for a per-head [q|k|v] layout."""
    per = 2 * max_qk + max_v
    rows, cols = [], []
    for o in p.head:
        base = int(o) * per
        rows += [base + int(j) for j in p.qk[o]]
        rows += [base + max_qk + int(j) for j in p.qk[o]]
        rows += [base + 2 * max_qk + int(j) for j in p.v[o]]
        cols += [int(o) * max_v + int(j) for j in p.v[o]]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


@torch.no_grad()
def _take(t: torch.Tensor, idx: torch.Tensor, dim: int = 0) -> None:
    t.copy_(t.index_select(dim, idx.to(t.device)))


@torch.no_grad()
def reorder_supernet(model: Supernet, perms: dict[str, BlockPermutation]) -> None:
    """Apply ``perms`` (from :func:`permutations`) to the supernet's tensors in place."""
    for key, p in perms.items():
        si, pos = parse_arch_key(key)
        position = model.stages[si].blocks[pos]
        ffn = torch.as_tensor(p.ffn.copy(), dtype=torch.long)
        if p.head is None:
            m: ElasticMB4D = position.mb4d
            for t in (m.fc1.weight, m.fc1.bias, m.norm1.weight, m.norm1.bias, m.norm1.running_mean,
                      m.norm1.running_var):
                _take(t, ffn)
            _take(m.fc2.weight, ffn, 1)
            continue
        m3: ElasticMB3D = position.mb3d
        rows, cols = mb3d_rows_cols(p, m3.max_qk, m3.max_v)
        _take(m3.qkv.weight, rows)
        _take(m3.qkv.bias, rows)
        _take(m3.proj.weight, cols, 1)
        _take(m3.attention_biases, torch.as_tensor(p.head.copy(), dtype=torch.long))
        for t in (m3.fc1.weight, m3.fc1.bias):
            _take(t, ffn)
        _take(m3.fc2.weight, ffn, 1)


def reorder_by_importance(model: Supernet, imp: TaylorScores) -> TaylorScores:
    """Reorder ``model`` in place; return the importance in the new order (sorted, descending)."""
    from ._importance import _evit

    if _evit(model):
        from . import _evit as ev

        return ev.reorder_by_importance(model, imp)
    perms = permutations(imp)
    reorder_supernet(model, perms)
    return permute_scores(imp, perms)
