"""Does the way torch's OpenMP threads wait change eager latency and its repeatability here? (issue 17: torch
at threads > 1)

torch's CPU kernels run on an OpenMP pool (``torch.__config__.parallel_info()``: "ATen parallel backend:
OpenMP"). Between parallel regions its threads wait by ``OMP_WAIT_POLICY``: ``ACTIVE`` spins, ``PASSIVE``
sleeps at once, unset lets libgomp spin a while (``GOMP_SPINCOUNT``) and then sleep. The policy is read once,
when the OpenMP runtime starts, so each setting runs in its own process. Each process times the same random
default-space subnets in eager torch (``latency_lut.runner``, as ``lut build --backend torch`` does), paired call
by call with the tables' reference subnet, over several rounds, and prints the subnets' medians and how much
each moves between rounds on its own and paired (the figure a table's fidelity is limited by), and a 3x3
convolution alone.

    python benchmarks/torch_omp_wait.py --threads 2 --batch 1 --rounds 8
"""
from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys

POLICIES = ("unset", "PASSIVE", "ACTIVE")


def one_policy(args) -> str:
    """Run in a child process whose environment already carries the policy."""
    from ort_spinning import repeatability, workloads

    from slimformer.latency_lut._measure import runner

    make = functools.partial(runner, backend="torch", threads=args.threads, batch=args.batch)
    nets, ref, conv = workloads(make, seed=args.seed, subnets=args.subnets)
    return f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset'):>7}: " + repeatability(nets, ref, conv, args.rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--subnets", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2, help="times each policy runs, in turn (default 2)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(one_policy(args), flush=True)
        return
    print(f"{args.threads} thread(s), batch {args.batch}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
          flush=True)
    argv = [sys.executable, __file__, "--child", *sys.argv[1:]]
    for _ in range(args.repeat):
        for policy in POLICIES:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "unset":
                env["OMP_WAIT_POLICY"] = policy
            subprocess.run(argv, env=env, check=True)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
