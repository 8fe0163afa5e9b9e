"""``slimformer prune`` on a supernet: importance, reordering, reallocation, a smaller model and a report.

Run directory (``runs/prune-<time>/``): ``arch.json`` (contract 3, the reallocated config),
``subnet.pt`` (state dict of the extracted, physically smaller model), ``supernet.pt`` (the reordered
supernet), ``importance.json`` (Taylor scores, reused by ``--resume``), ``allocations.json`` (MILP,
greedy and uniform side by side), ``channels.csv`` / ``channels.png`` and ``report.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import SlimformerError
from .._io import atomic_torch_save, atomic_write_json, atomic_write_text, make_run_dir, read_json
from .._validate import check_float
from ..data import build_loaders, evaluate
from ..latency_lut import resolve_table
from ..supernet import ArchConfig, count_params, get_arch, load_supernet, recalibrate_bn, save_supernet
from ._importance import BlockTaylorScores, TaylorScores, taylor_scores
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


def _load_importance(path: Path, analysed: ArchConfig, batches: int) -> TaylorScores | None:
    if not path.is_file():
        return None
    d = read_json(path, "importance file")
    if d.get("arch") != analysed.to_dict() or d.get("batches") != batches:
        return None
    blocks = {k: BlockTaylorScores.from_dict(v) for k, v in d["blocks"].items()}
    return TaylorScores(blocks, d["batches"], analysed)


@dataclass(frozen=True, kw_only=True)
class PruneOptions:
    """``prune_supernet``'s inputs: the searched ``arch`` of ``supernet``, pruned to ``budget_ms`` on ``table``.

    ``out``: the run folder (holding ``importance.json`` for the same inputs: the scores are reused, a resume);
    else a new ``runs_root/prune-<time>``. ``eval_batches=0``: no top-1 evaluation."""

    supernet: Any
    arch: Any
    table: Any
    budget_ms: float
    data: Any = "builtin"
    batches: int = 8
    batch_size: int = 32
    strategy: str = "milp"
    eval_batches: int | None = 4
    seed: int = 0
    out: str | Path | None = None
    runs_root: str | Path | None = None
    lut_dir: str | Path | None = None
    progress: bool = True


@dataclass
class PruneResult:
    """What a prune run found; ``arch_json()`` is its ``arch.json`` (contract 3)."""

    arch: ArchConfig
    predicted_ms: float
    budget_ms: float
    strategy: str
    seed: int
    device: str
    table_name: str
    table_hash: str
    table_kind: str
    importance_kept: float
    source_arch: ArchConfig
    source_predicted_ms: float
    analysed_predicted_ms: float
    params: int
    source_params: int
    top1_source: float | None
    top1_pruned_no_finetune: float | None
    taylor_batches: int
    supernet: str
    run_dir: Path
    verdict: str = ""

    def arch_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(), "predicted_ms": self.predicted_ms, "device": self.device,
            "table_hash": self.table_hash, "table_kind": self.table_kind, "table_name": self.table_name,
            "strategy": self.strategy, "seed": self.seed, "score": self.importance_kept, "budget_ms": self.budget_ms,
            "importance_kept": self.importance_kept, "source_arch": self.source_arch.to_dict(),
            "source_predicted_ms": self.source_predicted_ms, "analysed_predicted_ms": self.analysed_predicted_ms,
            "params": self.params, "source_params": self.source_params, "top1_source": self.top1_source,
            "top1_pruned_no_finetune": self.top1_pruned_no_finetune, "taylor_batches": self.taylor_batches,
            "supernet": self.supernet,
        }

    def to_dict(self) -> dict[str, Any]:
        """``arch_json()`` plus where the run went and the pattern verdict (``--json``)."""
        return {**self.arch_json(), "run_dir": str(self.run_dir), "verdict": self.verdict}


def prune_supernet(options: PruneOptions | None = None, /, **fields: Any) -> PruneResult:
    """Prune the searched ``arch`` of ``supernet`` to ``budget_ms`` on ``table`` (see :class:`PruneOptions`):
    Taylor scores, reordering, reallocation by every strategy, the chosen one extracted, a report."""
    if options is not None and fields:
        raise SlimformerError("give prune_supernet() either a PruneOptions or keywords, not both")
    o = options if options is not None else PruneOptions(**fields)
    if o.strategy not in STRATEGIES:
        raise SlimformerError(f"unknown strategy {o.strategy!r} (choose from {', '.join(STRATEGIES)})")
    if o.batches < 1:
        raise SlimformerError("--batches must be at least 1")
    check_float(o.budget_ms, "--budget-ms", lo=0, lo_open=True)  # NaN would pass every comparison below
    torch.manual_seed(o.seed)
    ck = load_supernet(o.supernet)
    space, sn = ck.space, ck.model
    cfg = o.arch if hasattr(o.arch, "family") else get_arch(o.arch)  # a config of any family, or a name/file
    faults = space.check(cfg)
    if faults:
        raise SlimformerError(f"architecture {cfg.name or o.arch} is not in the checkpoint's space "
                              f"{space.name!r}: {faults[0]}")
    table = resolve_table(o.table, space=space, lut_dir=o.lut_dir)
    floor = smallest_predicted_ms(cfg, space, table)
    if floor > o.budget_ms:  # before any expensive step
        raise Infeasible(f"budget {o.budget_ms:g} ms is infeasible: the smallest reallocation of this architecture "
                         f"is predicted at {floor:.3f} ms on {getattr(table, 'name', 'the table')}")
    loaders = resolve_loaders(o.data, space, batch_size=o.batch_size, seed=o.seed)
    out = Path(o.out) if o.out is not None else make_run_dir(o.runs_root, "prune")
    out.mkdir(parents=True, exist_ok=True)
    acc_searched, scores = _score(o, sn, cfg, loaders, out)
    problem = build_problem(cfg, space, table, reorder_by_importance(sn, scores))
    allocations, errors = _allocate_all(problem, table, o.budget_ms, o.strategy, space)
    best = allocations[o.strategy]
    net = sn.extract_subnet(best.cfg)
    recalibrate_bn(net, loaders.train, max_batches=o.batches)
    acc_pruned = evaluate(net, loaders.val, max_batches=o.eval_batches) if o.eval_batches != 0 else None
    net.eval()
    analysed = scores.arch
    r = PruneResult(
        arch=best.cfg, predicted_ms=best.predicted_ms, budget_ms=o.budget_ms, strategy=f"prune-{o.strategy}",
        seed=o.seed, device=getattr(table, "device", str(o.table)), table_name=getattr(table, "name", ""),
        table_hash=getattr(table, "hash", ""), table_kind=getattr(table, "kind", ""), importance_kept=best.kept,
        source_arch=cfg, source_predicted_ms=float(table.predict(cfg)),
        analysed_predicted_ms=float(table.predict(analysed)), params=count_params(best.cfg),
        source_params=count_params(cfg), top1_source=acc_searched, top1_pruned_no_finetune=acc_pruned,
        taylor_batches=scores.batches, supernet=str(ck.path), run_dir=out)
    _write_run(r, ck, net, analysed, allocations, errors, problem)
    return r


def _score(o: PruneOptions, sn, cfg: ArchConfig, loaders, out: Path) -> tuple[float | None, TaylorScores]:
    """Top-1 of the searched subnet as it stands, and the Taylor scores of its expansion (reused from ``out``)."""
    analysed = expand(cfg, sn.space)
    scores = _load_importance(out / "importance.json", analysed, o.batches)
    acc_searched = None
    if o.eval_batches != 0:  # the searched subnet as it stands, with its own BN statistics, for comparison
        ref = sn.extract_subnet(cfg)
        recalibrate_bn(ref, loaders.train, max_batches=o.batches)
        acc_searched = evaluate(ref, loaders.val, max_batches=o.eval_batches)
    # Taylor scores need the analysed subnet's own BN statistics (the supernet's are shared by all subnets)
    recalibrate_bn(sn.set_active(analysed), loaders.train, max_batches=o.batches)
    if scores is None:
        scores = taylor_scores(sn, loaders.train, cfg=analysed, max_batches=o.batches, progress=o.progress)
        if scores.batches < o.batches:
            raise SlimformerError(f"the training data gave only {scores.batches} batches, fewer than --batches "
                                  f"{o.batches}")
        atomic_write_json(out / "importance.json", scores.to_dict())
    return acc_searched, scores


def _allocate_all(problem, table, budget_ms: float, strategy: str, space):
    allocations, errors = {}, {}
    for s in STRATEGIES:
        try:
            allocations[s] = allocate(problem, table, budget_ms, strategy=s, space=space)
        except Infeasible as e:
            if s == strategy:
                raise
            errors[s] = str(e)
    return allocations, errors


def _write_run(r: PruneResult, ck, net, analysed, allocations, errors, problem) -> None:
    out = r.run_dir
    summary = r.arch_json()
    atomic_write_json(out / "arch.json", summary)
    atomic_write_json(out / "allocations.json", {"allocations": {k: a.to_dict() for k, a in allocations.items()},
                                                 "infeasible": errors, "calibration": {
                                                     "a": problem.a, "b": problem.b, "fixed_ms": problem.fixed_ms}})
    atomic_torch_save(out / "subnet.pt", net.state_dict())
    save_supernet(out / "supernet.pt", ck.model, arch_logits=ck.arch_logits,
                  meta={**ck.meta, "reordered_by": "taylor", "reorder_arch": analysed.to_dict(),
                        "bn_recalibrated_for": analysed.to_dict()})
    rows, r.verdict = write_channel_artefacts(out, r.arch, ck.space, f"{r.strategy.removeprefix('prune-')}: "
                                              f"{r.predicted_ms:.3f} ms <= {r.budget_ms:g} ms")
    atomic_write_text(out / "report.md", _report(summary, allocations, errors, rows, r.verdict, problem))


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


def summary_line(r: PruneResult) -> str:
    return (f"pruned {r.source_predicted_ms:.3f} -> {r.predicted_ms:.3f} ms (budget {r.budget_ms:g}), "
            f"{r.source_params / 1e6:.3f} -> {r.params / 1e6:.3f} M params, importance kept "
            f"{r.importance_kept:.1%}")


