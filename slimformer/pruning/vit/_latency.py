"""A latency table measured for one timm ViT's prunable ops, so a ViT can be pruned to a ms budget.

Every attention option (heads, Q/K dim, V dim) is measured as a :class:`PrunedAttention` on the model's
token count and width, every FFN width as fc1-GELU-fc2, each with ``measure_module`` (the latency
helper's timer: onnxruntime or torch, median). The rest of the model (patch embedding, norms, head) is
``fixed_ms`` = the whole model measured end to end minus its blocks' attention and FFN at full size
(floored at zero). Prediction is ``fixed_ms + sum over blocks``; the table is written to the run dir and
reused on resume. All blocks of a ViT share one shape, so one measurement serves every block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..._errors import SlimformerError
from ...latency_lut import measure_module
from ._prune import PrunedAttention, _check_vit, _dims, vit_options


@dataclass
class VitLatency:
    steps: int
    attn_ms: dict[tuple[int, int, int], float]
    ffn_ms: dict[int, float]
    fixed_ms: float
    full: dict[str, Any] = field(default_factory=dict)   # heads, head_dim, hidden, whole-model ms, backend

    def predict(self, choices) -> float:
        return self.fixed_ms + sum(self.attn_ms[(c.heads, c.qk_dim, c.v_dim)] + self.ffn_ms[c.hidden]
                                   for c in choices)

    def predict_full(self, n_blocks: int) -> float:
        f = self.full
        return self.fixed_ms + n_blocks * (self.attn_ms[(f["heads"], f["head_dim"], f["head_dim"])]
                                           + self.ffn_ms[f["hidden"]])

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "fixed_ms": self.fixed_ms, "full": self.full,
                "attn_ms": {f"{h}-{d}-{e}": v for (h, d, e), v in self.attn_ms.items()},
                "ffn_ms": {str(m): v for m, v in self.ffn_ms.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VitLatency:
        return cls(int(d["steps"]), {tuple(int(x) for x in k.split("-")): float(v) for k, v in d["attn_ms"].items()},
                   {int(k): float(v) for k, v in d["ffn_ms"].items()}, float(d["fixed_ms"]), dict(d.get("full", {})))


class _Ffn(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def measure_vit_latency(model: nn.Module, *, img_size: int, steps: int = 8, backend: str = "onnxruntime",
                        threads: int = 1, repeats: int = 15, progress: bool = True) -> VitLatency:
    blocks = _check_vit(model)
    shapes = {(b.attn.qkv.in_features, *_dims(b.attn), b.mlp.fc1.out_features) for b in blocks}
    if len(shapes) != 1:
        raise SlimformerError("a latency table for a ViT needs every block to have the same shape")
    dim, H, hd, _, hidden = shapes.pop()
    x_img = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        tokens = model.forward_features(x_img).shape[1]
    x = torch.randn(1, tokens, dim)
    att_opts, ffn_opts = vit_options(H, hd, hidden, steps)
    kw = {"backend": backend, "threads": threads, "repeats": repeats}
    it = [("attn", o) for o in att_opts] + [("ffn", m) for m in ffn_opts]
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="measuring ViT ops", unit="op")
    attn, ffn = {}, {}
    scale = float(blocks[0].attn.scale)
    for kind, o in it:
        if kind == "attn":
            m = PrunedAttention(dim, *o, scale=scale, fused_attn=False).eval()
            attn[o] = measure_module(m, (x,), **kw)["median_ms"]
        else:
            ffn[o] = measure_module(_Ffn(dim, o).eval(), (x,), **kw)["median_ms"]
    whole = measure_module(model.eval(), (x_img,), **kw)["median_ms"]
    fixed = max(0.0, whole - len(blocks) * (attn[(H, hd, hd)] + ffn[hidden]))
    return VitLatency(steps, attn, ffn, fixed, {"heads": H, "head_dim": hd, "hidden": hidden, "whole_ms": whole,
                                                 "tokens": tokens, "backend": backend, "threads": threads})


def measure_model_ms(model: nn.Module, *, img_size: int, backend: str = "onnxruntime", threads: int = 1,
                     repeats: int = 15) -> float:
    return measure_module(model.eval(), (torch.randn(1, 3, img_size, img_size),), backend=backend, threads=threads,
                          repeats=repeats)["median_ms"]
