"""Taylor pruning of the EfficientViT family: per-head Q/K and V channels and FFN channels, MILP reallocation.

Groups, per block (in the supernet's maximum layout, NaN where the analysed subnet does not reach):

* Q/K pair ``j`` of head ``i``: query row ``j`` and key row ``j`` of the head's qkv ConvNorm (conv rows and
  BN weight/bias) and channel ``j`` of its query depthwise ConvNorm -- the two meet in one dot product;
* V channel ``j`` of head ``i``: value row ``j`` of the qkv ConvNorm and input column ``i * max_v + j``
  of the projection;
* FFN hidden channel ``j`` of ``ffn0`` and of ``ffn1``: ``pw1`` row (conv + BN) and ``pw2`` column.

Reordering (most important first, so the supernet's "first channels" slicing keeps the best ones) is
exact for Q/K pairs and FFN channels. V channels are *not* reordered: in cascaded group attention head
``i``'s output is added channel by channel to head ``i + 1``'s input chunk, so permuting them would change
the function; V options keep the first channels, scored by the prefix of their Taylor sums.
Heads and kernels stay as searched (a head count changes how the width is chunked, which no channel
permutation can express). Options per block: Q/K dims x V dims (those fitting the chunk) x FFN ratios.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import torch

from .._errors import SlimformerError
from ..latency_lut._evit_keys import block_keys
from ..supernet import arch_key, parse_arch_key
from ._importance import TaylorScores, _cols, _rows, _wg, accumulate_taylor, default_loss
from ._mckp import Infeasible, total
from ._realloc import Problem, _calibrate
from ._reorder import order


@dataclass
class EViTBlockImportance:
    ffn0: np.ndarray   # (max_hidden,)
    ffn1: np.ndarray
    qk: np.ndarray     # (max_heads, max_qk)
    v: np.ndarray      # (max_heads, max_v)
    kind: str = "evit"

    def to_dict(self) -> dict:
        clean = (lambda a: np.where(np.isnan(a), None, a).tolist())
        return {"kind": "evit", "ffn0": clean(self.ffn0), "ffn1": clean(self.ffn1), "qk": clean(self.qk),
                "v": clean(self.v)}

    @classmethod
    def from_dict(cls, d: dict) -> EViTBlockImportance:
        arr = (lambda k: np.array(d[k], dtype=float))
        return cls(arr("ffn0"), arr("ffn1"), arr("qk"), arr("v"))


def _cn_rows(cn) -> torch.Tensor:
    """Signed Taylor sum per output channel of an elastic ConvNorm (conv rows + BN weight and bias)."""
    return _rows(_wg(cn.conv.weight)) + _wg(cn.bn.weight) + _wg(cn.bn.bias)


def _ffn(f) -> torch.Tensor:
    return _cn_rows(f.pw1) + _cols(_wg(f.pw2.conv.weight))


def block_sums(m) -> list[torch.Tensor]:
    """``[ffn0, ffn1, qk, v]`` signed sums of one ``ElasticEViTBlock`` (maximum layout)."""
    a = m.mixer
    mq, mv = a.max_qk, a.max_v
    qk, v = [], []
    proj = _cols(_wg(a.proj.conv.weight)).view(len(a.qkvs), mv)
    for i, (qkv, dw) in enumerate(zip(a.qkvs, a.dws)):
        r = _cn_rows(qkv)
        qk.append(r[:mq] + r[mq:2 * mq] + _cn_rows(dw))
        v.append(r[2 * mq:] + proj[i])
    return [_ffn(m.ffn0), _ffn(m.ffn1), torch.stack(qk), torch.stack(v)]


def expand(cfg, space):
    """Every block at its largest Q/K dim, V dim (for its heads and width) and FFN ratio; heads, kernels kept."""
    out = cfg
    for si, pos, b in cfg.iter_blocks():
        vs = dict(space.attention_options(cfg.stages[si].width))[b.heads]
        out = out.with_block(si, pos, replace(b, qk_dim=space.qk_dims[-1], v_dim=vs[-1], ffn_ratio=space.ffn_ratios[-1]))
    return out


def taylor_scores(model, batches, *, cfg=None, max_batches=None, loss_fn=default_loss, progress=False):
    cfg = cfg or model.active_config
    model.set_active(cfg)
    blocks = [(arch_key(si, pos), model.stages[si].blocks[pos], b) for si, pos, b in cfg.iter_blocks()]

    def sums():
        for key, m, _ in blocks:
            yield key, [t.abs() for t in block_sums(m)]

    acc, n = accumulate_taylor(model, batches, sums, loss_fn=loss_fn, max_batches=max_batches, progress=progress)
    out = {}
    for key, m, b in blocks:
        f0, f1, qk, v = [(t / n).cpu().numpy() for t in acc[key]]
        width = cfg.stages[parse_arch_key(key)[0]].width
        hid = np.arange(f0.shape[0]) < b.hidden(width)
        heads = np.arange(qk.shape[0])[:, None] < b.heads
        qk = np.where(heads & (np.arange(qk.shape[1]) < b.qk_dim), qk, np.nan)
        v = np.where(heads & (np.arange(v.shape[1]) < b.v_dim), v, np.nan)
        out[key] = EViTBlockImportance(np.where(hid, f0, np.nan), np.where(hid, f1, np.nan), qk, v)
    return TaylorScores(out, n, cfg)


def _take(t: torch.Tensor, idx: torch.Tensor, dim: int = 0) -> None:
    t.copy_(t.index_select(dim, idx))


@torch.no_grad()
def _permute_cn_out(cn, rows: torch.Tensor) -> None:
    _take(cn.conv.weight, rows)
    for t in (cn.bn.weight, cn.bn.bias, cn.bn.running_mean, cn.bn.running_var):
        _take(t, rows)


def reorder_by_importance(model, imp):
    """Reorder Q/K pairs and FFN channels of every scored block, most important first; returns the
    importance in the new order (the network computes exactly what it did before)."""
    out = {}
    for key, bi in imp.blocks.items():
        si, pos = parse_arch_key(key)
        m = model.stages[si].blocks[pos]
        new = EViTBlockImportance(bi.ffn0.copy(), bi.ffn1.copy(), bi.qk.copy(), bi.v.copy())
        for f, scores, attr in ((m.ffn0, bi.ffn0, "ffn0"), (m.ffn1, bi.ffn1, "ffn1")):
            p = torch.as_tensor(order(scores))
            _permute_cn_out(f.pw1, p)
            with torch.no_grad():
                _take(f.pw2.conv.weight, p, 1)
            setattr(new, attr, scores[p.numpy()])
        mq = m.mixer.max_qk
        for i, (qkv, dw) in enumerate(zip(m.mixer.qkvs, m.mixer.dws)):
            p = torch.as_tensor(order(bi.qk[i]))
            rows = torch.cat([p, p + mq, torch.arange(2 * mq, qkv.conv.weight.shape[0])])
            _permute_cn_out(qkv, rows)
            _permute_cn_out(dw, p)
            new.qk[i] = bi.qk[i][p.numpy()]
        out[key] = new
    return TaylorScores(out, imp.batches, imp.arch)


def block_options(space, width: int, b) -> list:
    vs = dict(space.attention_options(width)).get(b.heads, ())
    return [replace(b, qk_dim=q, v_dim=e, ffn_ratio=r) for q, e, r in itertools.product(space.qk_dims, vs,
                                                                                       space.ffn_ratios)]


def option_value(bi: EViTBlockImportance, b, width: int) -> float:
    h = b.hidden(width)
    return float(np.nansum(bi.ffn0[:h]) + np.nansum(bi.ffn1[:h]) + np.nansum(bi.qk[:b.heads, :b.qk_dim])
                 + np.nansum(bi.v[:b.heads, :b.v_dim]))


def block_ms(table, cfg, si: int, b) -> float:
    return float(sum(table.ms(k) for k in block_keys(b, res=cfg.resolution(si), ws=cfg.window_size(si),
                                                      width=cfg.stages[si].width)))


def build_problem(cfg, space, table, imp):
    keys, where, options, values, costs = [], [], [], [], []
    full, big = 0.0, expand(cfg, space)
    for si, pos, b in cfg.iter_blocks():
        key, width = arch_key(si, pos), cfg.stages[si].width
        if key not in imp.blocks:
            raise SlimformerError(f"the importance scores do not cover block {key}; were they computed for "
                                  "another architecture?")
        opts = block_options(space, width, b)
        keys.append(key)
        where.append((si, pos, width))
        options.append(opts)
        values.append(np.array([option_value(imp.blocks[key], o, width) for o in opts]))
        costs.append(np.array([block_ms(table, cfg, si, o) for o in opts]))
        full += option_value(imp.blocks[key], big.block(si, pos), width)
    p = Problem(cfg, keys, where, options, values, costs, full_value=full)
    _calibrate(p, table)
    return p


def smallest_predicted_ms(cfg, space, table) -> float:
    out = cfg
    for si, pos, b in cfg.iter_blocks():
        out = out.with_block(si, pos, min(block_options(space, cfg.stages[si].width, b),
                                          key=lambda o: block_ms(table, cfg, si, o)))
    return float(table.predict(out))


def uniform(p, cap: float, space) -> list[int]:
    """The largest common fraction of every choice list (Q/K, V, FFN ratio) that fits, as for the MetaBlock."""
    pick = (lambda xs, t: xs[round(float(t) * (len(xs) - 1))])
    for t in np.linspace(1.0, 0.0, 201):
        choice = []
        for (si, pos, width), opts in zip(p.where, p.options):
            b = p.cfg.block(si, pos)
            vs = dict(space.attention_options(width))[b.heads]
            want = replace(b, qk_dim=pick(space.qk_dims, t), v_dim=pick(vs, t), ffn_ratio=pick(space.ffn_ratios, t))
            choice.append(opts.index(want))
        if total(choice, p.costs) <= cap:
            return choice
    raise Infeasible("no uniform ratio fits the budget")
