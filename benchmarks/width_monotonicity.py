"""Is predicted latency monotone in a stage's width on a table? Where it is not, single slimming steps can stop
above a budget the space can meet (issue 14: ``slimming is stuck at 5.257 ms`` on the EfficientViT 2 x 1 table).

Takes the subnet a search finds at ``--budget-ms`` (or ``--arch``) and prints, for each stage, the predicted
latency of that subnet with the stage at every narrower width (``search._actions.width_jumps``, the moves
slimming falls back on), marking the widths predicted slower than the subnet itself.

    python benchmarks/width_monotonicity.py --table matrix-efficientvit-2x1-onnxruntime --lut-dir runs/luts-s15 \\
        --budget-ms 5.3
"""
from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--lut-dir", default=None)
    ap.add_argument("--budget-ms", type=float, default=None, help="search this budget for the subnet to look at")
    ap.add_argument("--arch", default=None, help="or an arch JSON / preset")
    args = ap.parse_args()

    from slimformer.latency_lut import get_table
    from slimformer.search import search
    from slimformer.search._actions import width_jumps
    from slimformer.supernet import get_arch

    table = get_table(args.table, lut_dir=args.lut_dir)
    cfg = get_arch(args.arch) if args.arch else search(budget_ms=args.budget_ms, table=table).arch
    ms = table.predict(cfg)
    print(f"{cfg.summary()}: predicted {ms:.3f} ms on {table.name}")
    for a in width_jumps(table.space, cfg):
        m = table.predict(a.cfg)
        flag = "  slower than the subnet" if m > ms else ""
        print(f"  stage {a.stage + 1} at width {a.cfg.stages[a.stage].width:4d}: {m:.3f} ms ({m - ms:+.3f}){flag}")


if __name__ == "__main__":
    main()
