"""Training: data loaders, evaluation, supernet training (sandwich rule, in-place KD, Gumbel) and fine-tuning."""
from __future__ import annotations

from ._builtin import CLASSES as BUILTIN_CLASSES
from ._builtin import BuiltinShapes, render
from ._config import FinetuneConfig, TrainConfig
from ._data import Loaders, build_datasets, build_loaders, evaluate
from ._engine import Optim, Targets
from ._finetune import finetune, finetune_step
from ._gumbel import ArchParams, tau_at
from ._supernet_train import sandwich_step, subnets_for_step, train_supernet

__all__ = [
           "BUILTIN_CLASSES",
           "ArchParams",
           "BuiltinShapes",
           "FinetuneConfig",
           "Loaders",
           "Optim",
           "Targets",
           "TrainConfig",
           "build_datasets",
           "build_loaders",
           "evaluate",
           "finetune",
           "finetune_step",
           "render",
           "sandwich_step",
           "subnets_for_step",
           "tau_at",
           "train_supernet",
]
