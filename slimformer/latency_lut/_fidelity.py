"""Fidelity of a table: whole subnets measured end to end against the table's predictions.

``measure_arch`` measures a standalone subnet with the same code as single ops; ``fit_correction`` fits
``measured ~ scale * predicted + offset`` on relative error (scipy ``least_squares``, robust loss);
``fidelity`` gives the figures (share within +-5% / +-10%, MAPE, worst error, Kendall tau).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..supernet import ArchConfig, EfficientFormerNet
from ._measure import measure_module


def measure_arch(cfg: ArchConfig, *, backend: str = "onnxruntime", threads: int = 1, batch: int = 1,
                 **kw) -> dict[str, Any]:
    """End-to-end latency of the standalone model of ``cfg`` (random weights; eval mode)."""
    g = torch.Generator().manual_seed(0)
    net = EfficientFormerNet(cfg).eval()
    x = torch.randn((1, cfg.in_chans, cfg.img_size, cfg.img_size), generator=g)
    return measure_module(net, (x,), backend=backend, threads=threads, batch=batch, **kw)


def fit_correction(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """``{"scale", "offset_ms", "samples"}`` minimising the relative residuals of ``scale * p + offset``."""
    from scipy.optimize import least_squares

    p, m = np.asarray(predicted, float), np.asarray(measured, float)

    def resid(z):
        return (z[0] * p + z[1] - m) / m

    # soft-L1 loss: one subnet measured during a burst of load elsewhere does not drag the fit
    sol = least_squares(resid, x0=[1.0, 0.0], bounds=([0.2, -np.inf], [5.0, np.inf]), loss="soft_l1", f_scale=0.02)
    return {"scale": float(sol.x[0]), "offset_ms": float(sol.x[1]), "samples": len(p),
            "method": "robust (soft-L1) fit of relative error, scipy.optimize.least_squares"}


def fidelity(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within +-5% and +-10%, MAPE (%), worst error (%), Kendall tau of predicted vs measured."""
    from scipy.stats import kendalltau

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    err = np.abs(p - m) / m
    tau = float(kendalltau(p, m).statistic) if len(p) > 1 else float("nan")
    return {"n": len(p), "within_5pct": float(np.mean(err <= 0.05)), "within_10pct": float(np.mean(err <= 0.10)),
            "mape_pct": float(100 * err.mean()), "worst_pct": float(100 * err.max()), "kendall_tau": tau}
