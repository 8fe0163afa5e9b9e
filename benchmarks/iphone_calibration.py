"""Leave-one-model-out figures of the iPhone 12 estimates (both series) and the L1/L3/L7 predictions.

    python benchmarks/iphone_calibration.py

Refits the non-negative cost model on each published series (``iphone-lut`` <- v1, ``iphone12-ios16``
<- v2), prints every model's published, fitted and left-out prediction, the median and worst absolute
percentage error and Spearman's rho of the left-out predictions, and what the op tables predict for the
EfficientFormer presets next to the published figures. Also checks the shipped tables carry the same
figures (regenerate them with ``scripts/fit_iphone_tables.py`` if not). CPU only; well under a minute.
"""
from __future__ import annotations

import torch

from slimformer.latency_lut import arch_ops, get_table
from slimformer.latency_lut._iphone import PRESET_ROWS, SERIES, fit_series, format_fit, op_costs
from slimformer.supernet import get_arch


def main() -> None:
    torch.set_num_threads(1)
    for series, name in SERIES.items():
        fit = fit_series(series)
        published = {r.timm_name: r.ms for r in fit.rows}
        presets = {}
        for p, timm_name in PRESET_ROWS.items():
            keys = arch_ops(get_arch(p))
            costs = op_costs(fit, sorted(set(keys)))
            presets[p] = {"predicted_ms": fit.overhead_ms + sum(costs[k] for k in keys),
                          "published_ms": published.get(timm_name)}
        print(format_fit(fit, presets))
        shipped = get_table(name)
        same = all(shipped.error[k] == fit.error()[k] for k in ("median_abs_pct", "worst_abs_pct", "spearman_rho"))
        print(f"  shipped table {name!r}: {'same figures' if same else 'DIFFERENT figures: regenerate it'}; "
              f"its L1 prediction {shipped.predict(get_arch('l1')):.2f} ms\n")


if __name__ == "__main__":
    main()
