"""Leave-one-model-out figures of the iPhone 12 estimates (both series), before and after the roofline,
and the L1/L3/L7 predictions.

    python benchmarks/iphone_calibration.py

Refits the non-negative cost model on each published series (``iphone-lut`` <- v1, ``iphone12-ios16``
<- v2), prints every model's published, fitted and left-out prediction, the median and worst absolute
percentage error and Spearman's rho of the left-out predictions, and what the op tables predict for the
EfficientFormer presets next to the published figures. "before" is the previous cost model, refitted
here on the same rows: launch, dense FLOPs (>= the 11 TOPS peak), depthwise FLOPs, norm, elementwise
(softmax included) and layout elements, no memory terms and no per-op roofline. Also checks the shipped
tables carry the same figures (regenerate them with ``scripts/fit_iphone_tables.py`` if not). CPU only;
about a minute.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from slimformer.latency_lut import arch_ops, get_table
from slimformer.latency_lut._iphone import (
    DENSE_FLOOR_MS_PER_GFLOP,
    PRESET_ROWS,
    SERIES,
    fit_nonneg,
    fit_series,
    format_fit,
    in_vocabulary,
    leave_one_out,
    published_rows,
    timm_features,
)
from slimformer.supernet import get_arch

G, M = 1e9, 1e6
BEFORE = (  # the cost model before the roofline (dense FLOPs floored at the peak instead)
    lambda f: f["n_ops"],
    lambda f: (f["conv_flops"] + f["linear_flops"] + f["attn_flops"]) / G,
    lambda f: f["dwconv_flops"] / G,
    lambda f: f["norm_elems"] / M,
    lambda f: (f["act_elems"] + f["elt_elems"] + f["pool_elems"] + f["softmax_elems"]) / M,
    lambda f: f["layout_elems"] / M,
)


def before(series: str) -> str:
    rows = [r for r in published_rows(series) if in_vocabulary(r.timm_name)]
    X = np.array([[fn(timm_features(r)[0]) for fn in BEFORE] for r in rows])
    y = np.array([r.ms for r in rows])
    lower = np.zeros(1 + len(BEFORE))
    lower[2] = DENSE_FLOOR_MS_PER_GFLOP
    loo = leave_one_out(X, y, lower=lower)
    e = np.abs(loo - y) / y * 100
    w = fit_nonneg(X, y, lower=lower)
    l1 = next(i for i, r in enumerate(rows) if r.timm_name == "efficientformer_l1")
    return (f"  before (no memory terms, no roofline): median {np.median(e):.1f}%, worst {e.max():.1f}% "
            f"({rows[int(np.argmax(e))].model}), Spearman rho {spearmanr(loo, y).statistic:.3f}; "
            f"L1 fit {w[0] + X[l1] @ w[1:]:.2f} ms, left out {loo[l1]:.2f} ms")


def main() -> None:
    torch.set_num_threads(1)
    for series, name in SERIES.items():
        fit = fit_series(series)
        published = {r.timm_name: r.ms for r in fit.rows}
        presets = {}
        for p, timm_name in PRESET_ROWS.items():
            keys = arch_ops(get_arch(p))
            costs = {k: fit.work_ms(f) for k, f in zip(keys, map(_op_features, keys))}
            presets[p] = {"predicted_ms": fit.overhead_ms + sum(costs[k] for k in keys),
                          "published_ms": published.get(timm_name)}
        print(format_fit(fit, presets))
        e = fit.error()
        print(before(series))
        print(f"  after  (roofline + memory terms):      median {e['median_abs_pct']:.1f}%, worst "
              f"{e['worst_abs_pct']:.1f}% ({e['worst_model']}), Spearman rho {e['spearman_rho']:.3f}")
        shipped = get_table(name)
        same = all(shipped.error[k] == e[k] for k in ("median_abs_pct", "worst_abs_pct", "spearman_rho"))
        print(f"  shipped table {name!r}: {'same figures' if same else 'DIFFERENT figures: regenerate it'}; "
              f"its L1 prediction {shipped.predict(get_arch('l1')):.2f} ms\n")


def _op_features(key: str):
    from slimformer.latency_lut import build_op
    from slimformer.latency_lut._features import op_features

    return op_features(*build_op(key))


if __name__ == "__main__":
    main()
