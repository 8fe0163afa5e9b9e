"""Regenerate the shipped iPhone 12 estimates: ``tables/iphone-lut.json`` (v1) and ``iphone12-ios16.json`` (v2).

    python scripts/fit_iphone_tables.py [--out DIR]

Builds each timm model named in ``slimformer/latency_lut/data/published_iphone12_latency.csv`` without
weights (no hub access), fits the non-negative per-op cost model per series, prices every op of the
default space and writes the two tables. Prints the leave-one-model-out figures and the L1/L3/L7
predictions. Takes well under a minute (features are taken on the meta device).
"""
from __future__ import annotations

import argparse

import torch

from slimformer.latency_lut._iphone import SERIES, estimate_table, fit_series, format_fit
from slimformer.latency_lut._registry import SHIPPED_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(SHIPPED_DIR), help="folder for the two tables (default: the package's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for series, name in SERIES.items():
        fit = fit_series(series, progress=True)
        table = estimate_table(series, fit=fit, progress=True)
        path = table.save(f"{args.out}/{name}.json")
        print(format_fit(fit, table.meta["presets"]))
        print(f"  wrote {path} ({len(table.entries)} ops, hash {table.hash})\n")


if __name__ == "__main__":
    main()
