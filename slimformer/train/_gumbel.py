"""Gumbel-softmax architecture weights: one logit vector alpha per block position over its allowed kinds.

As in EfficientFormer's supernet training (and ProxylessNAS / FBNet for the latency term): each position
(stage s, block p) mixes the kinds ``space.kinds_at(s)`` (``mb4d``, ``mb3d``, ``skip``) with weights
``gumbel_softmax(alpha, tau)``; tau is annealed exponentially from tau0 to tau_min over training; the
optional expected latency sum_p softmax(alpha_p) . [LUT ms of each kind at p] is added to the loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import SlimformerError
from ..supernet import SKIP, SearchSpace, arch_key, mb4d, parse_arch_key


def _name(stage: int, pos: int) -> str:
    return arch_key(stage, pos).replace(".", "_")


class ArchParams(nn.Module):
    """alpha per block position: an ``nn.ParameterDict`` keyed ``s{stage}_b{pos}`` (module names cannot hold
    the dot of ``arch_key``); ``logits()`` / ``load_logits()`` speak ``arch_key`` names, as checkpoints do."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.alpha = nn.ParameterDict({
            _name(s, p): nn.Parameter(torch.zeros(len(space.kinds_at(s))))
            for s in range(4) for p in range(space.depths[s])})
        self.register_buffer("lat_ms", torch.zeros(0), persistent=False)

    def positions(self) -> list[tuple[int, int, str]]:
        return [(*parse_arch_key(k.replace("_", ".")), k) for k in self.alpha]

    def sample(self, tau: float, *, hard: bool = False) -> dict[tuple[int, int], torch.Tensor]:
        """Gumbel-softmax weights per (stage, pos), for ``Supernet.set_mixture``."""
        return {(s, p): F.gumbel_softmax(self.alpha[k], tau=tau, hard=hard) for s, p, k in self.positions()}

    def probs(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) per ``arch_key``."""
        return {k.replace("_", "."): F.softmax(a.detach(), dim=0).cpu() for k, a in self.alpha.items()}

    def entropy(self) -> float:
        """Mean entropy (nats) of softmax(alpha) over positions: log(#kinds) when uniform."""
        ents = [float(-(pr * pr.clamp_min(1e-12).log()).sum()) for pr in self.probs().values()]
        return sum(ents) / max(len(ents), 1)

    def logits(self) -> dict[str, torch.Tensor]:
        return {k.replace("_", "."): a.detach().cpu().clone() for k, a in self.alpha.items()}

    def load_logits(self, logits: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, a in self.alpha.items():
                k = name.replace("_", ".")
                if k not in logits or logits[k].shape != a.shape:
                    raise SlimformerError(f"the checkpoint's architecture logits do not fit this space (at {k})")
                a.copy_(logits[k])

    # ------------------------------------------------------------ expected latency
    def attach_latency(self, table, widths: tuple[int, ...]) -> None:
        """Per-position LUT costs of each kind at ``widths`` (the supernet's widths during the Gumbel step).

        Costs are the blocks' shares of the corrected prediction (scale and per-op term included); the
        ops outside blocks (stem, downsamples, flatten, head) are left out."""
        if table.space_hash != self.space.hash:
            raise SlimformerError(f"latency table {table.name!r} was built for another search space "
                                  f"({table.space_hash}) than the one trained ({self.space.hash})")
        blocks = {"mb4d": mb4d(self.space.max_mlp_ratio), "mb3d": self.space.largest_mb3d(), "skip": SKIP}
        rows = []
        for s, _p, _k in self.positions():
            rows.append([table.block_ms(blocks[kind], stage=s, width=widths[s], corrected=True) for kind in self.space.kinds_at(s)])
        width = max(len(r) for r in rows)
        self.lat_ms = torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float32)

    def expected_latency(self) -> torch.Tensor:
        """sum over positions of softmax(alpha) . LUT ms (differentiable); 0 without a table."""
        if self.lat_ms.numel() == 0:
            return torch.zeros(())
        total = 0
        for i, a in enumerate(self.alpha.values()):
            total = total + (F.softmax(a, dim=0) * self.lat_ms[i, :len(a)].to(a.device)).sum()
        return total

    def importance_table(self) -> str:
        """A text table: per block position, the probability of each kind (the block importances)."""
        kinds = ("mb4d", "mb3d", "skip")
        lines = [f"{'block':<8}" + "".join(f"{k:>8}" for k in kinds) + "   choice"]
        probs = self.probs()
        for s, p, _ in self.positions():
            k = arch_key(s, p)
            pr = probs[k].tolist()
            by_kind = dict(zip(self.space.kinds_at(s), pr, strict=True))
            cells = "".join(f"{by_kind[kd]:>8.3f}" if kd in by_kind else f"{'-':>8}" for kd in kinds)
            lines.append(f"{k:<8}{cells}   {max(by_kind, key=by_kind.get)}")
        return "\n".join(lines)


def tau_at(step: int, total: int, tau0: float, tau_min: float) -> float:
    """Exponential annealing tau0 -> tau_min over ``total`` steps (a function of the step: resume-exact)."""
    frac = min(max(step / max(total - 1, 1), 0.0), 1.0)
    return tau0 * math.exp(frac * math.log(tau_min / tau0))
