"""``slimformer search``: the subnet that fits a latency budget on a device (see :mod:`slimformer.search`)."""
from __future__ import annotations

import argparse

from .._validate import NONNEG_INT, POSITIVE_FLOAT, POSITIVE_INT, SEED
from ._options import add_json, add_quiet, add_run_folder, add_table, add_torch_device, print_json, progress


def register(sub) -> None:
    p = sub.add_parser(
        "search", help="find the best subnet under a latency budget on a device (the main job)",
        description="Search the subnet that fits --budget-ms on --table's device. Without --supernet it runs in seconds "
                    "on the default space with a training-free score (MACs); with a trained supernet it is "
                    "accuracy-driven (inherited weights, BN recalibrated).")
    p.add_argument("--budget-ms", type=POSITIVE_FLOAT, required=True, help="latency budget in milliseconds")
    add_table(p, default="iphone-lut")
    p.add_argument("--build", action="store_true",
                   help="build the table first if this machine has none (cpu-ort, cpu-torch), for the supernet's "
                        "space (or the default space)")
    p.add_argument("--space", default=None,
                   help="search space of the table: default, tiny, efficientvit, efficientvit-tiny or a JSON file; "
                        "a table of another space is looked up as <device>-<space> (default: the table's own)")
    p.add_argument("--lut-dir", default=None, help="folder of user tables (default: the cache folder)")
    p.add_argument("--supernet", default=None, help="trained supernet checkpoint (file or training run dir)")
    p.add_argument("--strategy", choices=("slim", "optuna", "evolution"), default=None,
                   help="slim: EfficientFormer's latency-driven slimming (default without a supernet, and with "
                        "--fast); optuna: TPE/NSGA-II (default with a supernet); evolution: once-for-all's "
                        "evolutionary search over the supernet (--trials subnets scored)")
    p.add_argument("--fast", action="store_true", help="slim: rank actions by alpha alone, no evaluation")
    p.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe", help="optuna sampler (default tpe)")
    p.add_argument("--objectives", choices=("constrained", "pareto"), default="constrained",
                   help="optuna: maximise the score under the budget constraint, or score vs latency "
                        "(Pareto front reported)")
    p.add_argument("--trials", type=POSITIVE_INT, default=60,
                   help="optuna: finished trials the study should hold; evolution: subnets scored")
    p.add_argument("--storage", default=None,
                   help="optuna storage URL (default: SQLite study.db in the run dir; share one URL between "
                        "workers, e.g. postgresql://user@host/db across machines)")
    p.add_argument("--study-name", default=None, help="optuna study name (default slimformer-search)")
    p.add_argument("--resume", action="store_true", help="continue the study (with --out of the earlier run "
                   "or the same --storage/--study-name); also how extra workers join a shared study")
    p.add_argument("--proxy", choices=("macs", "params"), default="macs",
                   help="training-free score used without a supernet (default macs)")
    p.add_argument("--data", default="builtin", help="validation/recalibration data: builtin or an ImageFolder")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="images per validation/recalibration batch")
    p.add_argument("--recal-batches", type=NONNEG_INT, default=4, help="train batches for BN recalibration")
    p.add_argument("--val-batches", type=POSITIVE_INT, default=4, help="validation batches per evaluation")
    p.add_argument("--threads", type=POSITIVE_INT, default=None,
                   help="threads the subnet will run at (default: the table's; another prints a warning)")
    p.add_argument("--batch", type=POSITIVE_INT, default=None, help="batch the subnet will run at (default: the table's)")
    p.add_argument("--backend", default=None, help="runtime the subnet will run on (default: the table's)")
    p.add_argument("--measure", action=argparse.BooleanOptionalAction, default=None,
                   help="time the answer on this machine and search again at a re-scaled budget while it lands "
                        "outside [0.97, 1.00] of the budget (default: whenever the table was measured here)")
    add_torch_device(p, old="--compute", help="where supernet evaluation runs: auto (CUDA when available), "
                     "cpu, cuda or cuda:N")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (sampler, data order)")
    add_run_folder(p, "search")
    add_quiet(p, old="--no-progress")
    add_json(p, "the run's arch.json")
    p.set_defaults(func=_search)


def _search(args) -> int:
    from ..search import format_table, search, summary_rows

    r = search(budget_ms=args.budget_ms, table=args.table, lut_dir=args.lut_dir, build=args.build,
               supernet=args.supernet, strategy=args.strategy, fast=args.fast, sampler=args.sampler,
               mode=args.objectives, trials=args.trials, proxy=args.proxy, data=args.data,
               batch_size=args.batch_size, recal_batches=args.recal_batches, val_batches=args.val_batches,
               seed=args.seed, storage=args.storage, study_name=args.study_name, resume=args.resume, out=args.out,
               runs_root=args.runs_root, torch_device=args.torch_device, space=args.space,
               threads=args.threads, batch=args.batch, backend=args.backend, measure=args.measure,
               progress=progress(args))
    if args.json:
        return print_json(r.arch_json())
    print(format_table(summary_rows(r)))
    from ..latency_lut._iphone import iphone_context

    for line in iphone_context(r.arch, r.table_name, lut_dir=args.lut_dir):
        print(line)
    for note in r.notes:
        print(f"note: {note}")
    print(f"wrote {r.run_dir}/arch.json, report.md, report.html"
          + (", subnet.pt" if r.subnet_state is not None else ""))
    return 0
