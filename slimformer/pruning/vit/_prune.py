"""The same Taylor analysis on a timm ViT/DeiT, and a physically pruned copy of it.

timm's ``Attention`` lays ``qkv`` rows out as [q (all heads) | k | v], each ``heads x head_dim``. The
groups are those of our MB3D blocks: a head; a Q/K pair inside a head; a V channel inside a head with
its ``proj`` column; an FFN hidden channel (``fc1`` row + bias, ``fc2`` column). Pruning keeps, per
block, the ``h`` most important heads and inside each the ``d`` best Q/K pairs and ``e`` best V
channels (Q/K and V may end up with different per-head dims, which timm's ``Attention`` cannot hold,
so the block gets a :class:`PrunedAttention`), and the ``m`` best FFN channels. The softmax scale stays
the original ``head_dim ** -0.5``: the pruned model computes exactly what the original computes with
the removed channels zeroed (tested).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import SlimformerError
from .._importance import (
    BlockImportance,
    Importance,
    accumulate_taylor,
    attention_sums,
    ffn_sums,
)
from .._mckp import solve_greedy, solve_milp, total
from .._reorder import order


class PrunedAttention(nn.Module):
    """timm-style MHSA whose Q/K per-head dim (``head_dim``) and V per-head dim (``v_dim``) differ."""

    def __init__(self, dim: int, heads: int, qk_dim: int, v_dim: int, *, scale: float, qkv_bias: bool = True,
                 proj_bias: bool = True, fused_attn: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.v_dim, self.scale = heads, qk_dim, v_dim, scale
        self.attn_dim = heads * v_dim
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, heads * (2 * qk_dim + v_dim), bias=qkv_bias)
        self.q_norm = self.k_norm = self.norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(heads * v_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        H, d, e = self.num_heads, self.head_dim, self.v_dim
        q, k, v = self.qkv(x).split([H * d, H * d, H * e], dim=-1)
        q = q.reshape(B, N, H, d).transpose(1, 2)
        k = k.reshape(B, N, H, d).transpose(1, 2)
        v = v.reshape(B, N, H, e).transpose(1, 2)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn + attn_mask if attn_mask.dtype != torch.bool else attn.masked_fill(~attn_mask, -torch.inf)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, H * e))


def _check_vit(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise SlimformerError(f"{type(model).__name__} is not a timm ViT/DeiT (no .blocks)")
    for i, b in enumerate(blocks):
        a, m = getattr(b, "attn", None), getattr(b, "mlp", None)
        ok = (a is not None and m is not None and hasattr(a, "qkv") and hasattr(a, "proj")
              and hasattr(m, "fc1") and hasattr(m, "fc2") and isinstance(m.fc1, nn.Linear))
        if ok:
            ok = all(isinstance(getattr(a, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm", "norm"))
            ok = ok and getattr(a, "gate", None) is None and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity)
        if not ok:
            raise SlimformerError(f"block {i} of {type(model).__name__} is not a plain timm ViT block "
                                  "(qkv/proj attention without q/k norm, fc1/fc2 MLP)")
    return list(blocks)


def _dims(a: nn.Module) -> tuple[int, int, int]:
    if isinstance(a, PrunedAttention):
        return a.num_heads, a.head_dim, a.v_dim
    return a.num_heads, a.head_dim, a.head_dim


def vit_importance(model: nn.Module, batches, *, max_batches: int | None = None, progress: bool = False) -> Importance:
    """Taylor scores of every block of a timm ViT (keys ``b{i}``). Targets of ``-1``... are not special:
    pass real labels, or the model's own predictions (see :func:`self_labels`)."""
    blocks = _check_vit(model)
    if any(isinstance(b.attn, PrunedAttention) for b in blocks):
        raise SlimformerError("analyse the unpruned model")

    def sums():
        for i, b in enumerate(blocks):
            a = b.attn
            H, d, e = _dims(a)
            att = attention_sums(a.qkv.weight, a.qkv.bias, a.proj.weight, None, H, d, e, per_head=False)
            f = ffn_sums(b.mlp.fc1.weight, b.mlp.fc1.bias, b.mlp.fc2.weight)
            yield i, [f.abs()] + [t.abs() for t in att]

    acc, n = accumulate_taylor(model, batches, sums, max_batches=max_batches, progress=progress)
    return Importance({f"b{i}": BlockImportance("mb3d", *[(t / n).cpu().numpy() for t in v])
                       for i, v in acc.items()}, n)


@dataclass(frozen=True)
class VitChoice:
    heads: int
    qk_dim: int
    v_dim: int
    hidden: int


def _steps(full: int, n: int) -> list[int]:
    step = max(1, full // n)
    return sorted({min(full, k * step) for k in range(1, full // step + 1)} | {full})


def attn_params(dim: int, h: int, d: int, e: int, bias: bool) -> int:
    return h * (2 * d + e) * (dim + int(bias)) + h * e * dim


def ffn_params(dim: int, m: int) -> int:
    return m * (dim + 1) + m * dim


def vit_options(H: int, hd: int, hidden: int, steps: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Attention options (heads, Q/K dim, V dim) and FFN widths offered per block."""
    return (list(itertools.product(range(1, H + 1), _steps(hd, steps), _steps(hd, steps))),
            _steps(hidden, 2 * steps))


def vit_allocate(model: nn.Module, imp: Importance, *, budget_params: float | None = None,
                 budget_ms: float | None = None, latency=None, strategy: str = "milp",
                 steps: int = 8) -> tuple[list[VitChoice], dict[str, Any]]:
    """Per block (heads, Q/K dim, V dim, FFN width) keeping most importance within ``budget_params``
    parameters (a count, or a fraction of the model's when <= 1) or within ``budget_ms`` predicted by
    ``latency`` (a :class:`VitLatency` measured for this model's ops)."""
    if (budget_params is None) == (budget_ms is None):
        raise SlimformerError("give exactly one of a parameter budget and a latency budget")
    if budget_ms is not None and latency is None:
        raise SlimformerError("a latency budget needs a latency table measured for this model")
    blocks = _check_vit(model)
    n_total = sum(p.numel() for p in model.parameters())
    values, costs, opts, full_cost = [], [], [], 0.0
    for i, b in enumerate(blocks):
        s = imp.blocks[f"b{i}"]
        H, hd, _ = _dims(b.attn)
        dim, hidden, bias = b.attn.qkv.in_features, b.mlp.fc1.out_features, b.attn.qkv.bias is not None
        qk = np.sort(s.qk, axis=1)[:, ::-1].cumsum(1)
        vv = np.sort(s.v, axis=1)[:, ::-1].cumsum(1)
        hord = order(s.head)
        att_opts, ffn_opts = vit_options(H, hd, hidden, steps if latency is None else latency.steps)
        val = [float(sum(qk[j, d - 1] + vv[j, e - 1] for j in hord[:h])) for h, d, e in att_opts]
        f = np.sort(s.ffn)[::-1].cumsum()
        if latency is None:
            ca = [attn_params(dim, h, d, e, bias) for h, d, e in att_opts]
            cf = [ffn_params(dim, m) for m in ffn_opts]
            full_cost += attn_params(dim, H, hd, hd, bias) + ffn_params(dim, hidden)
        else:
            ca = [latency.attn_ms[o] for o in att_opts]
            cf = [latency.ffn_ms[m] for m in ffn_opts]
        opts += [att_opts, ffn_opts]
        values += [np.array(val), np.array([f[m - 1] for m in ffn_opts])]
        costs += [np.array(ca, float), np.array(cf, float)]
    if latency is None:
        budget = budget_params * n_total if budget_params <= 1 else budget_params
        fixed, unit = n_total - full_cost, "parameters"
    else:
        budget, fixed, unit = budget_ms, latency.fixed_ms, "ms"
    solver = {"milp": solve_milp, "greedy": solve_greedy}.get(strategy)
    if solver is None:
        raise SlimformerError(f"unknown strategy {strategy!r} for a ViT (milp or greedy)")
    floor = fixed + sum(c.min() for c in costs)
    if budget < floor:
        show = (lambda x: f"{int(x):,}") if latency is None else (lambda x: f"{x:.3f}")
        raise SlimformerError(f"{'parameter' if latency is None else 'latency'} budget {show(budget)} {unit} is "
                              f"infeasible: the smallest pruned model needs {show(floor)} {unit}")
    choice = solver(values, costs, budget - fixed)
    out = []
    for i in range(len(blocks)):
        h, d, e = opts[2 * i][choice[2 * i]]
        out.append(VitChoice(h, d, e, opts[2 * i + 1][choice[2 * i + 1]]))
    full_value = sum(float(v.max()) for v in values)
    info = {"params_before": n_total, "importance_kept": total(choice, values) / full_value if full_value > 0
            else float("nan")}
    if latency is None:
        info.update(params_budget=int(budget), params_after=int(fixed + total(choice, costs)))
    else:
        info.update(budget_ms=budget, predicted_ms=fixed + total(choice, costs),
                    predicted_full_ms=latency.predict_full(len(blocks)))
    return out, info


@torch.no_grad()
def _keep_index(imp: BlockImportance, c: VitChoice, H: int, hd: int):
    heads = order(imp.head)[:c.heads]
    qk = [np.sort(order(imp.qk[h])[:c.qk_dim]) for h in heads]
    v = [np.sort(order(imp.v[h])[:c.v_dim]) for h in heads]
    q_rows = [h * hd + j for h, js in zip(heads, qk) for j in js]
    k_rows = [H * hd + r for r in q_rows]
    v_rows = [2 * H * hd + h * hd + j for h, js in zip(heads, v) for j in js]
    cols = [h * hd + j for h, js in zip(heads, v) for j in js]
    ffn = np.sort(order(imp.ffn)[:c.hidden])
    t = (lambda xs: torch.as_tensor(np.asarray(xs, dtype=np.int64)))
    return t(q_rows + k_rows + v_rows), t(cols), t(ffn)


@torch.no_grad()
def prune_vit(model: nn.Module, imp: Importance, choices: list[VitChoice]) -> nn.Module:
    """Physically prune ``model`` in place (heads, Q/K and V per head, FFN) and return it."""
    blocks = _check_vit(model)
    for i, (b, c) in enumerate(zip(blocks, choices, strict=True)):
        a = b.attn
        H, hd, _ = _dims(a)
        rows, cols, ffn = _keep_index(imp.blocks[f"b{i}"], c, H, hd)
        dim = a.qkv.in_features
        new = PrunedAttention(dim, c.heads, c.qk_dim, c.v_dim, scale=float(a.scale), qkv_bias=a.qkv.bias is not None,
                              proj_bias=a.proj.bias is not None, fused_attn=bool(getattr(a, "fused_attn", True)))
        new = new.to(a.qkv.weight.device, a.qkv.weight.dtype)
        new.qkv.weight.copy_(a.qkv.weight[rows])
        if a.qkv.bias is not None:
            new.qkv.bias.copy_(a.qkv.bias[rows])
        new.proj.weight.copy_(a.proj.weight[:, cols])
        if a.proj.bias is not None:
            new.proj.bias.copy_(a.proj.bias)
        b.attn = new
        m = b.mlp
        fc1 = nn.Linear(m.fc1.in_features, c.hidden, bias=m.fc1.bias is not None).to(m.fc1.weight)
        fc2 = nn.Linear(c.hidden, m.fc2.out_features, bias=m.fc2.bias is not None).to(m.fc2.weight)
        fc1.weight.copy_(m.fc1.weight[ffn])
        if m.fc1.bias is not None:
            fc1.bias.copy_(m.fc1.bias[ffn])
        fc2.weight.copy_(m.fc2.weight[:, ffn])
        if m.fc2.bias is not None:
            fc2.bias.copy_(m.fc2.bias)
        m.fc1, m.fc2 = fc1, fc2
    return model


@torch.no_grad()
def mask_vit(model: nn.Module, imp: Importance, choices: list[VitChoice]) -> nn.Module:
    """Zero (in place) every channel :func:`prune_vit` would remove; the reference for the pruned model."""
    for i, (b, c) in enumerate(zip(_check_vit(model), choices, strict=True)):
        a = b.attn
        H, hd, _ = _dims(a)
        rows, cols, ffn = _keep_index(imp.blocks[f"b{i}"], c, H, hd)
        keep = torch.zeros(a.qkv.out_features, dtype=torch.bool)
        keep[rows] = True
        a.qkv.weight[~keep] = 0
        if a.qkv.bias is not None:
            a.qkv.bias[~keep] = 0
        keep_c = torch.zeros(a.proj.in_features, dtype=torch.bool)
        keep_c[cols] = True
        a.proj.weight[:, ~keep_c] = 0
        keep_f = torch.zeros(b.mlp.fc1.out_features, dtype=torch.bool)
        keep_f[ffn] = True
        b.mlp.fc1.weight[~keep_f] = 0
        if b.mlp.fc1.bias is not None:
            b.mlp.fc1.bias[~keep_f] = 0
    return model


def create_vit(spec: str, *, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """``timm:NAME`` (or ``NAME``) built with ``pretrained=False``; weights only from a local file."""
    import timm

    name = spec.removeprefix("timm:")
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:
        raise SlimformerError(f"cannot build timm model {name!r}: {str(e).splitlines()[0]}") from None
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise SlimformerError(f"weights file not found: {p}")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch.load raises many kinds on a junk file
            raise SlimformerError(f"{p} is not a readable weights file ({type(e).__name__})") from None
        for key in ("model", "state_dict", "model_ema"):
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
                break
        try:
            from timm.models import load_checkpoint  # noqa: F401  (kept for its filter conventions)
            from timm.models.vision_transformer import checkpoint_filter_fn
            sd = checkpoint_filter_fn(sd, model)
            model.load_state_dict(sd, strict=True)
        except (RuntimeError, KeyError, ValueError) as e:
            raise SlimformerError(f"{p} does not fit {name}: {str(e).splitlines()[0]}") from None
    _check_vit(model)
    return model.eval()
