"""Regenerate the shipped iPhone 12 estimates: ``tables/iphone-lut.json`` (v1) and ``iphone12-ios16.json`` (v2),
and the same two estimates of the EfficientViT space (``iphone-lut-efficientvit.json``, ``iphone12-ios16-efficientvit.json``).

    python scripts/fit_iphone_tables.py [--out DIR]

Builds each timm model named in ``slimformer/latency_lut/data/published_iphone12_latency.csv`` without
weights (no hub access), fits the non-negative per-op cost model per series, prices every op of the
default and of the ``efficientvit`` space with that one fit and writes the four tables. Prints the
leave-one-model-out figures and the L1/L3/L7 predictions. About three minutes (features are taken on the
meta device; the EfficientViT space has 4114 ops).
"""
from __future__ import annotations

import argparse

import torch

from slimformer.latency_lut._iphone import SERIES, SHIPPED_SPACES, estimate_table, fit_series, format_fit
from slimformer.latency_lut._registry import SHIPPED_DIR
from slimformer.supernet import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(SHIPPED_DIR), help="folder for the tables (default: the package's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for series, name in SERIES.items():
        fit = fit_series(series, progress=True)
        for space, suffix in SHIPPED_SPACES.items():
            table = estimate_table(series, space=get_space(space), fit=fit, progress=True, name=name + suffix)
            path = table.save(f"{args.out}/{name}{suffix}.json")
            if not suffix:
                print(format_fit(fit, table.meta["presets"]))
            print(f"  wrote {path} ({len(table.entries)} ops, hash {table.hash})\n")


if __name__ == "__main__":
    main()
