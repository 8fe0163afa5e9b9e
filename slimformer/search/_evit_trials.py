"""Optuna trial parameters of the EfficientViT family (see :mod:`._optuna` for the study itself).

A trial chooses each stage's width and depth and, for every block position, heads, Q/K dim, V dim, FFN
ratio and one query kernel per head slot. The parameter set is the same for every trial (what TPE's
multivariate model wants); a choice the width does not allow (heads that do not divide it, V above the
chunk) is mapped to the nearest allowed one (:func:`._evit_actions.fit_block`).
"""
from __future__ import annotations

from typing import Any

import optuna

from ..supernet.efficientvit import EfficientViTConfig, EfficientViTSpace, EViTBlockConfig, EViTStageConfig
from ._evit_actions import fit_block


def config_from_params(space: EfficientViTSpace, params: dict[str, Any]) -> EfficientViTConfig:
    stages = []
    for si in range(3):
        w = int(params[f"s{si}.width"])
        blocks = []
        for p in range(int(params[f"s{si}.depth"])):
            k = f"s{si}.b{p}"
            h = int(params[k + ".heads"])
            kernels = tuple(int(params[f"{k}.k{j}"]) for j in range(h))
            b = EViTBlockConfig(h, int(params[k + ".qk"]), int(params[k + ".v"]), float(params[k + ".ffn"]), kernels)
            blocks.append(fit_block(space, w, b))
        stages.append(EViTStageConfig(w, tuple(blocks)))
    return space._arch(stages)


def suggest_config(trial: optuna.Trial, space: EfficientViTSpace) -> EfficientViTConfig:
    params: dict[str, Any] = {}
    for si in range(3):
        params[f"s{si}.width"] = trial.suggest_categorical(f"s{si}.width", list(space.stage_widths[si]))
        params[f"s{si}.depth"] = trial.suggest_int(f"s{si}.depth", 1, space.depths[si])
        for p in range(space.depths[si]):
            k = f"s{si}.b{p}"
            for name, choices in (("heads", space.heads), ("qk", space.qk_dims), ("v", space.v_dims),
                                  ("ffn", space.ffn_ratios)):
                params[f"{k}.{name}"] = trial.suggest_categorical(f"{k}.{name}", list(choices))
            for j in range(space.heads[-1]):
                params[f"{k}.k{j}"] = trial.suggest_categorical(f"{k}.k{j}", list(space.kernels))
    return config_from_params(space, params)


def params_of(space: EfficientViTSpace, cfg: EfficientViTConfig) -> dict[str, Any]:
    """Trial parameters describing ``cfg`` (for ``enqueue_trial``)."""
    params: dict[str, Any] = {}
    for si, st in enumerate(cfg.stages):
        params[f"s{si}.width"], params[f"s{si}.depth"] = st.width, st.depth
        for p in range(space.depths[si]):
            b, k = st.blocks[min(p, st.depth - 1)], f"s{si}.b{p}"
            params.update({f"{k}.heads": b.heads, f"{k}.qk": b.qk_dim, f"{k}.v": b.v_dim, f"{k}.ffn": b.ffn_ratio})
            for j in range(space.heads[-1]):
                params[f"{k}.k{j}"] = b.kernels[min(j, b.heads - 1)]
    return params
