"""The model card: one JSON beside an exported model saying what it is and how fast it is.

Fields: the config, params, MACs, preprocessing (image size, mean/std), class names, predicted latency
per latency table whose space contains the config, latency measured here (onnxruntime, batch 1, one
thread, median), accuracy when the run recorded one, what was folded, and parity figures.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from .._version import __version__
from ..latency_lut import get_table, list_tables
from ..supernet import ArchConfig, count_macs, count_params

CARD_FORMAT = "slimformer.card/1"
FOLDING = {
    "batchnorm": "folded into the preceding conv: stem conv1/conv2, every downsample conv, MB4D fc1 and fc2",
    "layer_scale": "MB4D ls2 folded into fc2 (after its BN); MB3D ls1 into attention proj, ls2 into mlp.fc2; "
                   "MB4D ls1 kept as one per-channel multiply of (pool(x) - x), which has no layer to fold into",
    "attention": "bias gather precomputed as a constant (heads, N, N); qk scale folded into the query rows of qkv",
    "heads": "classifier and distillation heads averaged into one Linear (exact in eval)",
    "not_folded": "LayerNorm (input-dependent statistics)",
}


def default_class_names(num_classes: int) -> list[str]:
    """ImageNet names (timm ships them) for 1000 classes, else ``class 0``, ``class 1``..."""
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    return [f"class {i}" for i in range(num_classes)]


def predicted_latency(cfg: ArchConfig, *, lut_dir: str | Path | None = None) -> dict[str, Any]:
    """{table name: {ms, kind, device, backend, hash}} for every table whose space contains ``cfg``."""
    out: dict[str, Any] = {}
    try:
        names = list(list_tables(lut_dir))
    except Exception:  # noqa: BLE001
        return {}
    for item in names:
        if isinstance(item, dict):  # list_tables gives {name, kind, device, backend, path, source}
            name, ref = item.get("name"), item.get("path") or item.get("name")
        else:
            name = ref = item if isinstance(item, str) else getattr(item, "name", str(item))
        try:
            table = get_table(str(ref), lut_dir=lut_dir)
            if table.space.check(cfg):
                continue
            out[table.name] = {"ms": round(float(table.predict(cfg)), 4), "kind": table.kind,
                               "device": table.device, "backend": table.backend, "hash": table.hash}
        except Exception as e:  # noqa: BLE001 - one broken table must not stop an export
            out[str(name)] = {"error": f"{type(e).__name__}: {e}"}
    return out


def accuracy_from_run(run_info: dict, run_dir: Path | None) -> dict | None:
    """Top-1 recorded by the run: a metrics file (fine-tuning/evaluation) first, else an accuracy-driven
    search's score (inherited supernet weights, BN recalibrated), else ``None``."""
    keys = ("top1", "val_top1", "best_top1", "accuracy", "acc1", "val_acc")
    if run_dir is not None:
        for name in ("metrics.json", "finetune_metrics.json", "eval.json"):
            p = run_dir / name
            try:
                d = json.loads(p.read_text()) if p.is_file() else None
            except (OSError, json.JSONDecodeError):
                d = None
            if isinstance(d, dict):
                for k in keys:
                    if isinstance(d.get(k), (int, float)):
                        return {"top1": float(d[k]), "source": f"{name}:{k}"}
    for k in keys:
        if isinstance(run_info.get(k), (int, float)):
            return {"top1": float(run_info[k]), "source": f"arch.json:{k}"}
    if isinstance(run_info.get("top1_pruned_no_finetune"), (int, float)):  # a `slimformer prune` run
        return {"top1": float(run_info["top1_pruned_no_finetune"]), "source": "arch.json:top1_pruned_no_finetune",
                "note": "after pruning, before fine-tuning"}
    if run_info.get("accuracy_driven") and isinstance(run_info.get("score"), (int, float)):
        return {"top1": float(run_info["score"]), "source": "arch.json:score",
                "note": run_info.get("score_name") or "search score (inherited supernet weights)"}
    return None


def _preprocess(model) -> dict[str, Any]:
    """The card's preprocessing: the model's timm ``pretrained_cfg`` (what ``resolve_model_data_config`` says)."""
    pc = model.pretrained_cfg
    return {"img_size": pc["input_size"][-1], "in_chans": pc["input_size"][0], "mean": list(pc["mean"]),
            "std": list(pc["std"]), "resize": f"shorter side to img_size / {pc['crop_pct']:g}, center crop img_size",
            "crop_pct": pc["crop_pct"], "interpolation": pc["interpolation"]}


def build_card(src, *, files: dict[str, str], parity: dict[str, float], measured: dict | None,
               extra: dict | None = None, class_names: list[str] | None = None,
               lut_dir: str | Path | None = None, accuracy: dict | None = None) -> dict[str, Any]:
    cfg: ArchConfig = src.model.arch
    names = class_names or default_class_names(cfg.num_classes)
    if len(names) != cfg.num_classes:
        names = default_class_names(cfg.num_classes)
    from ._measure import host_description

    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": cfg.name or "slimformer-subnet",
        "summary": cfg.summary(),
        "arch": cfg.to_dict(),
        "params": count_params(cfg),
        "macs": count_macs(cfg),
        "preprocess": _preprocess(src.model),
        "num_classes": cfg.num_classes,
        "class_names": names,
        "predicted_latency_ms": predicted_latency(cfg, lut_dir=lut_dir),
        "measured_latency_ms": None,
        "accuracy": accuracy or accuracy_from_run(src.run_info, src.run_dir),
        "files": files,
        "parity_max_abs_diff": parity,
        "folding": FOLDING,
        "source": src.origin,
        "search": {k: src.run_info[k] for k in ("predicted_ms", "budget_ms", "device", "table", "table_hash",
                                                  "table_kind", "strategy", "seed", "score", "score_name",
                                                  "accuracy_driven") if k in src.run_info} or None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "slimformer_version": __version__,
    }
    if measured is not None:
        card["measured_latency_ms"] = {**measured, "host": host_description(),
                                       "note": "onnxruntime CPU, batch 1, 1 thread, median over repeats"}
    if extra:
        card.update(extra)
    return card
