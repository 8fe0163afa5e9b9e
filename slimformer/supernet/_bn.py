"""BatchNorm recalibration: after weight sharing, a subnet's BN statistics must be its own."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, *, max_batches: int | None = None) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as a plain average over ``batches``.

    ``batches`` yields image tensors or ``(images, targets)`` pairs. For a :class:`Supernet`, call
    ``set_active(cfg)`` first: the statistics of the active channels become the subnet's. Returns the
    number of batches used. The model's train/eval mode is restored afterwards.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    device = next(model.parameters()).device
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    n = 0
    try:
        for batch in batches:
            if max_batches is not None and n >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            n += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    return n
