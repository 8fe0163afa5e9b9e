"""One 1-thread / batch-1 default-space cell, built and validated by whichever slimformer is on the path.

Used to bisect a fidelity change between code versions on one machine, back to back: run it once with
this checkout and once with an older commit's package first on ``PYTHONPATH`` (the API it uses,
``build_table`` and ``validate_table(recalibrate=True)``, is the same in both):

    python benchmarks/lut_code_ab.py --lut-dir /tmp/ab-new
    git worktree add /tmp/old 7bf2355        # the second session's code (94-100 % within ±5 % then)
    PYTHONPATH=/tmp/old python benchmarks/lut_code_ab.py --lut-dir /tmp/ab-old

Prints which package ran (its path), the build time, and the validation's figure lines (without the
correction, with the build's, with the machine's level factored out), on 100 random subnets of the matrix's validation seed.
"""
from __future__ import annotations

import argparse
import json
import os
import time

VALIDATION_SEED = 2026  # lut_fidelity_matrix.py's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lut-dir", required=True, help="a folder of its own (the table is built there)")
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    import slimformer
    from slimformer._errors import SlimformerError
    from slimformer.latency_lut import build_table, get_table, validate_table
    from slimformer.latency_lut._validate import figure_lines  # in the old commit too

    print(f"package: {os.path.dirname(slimformer.__file__)}", flush=True)
    t0 = time.perf_counter()
    try:
        table = get_table("ab-1x1", lut_dir=args.lut_dir)
    except SlimformerError:
        table = build_table(name="ab-1x1", lut_dir=args.lut_dir, progress=False)
    print(f"build {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    r = validate_table(table, samples=args.samples, seed=VALIDATION_SEED, run_dir=os.path.join(args.lut_dir, "val"),
                       progress=False, recalibrate=True)
    print("\n".join(figure_lines(r)))
    print("level:", json.dumps({k: v for k, v in (r.get("level") or {}).items() if k != "method"}))


if __name__ == "__main__":
    main()
