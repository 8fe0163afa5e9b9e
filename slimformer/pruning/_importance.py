"""First-order Taylor importance of structured channel groups (Molchanov et al., 2019).

The importance of a group of parameters is ``|sum over the group of w * dL/dw|`` -- the first-order
estimate of the change in loss when the whole group is removed -- computed per batch and averaged
over ``N`` batches. Groups, per block:

* MB3D attention: every head (its q, k, v rows of ``qkv`` with biases, its ``proj`` columns and its
  attention-bias row); every Q/K pair ``(q_j, k_j)`` inside a head (the two meet in one dot product,
  so they are pruned together); every V channel inside a head together with the matching input
  column of ``proj``; and the head's attention-bias row on its own (kept with the head).
* FFN hidden channel: ``fc1`` row + bias and ``fc2`` column, plus the BatchNorm weight and bias in
  MB4D's Conv-BN MLP.

Scores are kept in the supernet's *maximum* layout (heads x max Q/K, heads x max V, max hidden), so
they index the supernet's tensors directly; channels the analysed subnet does not use score NaN.
The same grouping works on a standalone :class:`EfficientFormerNet` in its own (smaller) layout.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._errors import SlimformerError
from ..supernet import ArchConfig, EfficientFormerNet, Supernet, arch_key, parse_arch_key
from ..supernet._elastic import ElasticMB3D, ElasticMB4D
from ..supernet._model import MB3D, MB4D


@dataclass
class BlockImportance:
    """Taylor scores of one block. Attention arrays are empty for MB4D."""

    kind: str
    ffn: np.ndarray                                   # (hidden,)
    head: np.ndarray = field(default_factory=lambda: np.zeros(0))    # (heads,)
    qk: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (heads, qk)
    v: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))   # (heads, v)
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))     # (heads,) attention-bias rows

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "ffn": _clean(self.ffn)}
        if self.kind == "mb3d":
            d.update(head=_clean(self.head), qk=_clean(self.qk), v=_clean(self.v), bias=_clean(self.bias))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BlockImportance:
        arr = (lambda k: np.array(d[k], dtype=float) if k in d else None)
        if d["kind"] == "mb3d":
            return cls("mb3d", arr("ffn"), arr("head"), arr("qk"), arr("v"), arr("bias"))
        return cls("mb4d", arr("ffn"))


def _clean(a: np.ndarray):
    return np.where(np.isnan(a), None, a).tolist() if np.isnan(a).any() else a.tolist()


@dataclass
class Importance:
    """Per-block scores keyed ``s{stage}.b{pos}`` (position in the stage, skips counted)."""

    blocks: dict[str, BlockImportance]
    batches: int
    arch: ArchConfig | None = None

    def to_dict(self) -> dict:
        return {"batches": self.batches, "arch": self.arch.to_dict() if self.arch else None,
                "blocks": {k: b.to_dict() for k, b in self.blocks.items()}}


# ------------------------------------------------------------------------------- signed group sums
def _rows(p: torch.Tensor) -> torch.Tensor:
    """Sum of ``w * grad`` over everything but the first dim (output channels)."""
    return p.reshape(p.shape[0], -1).sum(1) if p.dim() > 1 else p


def _cols(p: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the second dim (input channels)."""
    return p.transpose(0, 1).reshape(p.shape[1], -1).sum(1)


def _wg(p: torch.Tensor | None) -> torch.Tensor | None:
    if p is None:
        return None
    g = p.grad if p.grad is not None else torch.zeros_like(p)
    return (p.detach() * g).double()


def ffn_sums(fc1_w, fc1_b, fc2_w, bn_w=None, bn_b=None) -> torch.Tensor:
    """Signed Taylor sum per hidden channel (fc1 row + bias, fc2 column, optional BN weight/bias)."""
    s = _rows(_wg(fc1_w)) + _cols(_wg(fc2_w))
    for p in (fc1_b, bn_w, bn_b):
        if p is not None:
            s = s + _wg(p)
    return s


def attention_sums(qkv_w, qkv_b, proj_w, biases, heads: int, qk: int, v: int, *, per_head: bool = True):
    """Signed Taylor sums ``(head, qk, v, bias)`` for one attention layer.

    ``per_head=True``: qkv rows laid out per head as [q | k | v] (EfficientFormer); ``False``: timm
    ViT layout [q (all heads) | k | v], which needs ``qk == v``. ``proj`` columns are per head [v].
    """
    r = _rows(_wg(qkv_w))
    if qkv_b is not None:
        r = r + _wg(qkv_b)
    if per_head:
        r = r.view(heads, 2 * qk + v)
        q, k, vv = r[:, :qk], r[:, qk:2 * qk], r[:, 2 * qk:]
    else:
        q, k, vv = (t.reshape(heads, qk) for t in r.view(3, heads * qk))
    pv = _cols(_wg(proj_w)).view(heads, v)
    b = _rows(_wg(biases)) if biases is not None else torch.zeros(heads, dtype=torch.float64, device=r.device)
    qk_s = q + k
    v_s = vv + pv
    head = qk_s.sum(1) + v_s.sum(1) + b
    return head, qk_s, v_s, b


# ------------------------------------------------------------------------------- block enumeration
def _supernet_blocks(model: Supernet, cfg: ArchConfig):
    """(key, kind, signed-sum function) for every non-skip block of ``cfg`` in the supernet."""
    for si, pos, b in cfg.iter_blocks():
        if b.kind == "skip":
            continue
        position = model.stages[si].blocks[pos]
        m = position.mb4d if b.kind == "mb4d" else position.mb3d
        yield arch_key(si, pos), b.kind, m


def _net_blocks(net: EfficientFormerNet):
    cfg = net.arch
    for si, stage in enumerate(net.stages):
        modules = [m for m in stage.blocks if isinstance(m, (MB4D, MB3D))]
        positions = [pos for pos, b in enumerate(cfg.stages[si].blocks) if b.kind != "skip"]
        for m, pos in zip(modules, positions, strict=True):
            yield arch_key(si, pos), ("mb4d" if isinstance(m, MB4D) else "mb3d"), m


def _block_sums(m: nn.Module):
    """Signed group sums of one block module (elastic or standalone), in the module's own layout."""
    if isinstance(m, ElasticMB4D):
        return ffn_sums(m.fc1.weight, m.fc1.bias, m.fc2.weight, m.norm1.weight, m.norm1.bias), None
    if isinstance(m, MB4D):
        mlp = m.mlp
        return ffn_sums(mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.norm1.weight, mlp.norm1.bias), None
    if isinstance(m, ElasticMB3D):
        att = attention_sums(m.qkv.weight, m.qkv.bias, m.proj.weight, m.attention_biases,
                             m.max_heads, m.max_qk, m.max_v)
        return ffn_sums(m.fc1.weight, m.fc1.bias, m.fc2.weight), att
    if isinstance(m, MB3D):
        t = m.token_mixer
        att = attention_sums(t.qkv.weight, t.qkv.bias, t.proj.weight, t.attention_biases,
                             t.num_heads, t.key_dim, t.val_dim)
        return ffn_sums(m.mlp.fc1.weight, m.mlp.fc1.bias, m.mlp.fc2.weight), att
    raise TypeError(f"no Taylor grouping for {type(m).__name__}")


def _used_mask(model: nn.Module, cfg: ArchConfig | None, key: str, kind: str, m: nn.Module):
    """Boolean masks (ffn, qk, v, head) of the channels the analysed subnet uses (supernet only)."""
    if not isinstance(model, Supernet):
        return None
    si, pos = parse_arch_key(key)
    b, width = cfg.block(si, pos), cfg.stages[si].width
    ffn = np.zeros(m.fc1.weight.shape[0], bool)
    ffn[:b.hidden(width)] = True
    if kind == "mb4d":
        return ffn, None, None, None
    head = np.zeros(m.max_heads, bool)
    head[:b.heads] = True
    qk = np.zeros((m.max_heads, m.max_qk), bool)
    qk[:b.heads, :b.qk_dim] = True
    v = np.zeros((m.max_heads, m.max_v), bool)
    v[:b.heads, :b.v_dim] = True
    return ffn, qk, v, head


# ------------------------------------------------------------------------------- accumulation
def default_loss(out, target) -> torch.Tensor:
    if isinstance(out, tuple):
        out = (out[0] + out[1]) / 2
    return F.cross_entropy(out, target)


def accumulate_taylor(model: nn.Module, batches: Iterable, sums: Callable[[], Iterable[tuple[Any, list]]], *,
                      loss_fn: Callable = default_loss, max_batches: int | None = None,
                      progress: bool = False) -> tuple[dict[Any, list[torch.Tensor]], int]:
    """The Taylor loop shared by the supernet and ViT pruners: for each batch, one backward pass, then
    add every ``(key, [tensors])`` that ``sums()`` yields (called under ``no_grad`` after the backward)
    into per-key running sums. Returns the sums and the number of batches (the caller divides).

    The model runs in eval mode and its gradients are cleared afterwards; no batch is one clear error."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    acc: dict[Any, list[torch.Tensor]] = {}
    n = 0
    it = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, total=max_batches, desc="taylor importance", unit="batch")
    try:
        for batch in it:
            if max_batches is not None and n >= max_batches:
                break
            x, y = batch[0].to(device), batch[1].to(device)
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            with torch.no_grad():
                for key, vals in sums():
                    if key not in acc:
                        acc[key] = [torch.zeros_like(t) for t in vals]
                    for a, t in zip(acc[key], vals):
                        a += t
            n += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if n == 0:
        raise SlimformerError("no batches to compute Taylor importance from (the data loader is empty)")
    return acc, n


def taylor_importance(model: Supernet | EfficientFormerNet, batches: Iterable, *, cfg: ArchConfig | None = None,
                      max_batches: int | None = None, loss_fn: Callable = default_loss,
                      progress: bool = False) -> Importance:
    """Average over batches of ``|sum_group w * dL/dw|`` for every group of every block.

    ``model`` is a :class:`Supernet` (``cfg`` becomes the active subnet; default: the active one) or
    an :class:`EfficientFormerNet`. ``batches`` yields ``(images, targets)``. The model runs in eval
    mode (BatchNorm statistics are not touched) and its weights are not changed; gradients are
    cleared afterwards.
    """
    if isinstance(model, Supernet):
        cfg = cfg or model.active_config
        model.set_active(cfg)
        blocks = list(_supernet_blocks(model, cfg))
    else:
        cfg = model.arch
        blocks = list(_net_blocks(model))
    def sums():
        for key, _kind, m in blocks:
            ffn, att = _block_sums(m)
            yield key, [ffn.abs()] + ([t.abs() for t in att] if att is not None else [])

    acc, n = accumulate_taylor(model, batches, sums, loss_fn=loss_fn, max_batches=max_batches, progress=progress)
    out: dict[str, BlockImportance] = {}
    for key, kind, m in blocks:
        arrs = [(t / n).cpu().numpy() for t in acc[key]]
        mask = _used_mask(model, cfg, key, kind, m)
        if mask is not None:  # channels outside the analysed subnet carry no information: NaN
            arrs[0] = np.where(mask[0], arrs[0], np.nan)
            if kind == "mb3d":
                arrs[1] = np.where(mask[3], arrs[1], np.nan)
                arrs[2] = np.where(mask[1], arrs[2], np.nan)
                arrs[3] = np.where(mask[2], arrs[3], np.nan)
                arrs[4] = np.where(mask[3], arrs[4], np.nan)
        out[key] = BlockImportance(kind, *arrs)
    return Importance(out, n, cfg)
