"""Training: supernet training (sandwich rule, in-place KD, Gumbel) and fine-tuning.

Names load their module on first use (:mod:`slimformer._lazy`), so the CLI reads ``TrainConfig``'s
defaults without importing torch.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "FinetuneConfig": "_config", "TrainConfig": "_config",
    "Optim": "_engine", "Targets": "_engine",
    "finetune": "_finetune", "finetune_step": "_finetune",
    "ArchParams": "_gumbel", "tau_at": "_gumbel",
    **dict.fromkeys(("sandwich_step", "subnets_for_step", "train_supernet"), "_supernet_train"),
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the names _EXPORTS loads lazily
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
