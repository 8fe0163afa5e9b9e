"""``SearchResult``: what a search returns, and the ``arch.json`` contract it writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..supernet import ArchConfig, count_macs, count_params


def typical_error(table: Any) -> dict[str, Any] | None:
    """``table.typical_error()`` (one schema for estimated and measured tables), or None for a table without it."""
    fn = getattr(table, "typical_error", None)
    return fn() if callable(fn) else None


@dataclass
class SearchResult:
    """The chosen subnet and how it was found. ``arch_json()`` is the run directory's ``arch.json``."""

    arch: ArchConfig
    predicted_ms: float
    budget_ms: float
    score: float
    score_name: str
    accuracy_driven: bool
    strategy: str
    seed: int
    device: str
    table_name: str
    table_hash: str
    table_kind: str
    space_name: str
    space_hash: str
    trace: list[dict] = field(default_factory=list)
    pareto: list[dict] | None = None
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    latency_parts: dict[str, float] | None = None   # ops, per-call overhead, correction, predicted (ms)
    notes: list[str] = field(default_factory=list)
    score_text: str = ""
    table_error: dict | None = None
    supernet: str | None = None
    subnet_state: dict | None = field(default=None, repr=False)
    largest_ms: float | None = None
    smallest_ms: float | None = None
    run_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    measured: list[dict] | None = None  # the answer timed here, one record per subnet (search._measured)

    @property
    def params(self) -> int:
        return count_params(self.arch)

    @property
    def macs(self) -> int:
        return count_macs(self.arch)

    def arch_json(self) -> dict[str, Any]:
        """Deterministic: the same seed and inputs give the same dict (no times, no run paths), except
        ``measured``, the answer timed on this machine (``None`` when it was not)."""
        return {
            "arch": self.arch.to_dict(),
            "predicted_ms": round(self.predicted_ms, 6),
            "budget_ms": self.budget_ms,
            "device": self.device,
            "table": self.table_name,
            "table_hash": self.table_hash,
            "table_kind": self.table_kind,
            "table_error": self.table_error,
            "space": self.space_name,
            "space_hash": self.space_hash,
            "strategy": self.strategy,
            "seed": self.seed,
            "score": self.score,
            "score_name": self.score_name,
            "accuracy_driven": self.accuracy_driven,
            "params": self.params,
            "macs": self.macs,
            "supernet": self.supernet,
            "options": self.options,
            "measured": self.measured,
            "notes": self.notes,
        }
