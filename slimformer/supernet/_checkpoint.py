"""Supernet checkpoints: the one file format that training writes and search, pruning and export read.

A checkpoint is a plain dict (loadable with ``weights_only=True``)::

    {"format": "slimformer.supernet", "version": 1,
     "space": SearchSpace.to_dict(), "space_hash": "...",
     "state_dict": Supernet.state_dict(),
     "arch_logits": {"s3.b2": tensor([...]), ...} or None,   # Gumbel alpha per (stage, position)
     "meta": {...},                                          # free-form: epochs, metrics, command
     ...}                                                    # training adds "train_state"

``arch_logits`` keys are ``arch_key(stage, pos)``; each tensor is over ``space.kinds_at(stage)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._errors import ConfigError, SlimformerError
from .._io import atomic_torch_save
from .._validate import finite_tensors
from ._space import SearchSpace
from ._supernet import Supernet

FORMAT = "slimformer.supernet"
VERSION = 1


def arch_key(stage: int, pos: int) -> str:
    return f"s{stage}.b{pos}"


def parse_arch_key(key: str) -> tuple[int, int]:
    s, b = key.split(".")
    return int(s[1:]), int(b[1:])


@dataclass
class SupernetCheckpoint:
    model: Supernet
    space: SearchSpace
    arch_logits: dict[str, torch.Tensor] | None
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = None


def save_supernet(path: str | Path, model: Supernet, *, arch_logits: dict[str, torch.Tensor] | None = None,
                  meta: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write a supernet checkpoint atomically; ``extra`` entries (e.g. ``train_state``) ride along.
    Weights with NaN or infinite values are refused: a diverged model is never written."""
    state = model.state_dict()
    finite_tensors(state, f"the supernet to save as {Path(path).name}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "space": model.space.to_dict(),
        "space_hash": model.space.hash,
        "state_dict": state,
        "arch_logits": {k: v.detach().cpu() for k, v in arch_logits.items()} if arch_logits else None,
        "meta": meta or {},
        **extra,
    }
    return atomic_torch_save(path, payload)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, with one clear error for a missing, torn or foreign file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt", "supernet.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise SlimformerError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a torn or foreign file
        raise SlimformerError(f"{path} is not a readable checkpoint ({type(e).__name__}); "
                              "was it written by `slimformer train`?") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        hint = " (it looks like a plain state dict: use `--init-from` for pretrained EfficientFormer weights)" \
            if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()) else ""
        raise SlimformerError(f"{path} is not a slimformer supernet checkpoint{hint}")
    if raw.get("version") != VERSION:
        raise SlimformerError(f"{path} has checkpoint format version {raw.get('version')}, "
                              f"this slimformer reads version {VERSION}")
    raw["_path"] = str(path)
    return raw


def load_supernet(path: str | Path, *, space: SearchSpace | None = None) -> SupernetCheckpoint:
    """Load a supernet checkpoint. If ``space`` is given, a checkpoint of another space is an error."""
    raw = read_checkpoint(path)
    try:
        ck_space = SearchSpace.from_dict(raw["space"])
    except (ConfigError, KeyError) as e:
        raise SlimformerError(f"{path}: the checkpoint's search space is malformed ({e})") from None
    if space is not None and space.hash != ck_space.hash:
        raise SlimformerError(f"{path} was trained on search space {ck_space.name!r} ({ck_space.hash}), "
                              f"not on {space.name!r} ({space.hash})")
    sd = raw.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SlimformerError(f"{path}: the checkpoint's state_dict is not a dict of tensors "
                              f"(got {type(sd).__name__})")
    finite_tensors(sd, str(path))
    logits = raw.get("arch_logits")
    if logits is not None and (not isinstance(logits, dict)
                               or not all(isinstance(v, torch.Tensor) for v in logits.values())):
        raise SlimformerError(f"{path}: the checkpoint's arch_logits are not a dict of tensors")
    finite_tensors(logits or {}, f"{path} (arch_logits)")
    model = Supernet(ck_space)
    try:
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, KeyError) as e:
        raise SlimformerError(f"{path}: weights do not fit the checkpoint's own space ({str(e).splitlines()[0]})") \
            from None
    model.eval()
    return SupernetCheckpoint(model=model, space=ck_space, arch_logits=raw.get("arch_logits"),
                              meta=raw.get("meta") or {}, raw=raw, path=Path(raw["_path"]))
