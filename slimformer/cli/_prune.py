"""``slimformer prune``: Taylor pruning and per-block reallocation (see slimformer.pruning)."""
from __future__ import annotations

from pathlib import Path

from .._errors import SlimformerError
from .._validate import IMG_SIZE, NONNEG_INT, POSITIVE_FLOAT, POSITIVE_INT, SEED
from ..latency_lut._runner import BACKENDS
from ._options import add_json, add_quiet, add_run_folder, add_table, print_json, progress


def register(sub) -> None:
    p = sub.add_parser(
        "prune", help="reallocate heads, Q/K, V and FFN channels by Taylor importance under a budget",
        description="Either a searched subnet of a supernet under a latency budget (--supernet, --arch, --table, "
                    "--budget-ms) or a timm ViT/DeiT (--model timm:NAME) under a parameter budget (--budget-params) or a "
                    "latency budget (--budget-ms, on a table measured here for the model's ops).")
    p.add_argument("--supernet", help="supernet checkpoint (file or training run dir)")
    p.add_argument("--arch", help="searched config: arch.json of a search run, a preset or an ArchConfig JSON")
    add_table(p)
    p.add_argument("--budget-ms", type=POSITIVE_FLOAT, help="latency budget in ms on --table (with --model: on its measured ops)")
    p.add_argument("--lut-dir", default=None, help="folder of user latency tables")
    p.add_argument("--model", help="timm:NAME of a ViT/DeiT to prune instead of a supernet")
    p.add_argument("--weights", default=None, help="local weights file for --model (no hub downloads)")
    p.add_argument("--budget-params", type=POSITIVE_FLOAT,
                   help="parameter budget for --model: a count, or a fraction of the model's when <= 1")
    p.add_argument("--img-size", type=IMG_SIZE, default=None, help="input size for --model (default: the model's)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="--model with --budget-ms: runtime the model's op latencies are measured with")
    p.add_argument("--threads", type=POSITIVE_INT, default=None,
                   help="threads: for --model the measurement's (default 1); with --table the setting the "
                        "subnet will run at (default: the table's; another prints a warning)")
    p.add_argument("--batch", type=POSITIVE_INT, default=None,
                   help="with --table: the batch the subnet will run at (default: the table's)")
    p.add_argument("--data", default="builtin", help="builtin or an ImageFolder path (default builtin)")
    p.add_argument("--batches", type=POSITIVE_INT, default=8, help="batches to accumulate importance over (default 8)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="images per batch")
    p.add_argument("--eval-batches", type=NONNEG_INT, default=4, help="validation batches for top-1 (0: skip)")
    p.add_argument("--strategy", default="milp", choices=("milp", "greedy", "uniform"),
                   help="reallocation solver (default milp, exact)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed")
    add_run_folder(p, "prune")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="reuse the importance scores of an interrupted prune run and write into it")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_prune)


def _prune(args) -> int:
    from ..pruning import PruneOptions, prune_supernet, summary_line

    if args.batches < 1:
        raise SlimformerError("--batches must be at least 1")
    if args.model:
        if args.supernet or args.arch:
            raise SlimformerError("give either --model or --supernet/--arch, not both")
        if (args.budget_params is None) == (args.budget_ms is None):
            raise SlimformerError("--model needs one budget: --budget-params (a count, or a fraction <= 1) "
                                  "or --budget-ms (on a latency table measured here for its ops)")
        if (args.budget_params or 0) < 0 or (args.budget_ms is not None and args.budget_ms <= 0):
            raise SlimformerError("the budget must be positive")
        if args.strategy == "uniform":
            raise SlimformerError("--model supports the milp and greedy strategies")
        from ..pruning.vit import prune_timm

        s = prune_timm(model=args.model, weights=args.weights, budget_params=args.budget_params,
                       budget_ms=args.budget_ms, backend=args.backend or "onnxruntime", threads=args.threads or 1, data=args.data,
                       batches=args.batches, batch_size=args.batch_size, img_size=args.img_size,
                       strategy=args.strategy, seed=args.seed, run_root=args.runs_root, out=args.out,
                       progress=progress(args))
        if args.json:
            return print_json(s)
        budget = (f"budget {s['params_budget']:,}" if "params_budget" in s else
                  f"predicted {s['predicted_ms']:.3f} ms <= {s['budget_ms']:g} ms, measured {s['measured_ms']:.3f} ms")
        print(f"pruned {args.model}: {s['params_before']:,} -> {s['params_after']:,} params ({budget}), "
              f"importance kept {s['importance_kept']:.1%}")
        print(s["verdict"])
        print(f"run directory: {s['run_dir']}")
        return 0
    missing = [f"--{n.replace('_', '-')}" for n in ("supernet", "arch", "table", "budget_ms")
               if getattr(args, n) is None]
    if missing:
        raise SlimformerError(f"prune needs {', '.join(missing).replace('--table', '--table (formerly --device)')} "
                              "(or --model timm:NAME --budget-params N)")
    if args.budget_ms <= 0:
        raise SlimformerError("--budget-ms must be positive")
    if args.resume is not None and not (Path(args.resume) / "importance.json").is_file():
        raise SlimformerError(f"--resume {args.resume}: not a prune run directory with importance.json")
    if args.resume is not None and args.out is not None and Path(args.out) != Path(args.resume):
        raise SlimformerError("--resume RUN_DIR writes into RUN_DIR: give it without --out, or --out the same folder")
    _warn_setting(args)
    r = prune_supernet(PruneOptions(
        supernet=args.supernet, arch=args.arch, table=args.table, budget_ms=args.budget_ms, data=args.data,
        batches=args.batches, batch_size=args.batch_size, strategy=args.strategy,
        eval_batches=args.eval_batches or 0, seed=args.seed, runs_root=args.runs_root,
        out=args.resume if args.resume is not None else args.out, lut_dir=args.lut_dir, progress=progress(args)))
    if args.json:
        return print_json(r.to_dict())
    print(summary_line(r))
    print(r.verdict)
    print(f"run directory: {r.run_dir}")
    return 0


def _warn_setting(args) -> None:
    """One line on stderr when --threads/--batch/--backend differ from the --table table's own."""
    if args.threads is None and args.batch is None and args.backend is None:
        return
    import sys

    from ..latency_lut import get_table

    line = get_table(args.table, lut_dir=args.lut_dir).mismatch(threads=args.threads, batch=args.batch,
                                                              backend=args.backend)
    if line:
        print(line, file=sys.stderr, flush=True)
