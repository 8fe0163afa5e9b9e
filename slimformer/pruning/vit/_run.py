"""``slimformer prune --model timm:NAME``: Taylor analysis and physical pruning of a timm ViT/DeiT.

Run directory: ``pruned.pt`` (``{"model", "model_kwargs", "choices", "state_dict"}``; rebuild it with
:func:`load_pruned_vit`), ``importance.json``, ``choices.json``, ``channels.csv`` / ``channels.png``,
``report.md`` and, for a latency budget, ``latency.json`` (the op table measured for this model).
When the data's classes differ from the model's (ImageNet weights, built-in data), the targets are the
model's own predictions, so the scores measure how much each group matters to what the model outputs.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._errors import SlimformerError
from ..._io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, make_run_dir
from ..._validate import check_float
from ...data import build_loaders
from .._importance import BlockTaylorScores, TaylorScores
from .._report import channel_plot, pattern_verdict, rows_csv, rows_markdown
from ._latency import measure_model_ms, measure_vit_latency
from ._prune import VitChoice, create_vit, prune_vit, vit_allocate, vit_importance


class _SelfLabels:
    """Wraps ``(x, y)`` batches, replacing ``y`` with the model's top-1 prediction."""

    def __init__(self, model, batches):
        self.model, self.batches = model, batches

    def __iter__(self):
        for x, _ in self.batches:
            with torch.no_grad():
                y = self.model(x).argmax(1)
            yield x, y


def vit_rows(model, choices: list[VitChoice]) -> list[dict[str, Any]]:
    rows = []
    for i, (b, c) in enumerate(zip(model.blocks, choices)):
        dim = b.attn.qkv.in_features
        H, hd = b.attn.num_heads, b.attn.head_dim
        q, v = c.heads * c.qk_dim, c.heads * c.v_dim
        rows.append({"block": f"b{i}", "kind": "mb3d", "width": dim, "heads": c.heads, "qk_dim": c.qk_dim,
                     "v_dim": c.v_dim, "Q": q, "K": q, "V": v, "FFN": c.hidden, "Q/C": q / dim, "K/C": q / dim,
                     "V/C": v / dim, "FFN/C": c.hidden / dim, "qk_kept": q / (H * hd), "v_kept": v / (H * hd)})
    return rows


def load_pruned_vit(path: str | Path):
    """Rebuild a model written by :func:`prune_timm` (``pruned.pt``)."""
    if not Path(path).is_file():
        raise SlimformerError(f"pruned model not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch.load raises many kinds on a junk file
        raw = None
    if not isinstance(raw, dict) or "choices" not in raw:
        raise SlimformerError(f"{path} is not a pruned ViT written by `slimformer prune --model`")
    model = create_vit(raw["model"], **raw.get("model_kwargs", {}))
    choices = [VitChoice(**c) for c in raw["choices"]]
    zero = TaylorScores({f"b{i}": BlockTaylorScores(
        "mb3d", np.zeros(b.mlp.fc1.out_features), np.zeros(b.attn.num_heads),
        np.zeros((b.attn.num_heads, b.attn.head_dim)), np.zeros((b.attn.num_heads, b.attn.head_dim)),
        np.zeros(b.attn.num_heads)) for i, b in enumerate(model.blocks)}, 1)
    prune_vit(model, zero, choices)
    model.load_state_dict(raw["state_dict"], strict=True)
    return model.eval()


def _check_budgets(budget_params: float | None, budget_ms: float | None) -> None:
    if (budget_params is None) == (budget_ms is None):
        raise SlimformerError("give exactly one of --budget-params and --budget-ms")
    for name, v in (("--budget-params", budget_params), ("--budget-ms", budget_ms)):
        if v is not None:
            check_float(v, name, lo=0, lo_open=True)


def _importance_batches(net, data: Any, *, size: int, batch_size: int, seed: int) -> tuple[Any, bool]:
    """The batches the Taylor scores are taken on, and whether their targets are the model's own predictions
    (when the data's classes differ from the model's)."""
    if isinstance(data, (str, Path)):
        loaders = build_loaders(str(data), img_size=size, batch_size=batch_size, seed=seed)
        classes, train = loaders.num_classes, loaders.train
    else:
        classes, train = getattr(data, "num_classes", None), data.train
    self_labels = classes != getattr(net, "num_classes", None)
    return (_SelfLabels(net, train) if self_labels else train), self_labels


def _verdict(rows: list[dict[str, Any]], weights) -> str:
    verdict = pattern_verdict(rows)
    if weights is None:
        verdict += (" The weights are a random initialisation (no --weights given): near-uniform attention gives "
                    "Q/K little gradient, so this reflects the initialisation, not what training learned.")
    return verdict


def _report(*, model: str, weights, data, size: int, self_labels: bool, imp, info: dict[str, Any], strategy: str,
            latency, backend: str, threads: int, budget_ms: float | None, rows: list[dict[str, Any]],
            verdict: str) -> str:
    """``report.md`` of a pruning run."""
    return "\n".join([
        f"# Taylor pruning of {model}", "",
        f"- weights: {weights or 'random init (no --weights given)'}",
        (f"- importance: {imp.batches} batches of {size} px {data if isinstance(data, str) else 'data'}, targets "
         f"{'the model own predictions (classes differ)' if self_labels else 'the labels'}"),
        f"- parameters: {info['params_before']:,} -> {info['params_after']:,}"
        + (f" (budget {info['params_budget']:,})" if "params_budget" in info else ""),
        f"- importance kept {info['importance_kept']:.1%} ({strategy})",
        *([(f"- latency ({backend}, {threads} thread(s)): predicted {info['predicted_ms']:.3f} ms "
            f"(full model predicted {info['predicted_full_ms']:.3f} ms, measured "
            f"{latency.full.get('whole_ms', float('nan')):.3f} ms), "
            f"budget {budget_ms:g} ms; pruned model measured {info['measured_ms']:.3f} ms")] if latency else []),
        "",
        "![channels](channels.png)", "", rows_markdown(rows), "", "## Pattern", "", verdict, ""])


def _write_run(out: Path, *, model: str, kwargs: dict, imp, choices: list[VitChoice], info: dict[str, Any],
               pruned, rows: list[dict[str, Any]], report: str) -> None:
    """Everything a pruning run leaves but ``latency.json`` (written as soon as it is measured)."""
    atomic_write_json(out / "importance.json", imp.to_dict())
    atomic_write_json(out / "choices.json", {"model": model, "choices": [asdict(c) for c in choices], **info})
    atomic_torch_save(out / "pruned.pt", {"model": model, "model_kwargs": kwargs,
                                          "choices": [asdict(c) for c in choices], "state_dict": pruned.state_dict()})
    atomic_write_text(out / "channels.csv", rows_csv(rows))
    atomic_write_bytes(out / "channels.png", channel_plot(rows, f"{model}: {info['params_after'] / 1e6:.2f} M params"))
    atomic_write_text(out / "report.md", report)


def prune_timm(*, model: str, weights: str | Path | None = None, budget_params: float | None = None,
               budget_ms: float | None = None, backend: str = "onnxruntime", threads: int = 1, steps: int = 8,
               repeats: int = 15, latency=None,
               data: Any = "builtin", batches: int = 4, batch_size: int = 16, img_size: int | None = None,
               strategy: str = "milp", seed: int = 0, run_root: str | Path | None = None,
               out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Taylor-prune a timm ViT to ``budget_params`` (count or fraction) or ``budget_ms`` (on a latency
    table measured here for the model's ops with ``backend``, or the given ``latency``); returns the summary.
    Writes into ``out``, or a new ``run_root/prune-vit-<time>``."""
    _check_budgets(budget_params, budget_ms)
    torch.manual_seed(seed)
    kwargs = {"img_size": img_size} if img_size else {}
    net = create_vit(model, weights=weights, **kwargs)
    size = net.patch_embed.img_size[0] if hasattr(net, "patch_embed") else (img_size or 224)
    source, self_labels = _importance_batches(net, data, size=size, batch_size=batch_size, seed=seed)
    imp = vit_importance(net, source, max_batches=batches, progress=progress)
    out = Path(out) if out is not None else make_run_dir(run_root, "prune-vit")
    out.mkdir(parents=True, exist_ok=True)
    if budget_ms is not None and latency is None:
        latency = measure_vit_latency(net, img_size=size, steps=steps, backend=backend, threads=threads,
                                      repeats=repeats, progress=progress)
    if latency is not None:
        atomic_write_json(out / "latency.json", latency.to_dict())
    choices, info = vit_allocate(net, imp, budget_params=budget_params, budget_ms=budget_ms, latency=latency,
                                 strategy=strategy, steps=steps)
    rows = vit_rows(net, choices)  # before pruning: shares are of the original heads x head_dim
    pruned = prune_vit(net, imp, choices)
    info["params_after"] = sum(p.numel() for p in pruned.parameters())
    with torch.no_grad():
        pruned(torch.zeros(1, 3, size, size))  # it runs
    if latency is not None:
        info["measured_ms"] = measure_model_ms(pruned, img_size=size, backend=backend, threads=threads,
                                              repeats=repeats)
    verdict = _verdict(rows, weights)
    report = _report(model=model, weights=weights, data=data, size=size, self_labels=self_labels, imp=imp, info=info,
                     strategy=strategy, latency=latency, backend=backend, threads=threads, budget_ms=budget_ms,
                     rows=rows, verdict=verdict)
    _write_run(out, model=model, kwargs=kwargs, imp=imp, choices=choices, info=info, pruned=pruned, rows=rows,
               report=report)
    return {"run_dir": str(out), **info, "verdict": verdict}
