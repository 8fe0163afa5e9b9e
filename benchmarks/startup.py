"""CLI start-up: wall-clock median of light commands, and what ``python -X importtime`` says they import.

Each command runs ``--repeats`` times as a fresh ``python -m slimformer ...`` process (interleaved, so
a busy spell of the machine spreads over all of them); the figure is the median wall time, beside
``optuna --help`` and a bare ``python -c pass`` for scale. ``-X importtime`` then gives the cumulative
import time of the heaviest top-level packages for ``--version``. Target: each command under 1 s.

    python benchmarks/startup.py [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (["--version"], ["--help"], ["lut", "list"], ["space", "show"])


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def importtime(argv: list[str], top: int = 5) -> list[tuple[str, float]]:
    """(top-level package, cumulative seconds) for the packages that took longest to import."""
    err = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, check=True).stderr
    cum: dict[str, float] = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if m and "." not in m.group(3):
            cum[m.group(3)] = max(cum.get(m.group(3), 0.0), int(m.group(1)) / 1e6)
    return sorted(cum.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    runs = {" ".join(c): [sys.executable, "-m", "slimformer", *c] for c in COMMANDS}
    runs["python -c pass"] = [sys.executable, "-c", "pass"]
    if shutil.which("optuna"):
        runs["optuna --help"] = ["optuna", "--help"]
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, argv in runs.items():
            times[k].append(wall(argv))
    print(f"wall clock, median of {args.repeats} (min-max), load average {os.getloadavg()[0]:.1f}:")
    for k, ts in times.items():
        print(f"  {k:<16} {statistics.median(ts):6.3f} s  ({min(ts):.3f}-{max(ts):.3f})")
    print("python -X importtime -m slimformer --version, cumulative by top-level package:")
    for name, s in importtime(["-m", "slimformer", "--version"]):
        print(f"  {name:<16} {s:6.3f} s")


if __name__ == "__main__":
    main()
