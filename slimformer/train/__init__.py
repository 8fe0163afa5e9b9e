"""Training: supernet training (sandwich rule, in-place KD, Gumbel) and fine-tuning."""
from __future__ import annotations

from ._config import FinetuneConfig, TrainConfig
from ._engine import Optim, Targets
from ._finetune import finetune, finetune_step
from ._gumbel import ArchParams, tau_at
from ._supernet_train import sandwich_step, subnets_for_step, train_supernet

__all__ = [
           "ArchParams",
           "FinetuneConfig",
           "Optim",
           "Targets",
           "TrainConfig",
           "finetune",
           "finetune_step",
           "sandwich_step",
           "subnets_for_step",
           "tau_at",
           "train_supernet",
]
