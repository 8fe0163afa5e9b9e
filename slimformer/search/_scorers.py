"""What a search maximises: a training-free proxy, alpha importance, or inherited-weight accuracy.

Every scorer maps an :class:`ArchConfig` to one float, higher is better, and carries a ``name`` that the
output prints next to the number, so a reader always knows what was optimised.

* :class:`MacsProxy` (no supernet): the subnet's multiply-accumulates. Why MACs: it needs no data, no
  weights and no forward pass (microseconds per subnet, so the main job runs in seconds on a fresh
  install), and in the zero-cost-proxy literature (Abdelfattah et al., "Zero-Cost Proxies for
  Lightweight NAS", ICLR 2021; Krishnakumar et al., NAS-Bench-Suite-Zero, 2022) plain FLOPs and
  parameter counts rank architectures about as well as the gradient-based proxies. Under a *latency*
  budget, maximising MACs picks the subnet whose operations are the most latency-efficient on that
  device, which is EfficientFormer's observation that MACs and latency disagree. It is a capacity
  proxy, not accuracy: the output says so.
* :class:`ParamsProxy`: the same idea with parameter counts (``--proxy params``).
* :class:`AlphaImportance` (``--fast``): the architecture parameters of a Gumbel-trained supernet.
* :class:`SupernetAccuracy`: top-1 of the inherited weights on a validation split, after BatchNorm
  recalibration on a few training batches (the accuracy-driven score).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .._errors import SlimformerError
from ..data import evaluate
from ..supernet import ArchConfig, SearchSpace, count_macs, count_params, recalibrate_bn
from ..supernet import arch_key as _arch_key


class Scorer:
    """Base: ``name`` (printed), ``accuracy_driven`` and ``cheap`` (no forward pass) flags, a cache."""

    name = "score"
    unit = ""
    accuracy_driven = False
    cheap = True

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}
        self.calls = 0

    def __call__(self, cfg: ArchConfig) -> float:
        key = cfg.key()
        if key not in self._cache:
            self.calls += 1
            self._cache[key] = float(self._score(cfg))
        return self._cache[key]

    def _score(self, cfg: ArchConfig) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def format(self, value: float) -> str:
        return f"{value:.4g}"


class MacsProxy(Scorer):
    name = "MACs (training-free capacity proxy)"
    unit = "M MACs"

    def _score(self, cfg: ArchConfig) -> float:
        return count_macs(cfg) / 1e6

    def format(self, value: float) -> str:
        return f"{value:.1f} M MACs"


class ParamsProxy(Scorer):
    name = "parameters (training-free capacity proxy)"
    unit = "M params"

    def _score(self, cfg: ArchConfig) -> float:
        return count_params(cfg) / 1e6

    def format(self, value: float) -> str:
        return f"{value:.3f} M params"


PROXIES = {"macs": MacsProxy, "params": ParamsProxy}


def get_proxy(name: str) -> Scorer:
    if name not in PROXIES:
        raise SlimformerError(f"unknown training-free proxy {name!r}: choose from {', '.join(PROXIES)}")
    return PROXIES[name]()


def block_importance(space: SearchSpace, arch_logits: dict[str, torch.Tensor] | None) -> dict[tuple[int, int], dict]:
    """Per position: softmax probabilities of its kinds and EfficientFormer's block importance.

    Importance is ``p_mb4d / p_skip`` where only MB4D is allowed and ``(p_mb3d + p_mb4d) / p_skip``
    where MB3D is allowed (the paper's definition, on softmax-normalised alpha). Without alpha every
    position gets probability 1/len(kinds) and the same importance.
    """
    out: dict[tuple[int, int], dict] = {}
    for si in range(4):
        kinds = space.kinds_at(si)
        for pos in range(space.depths[si]):
            logits = (arch_logits or {}).get(_arch_key(si, pos))
            if logits is None:
                probs = {k: 1.0 / len(kinds) for k in kinds}
            else:
                t = torch.as_tensor(logits, dtype=torch.float64).flatten()
                if t.numel() != len(kinds):
                    raise SlimformerError(f"alpha of position {_arch_key(si, pos)} has {t.numel()} entries, "
                                          f"the space has {len(kinds)} kinds there ({', '.join(kinds)})")
                p = torch.softmax(t, 0).tolist()
                probs = dict(zip(kinds, p))
            p_skip = max(probs["skip"], 1e-12)
            imp = (probs["mb4d"] + probs.get("mb3d", 0.0)) / p_skip
            out[(si, pos)] = {"probs": probs, "importance": imp}
    return out


class AlphaImportance(Scorer):
    """Alpha-importance of a whole subnet, so that every slimming action has a comparable "drop".

    ``score = sum over blocks of value(kind) * mlp_factor * width_factor`` where value is
    ``p_mb4d/p_skip`` for an MB4D block, ``(p_mb3d+p_mb4d)/p_skip`` for an MB3D block (so that
    turning the first MB3D into an MB4D loses ``p_mb3d/p_skip``), ``mlp_factor = (1 + r/r_max)/2``
    (the MLP is about half a block) and ``width_factor = width / max_width`` of the stage.
    """

    name = "alpha importance (architecture parameters, no evaluation)"

    def __init__(self, space: SearchSpace, arch_logits: dict[str, torch.Tensor] | None):
        super().__init__()
        self.space = space
        self.info = block_importance(space, arch_logits)
        self.has_alpha = bool(arch_logits)

    def importance(self, stage: int, pos: int) -> float:
        return self.info[(stage, pos)]["importance"]

    def _score(self, cfg: ArchConfig) -> float:
        sp, total = self.space, 0.0
        for si, pos, b in cfg.iter_blocks():
            if b.kind == "skip":
                continue
            probs = self.info[(si, pos)]["probs"]
            p_skip = max(probs["skip"], 1e-12)
            value = (probs["mb4d"] + (probs.get("mb3d", 0.0) if b.kind == "mb3d" else 0.0)) / p_skip
            mlp = 0.5 * (1.0 + b.mlp_ratio / sp.max_mlp_ratio)
            total += value * mlp * cfg.stages[si].width / sp.max_widths[si]
        return total


class SupernetAccuracy(Scorer):
    """Top-1 of inherited weights after BN recalibration: ``set_active``, ``recalibrate_bn``, evaluate.

    ``recal`` and ``val`` are fixed lists of batches (taken once), so a score depends only on the config.
    """

    name = "top-1 accuracy (inherited weights, BN recalibrated)"
    accuracy_driven = True
    cheap = False

    def __init__(self, model: torch.nn.Module, recal: Iterable, val: Iterable):
        super().__init__()
        self.model = model
        self.recal = list(recal)
        self.val = list(val)
        if not self.val:
            raise SlimformerError("the validation split is empty: accuracy-driven search needs validation images")

    def _score(self, cfg: ArchConfig) -> float:
        self.model.set_active(cfg)
        recalibrate_bn(self.model, self.recal)
        return evaluate(self.model, self.val)

    def format(self, value: float) -> str:
        return f"{100 * value:.2f}% top-1"


def finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0
