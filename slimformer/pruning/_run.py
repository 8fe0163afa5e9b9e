"""``slimformer prune`` on a supernet: importance, reordering, reallocation, a smaller model and a report.

Run directory (``runs/prune-<time>/``): ``arch.json`` (contract 3, the reallocated config),
``subnet.pt`` (state dict of the extracted, physically smaller model), ``supernet.pt`` (the reordered
supernet), ``importance.json`` (Taylor scores, reused by ``--resume``), ``allocations.json`` (MILP,
greedy and uniform side by side), ``channels.csv`` / ``channels.png`` and ``report.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._errors import SlimformerError
from .._io import atomic_torch_save, atomic_write_json, atomic_write_text, make_run_dir, read_json
from .._validate import check_float
from ..data import build_loaders, evaluate
from ..latency_lut import resolve_table
from ..supernet import ArchConfig, count_params, get_arch, load_supernet, recalibrate_bn, save_supernet
from ._importance import BlockImportance, Importance, taylor_importance
from ._mckp import Infeasible
from ._realloc import STRATEGIES, allocate, build_problem, expand, smallest_predicted_ms
from ._reorder import reorder_by_importance
from ._report import rows_markdown, write_channel_artefacts


def resolve_loaders(data: Any, space, *, batch_size: int, seed: int):
    if not isinstance(data, (str, Path)):
        return data
    loaders = build_loaders(str(data), img_size=space.img_size, batch_size=batch_size, seed=seed)
    if loaders.num_classes != space.num_classes:
        raise SlimformerError(f"the data has {loaders.num_classes} classes but the supernet's space has "
                              f"{space.num_classes}")
    return loaders


def _load_importance(path: Path, analysed: ArchConfig, batches: int) -> Importance | None:
    if not path.is_file():
        return None
    d = read_json(path, "importance file")
    if d.get("arch") != analysed.to_dict() or d.get("batches") != batches:
        return None
    blocks = {k: BlockImportance.from_dict(v) for k, v in d["blocks"].items()}
    return Importance(blocks, d["batches"], analysed)


def prune_supernet(*, supernet: str | Path, arch: str | Path | ArchConfig, device: Any, budget_ms: float,
                   data: Any = "builtin", batches: int = 8, batch_size: int = 32, strategy: str = "milp",
                   eval_batches: int | None = 4, seed: int = 0, run_root: str | Path | None = None,
                   run_dir: str | Path | None = None, lut_dir=None, progress: bool = True) -> dict[str, Any]:
    """Prune the searched ``arch`` of ``supernet`` to ``budget_ms`` on ``device``'s table; returns the summary.

    ``run_dir`` given and holding ``importance.json`` for the same inputs: the scores are reused (resume).
    """
    if strategy not in STRATEGIES:
        raise SlimformerError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if batches < 1:
        raise SlimformerError("--batches must be at least 1")
    check_float(budget_ms, "--budget-ms", lo=0, lo_open=True)  # NaN would pass every comparison below
    torch.manual_seed(seed)
    ck = load_supernet(supernet)
    space, sn = ck.space, ck.model
    cfg = arch if isinstance(arch, ArchConfig) else get_arch(arch)
    faults = space.check(cfg)
    if faults:
        raise SlimformerError(f"architecture {cfg.name or arch} is not in the checkpoint's space {space.name!r}: "
                              f"{faults[0]}")
    table = resolve_table(device, space=space, lut_dir=lut_dir)
    floor = smallest_predicted_ms(cfg, space, table)
    if floor > budget_ms:  # before any expensive step
        raise Infeasible(f"budget {budget_ms:g} ms is infeasible: the smallest reallocation of this architecture "
                         f"is predicted at {floor:.3f} ms on {getattr(table, 'name', 'the table')}")
    loaders = resolve_loaders(data, space, batch_size=batch_size, seed=seed)
    analysed = expand(cfg, space)

    out = Path(run_dir) if run_dir is not None else make_run_dir(run_root, "prune")
    out.mkdir(parents=True, exist_ok=True)
    imp = _load_importance(out / "importance.json", analysed, batches)
    acc_searched = None
    if eval_batches != 0:  # the searched subnet as it stands, with its own BN statistics, for comparison
        ref = sn.extract_subnet(cfg)
        recalibrate_bn(ref, loaders.train, max_batches=batches)
        acc_searched = evaluate(ref, loaders.val, max_batches=eval_batches)
    # Taylor scores need the analysed subnet's own BN statistics (the supernet's are shared by all subnets)
    recalibrate_bn(sn.set_active(analysed), loaders.train, max_batches=batches)
    if imp is None:
        imp = taylor_importance(sn, loaders.train, cfg=analysed, max_batches=batches, progress=progress)
        if imp.batches < batches:
            raise SlimformerError(f"the training data gave only {imp.batches} batches, fewer than --batches "
                                  f"{batches}")
        atomic_write_json(out / "importance.json", imp.to_dict())
    sorted_imp = reorder_by_importance(sn, imp)
    problem = build_problem(cfg, space, table, sorted_imp)

    allocations, errors = {}, {}
    for s in STRATEGIES:
        try:
            allocations[s] = allocate(problem, table, budget_ms, strategy=s, space=space)
        except Infeasible as e:
            if s == strategy:
                raise
            errors[s] = str(e)
    best = allocations[strategy]
    net = sn.extract_subnet(best.cfg)
    recalibrate_bn(net, loaders.train, max_batches=batches)
    acc_pruned = evaluate(net, loaders.val, max_batches=eval_batches) if eval_batches != 0 else None
    net.eval()

    summary = {
        "arch": best.cfg.to_dict(), "predicted_ms": best.predicted_ms, "device": getattr(table, "device", str(device)),
        "table_hash": getattr(table, "hash", ""), "table_kind": getattr(table, "kind", ""),
        "table_name": getattr(table, "name", ""), "strategy": f"prune-{strategy}", "seed": seed,
        "score": best.kept, "budget_ms": budget_ms, "importance_kept": best.kept,
        "source_arch": cfg.to_dict(), "source_predicted_ms": float(table.predict(cfg)),
        "analysed_predicted_ms": float(table.predict(analysed)),
        "params": count_params(best.cfg), "source_params": count_params(cfg),
        "top1_source": acc_searched, "top1_pruned_no_finetune": acc_pruned, "taylor_batches": imp.batches,
        "supernet": str(ck.path),
    }
    atomic_write_json(out / "arch.json", summary)
    atomic_write_json(out / "allocations.json", {"allocations": {k: a.to_dict() for k, a in allocations.items()},
                                                 "infeasible": errors, "calibration": {
                                                     "a": problem.a, "b": problem.b, "fixed_ms": problem.fixed_ms}})
    atomic_torch_save(out / "subnet.pt", net.state_dict())
    save_supernet(out / "supernet.pt", sn, arch_logits=ck.arch_logits,
                  meta={**ck.meta, "reordered_by": "taylor", "reorder_arch": analysed.to_dict(),
                        "bn_recalibrated_for": analysed.to_dict()})
    rows, verdict = write_channel_artefacts(out, best.cfg, space,
                                            f"{strategy}: {best.predicted_ms:.3f} ms <= {budget_ms:g} ms")
    atomic_write_text(out / "report.md", _report(summary, allocations, errors, rows, verdict, problem))
    summary["run_dir"] = str(out)
    summary["verdict"] = verdict
    return summary


def _report(s, allocations, errors, rows, verdict, problem) -> str:
    fmt = (lambda x: "-" if x is None else f"{x:.1%}")
    lines = [
        "# Taylor pruning and reallocation", "",
        f"- supernet: `{s['supernet']}`",
        (f"- device table: {s['table_name']} ({s['table_kind']}, hash {str(s['table_hash'])[:12]}), budget "
         f"{s['budget_ms']:g} ms"),
        (f"- searched arch: predicted {s['source_predicted_ms']:.3f} ms, {s['source_params'] / 1e6:.3f} M params, "
         f"top-1 {fmt(s['top1_source'])} (BN recalibrated)"),
        (f"- reallocated ({s['strategy']}): predicted {s['predicted_ms']:.3f} ms, {s['params'] / 1e6:.3f} M params, "
         f"top-1 {fmt(s['top1_pruned_no_finetune'])} before fine-tuning (BN recalibrated)"),
        (f"- importance: first-order Taylor over {s['taylor_batches']} batches on the searched stages with every "
         f"block at its largest dims (predicted {s['analysed_predicted_ms']:.3f} ms)"),
        (f"- latency model: predict = {problem.a:.4g} x (fixed {problem.fixed_ms:.4g} ms + sum of block ms) + "
         f"{problem.b:.4g} ms"),
        "", "## Strategies", "", "| strategy | importance kept | predicted ms |", "|---|---|---|",
    ]
    for k, a in allocations.items():
        lines.append(f"| {k} | {a.kept:.2%} | {a.predicted_ms:.3f} |")
    for k, e in errors.items():
        lines.append(f"| {k} | infeasible: {e} | - |")
    lines += ["", "## Channels kept per block", "", "![channels](channels.png)", "", rows_markdown(rows), "",
              "## Pattern", "", verdict, ""]
    cfg = problem.cfg
    single = sorted({si + 1 for si, _, b in cfg.iter_blocks() if b.kind == "mb3d" and cfg.tokens(si) == 1})
    if single:
        lines += [(f"Note: attention in stage(s) {', '.join(map(str, single))} sees a single token at "
                   f"{cfg.img_size} px, where the softmax is constant: Q/K get no gradient and score zero by "
                   "construction, so the pattern says nothing there."), ""]
    return "\n".join(lines)


def summary_line(s: dict[str, Any]) -> str:
    return (f"pruned {s['source_predicted_ms']:.3f} -> {s['predicted_ms']:.3f} ms (budget {s['budget_ms']:g}), "
            f"{s['source_params'] / 1e6:.3f} -> {s['params'] / 1e6:.3f} M params, importance kept "
            f"{s['importance_kept']:.1%}")


