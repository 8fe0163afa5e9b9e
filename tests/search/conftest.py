"""Fixtures for the search tests: a tiny analytic latency table and a tiny supernet checkpoint."""
from __future__ import annotations

import pytest
import torch

from slimformer.latency_lut import LatencyTable, parse_key, space_ops


def _op_ms(key: str) -> float:
    """A made-up but plausible cost: 2 us per op plus MACs at 0.5 GMAC/s-ish (stable, monotone in dims)."""
    kind, d = parse_key(key)
    if kind == "stem":
        macs = (d["r"] // 2) ** 2 * d["i"] * d["s"] * 9 + (d["r"] // 4) ** 2 * d["s"] * d["c"] * 9
    elif kind in ("ds", "ds.tok"):
        macs = (d["r"] // 2) ** 2 * d["c"] * d["o"] * 9
    elif kind == "mb4d":
        macs = d["r"] ** 2 * d["c"] * (2 * d["mlp"] + 9)
    elif kind == "flat":
        macs = d["t"] * d["c"]
    elif kind == "mb3d.qkv":
        macs = d["t"] * d["c"] * d["o"]
    elif kind == "mb3d.attn":
        macs = d["h"] * d["t"] * d["t"] * (d["qk"] + d["v"]) * 2
    elif kind == "mb3d.proj":
        macs = d["t"] * d["c"] * d["i"]
    elif kind == "mb3d.mlp":
        macs = 2 * d["t"] * d["c"] * d["mlp"]
    else:
        macs = d["c"] * d["k"] * d["d"]
    return 0.002 + macs / 5e8


def make_table(space, *, name="tiny-fake", kind="measured", error=None) -> LatencyTable:
    entries = {k: _op_ms(k) for k in space_ops(space)}
    return LatencyTable.from_entries(entries, name=name, kind=kind, device=name, backend="analytic",
                                     space=space, overhead_ms=0.01, error=error)


@pytest.fixture
def tiny_table(tiny_space):
    return make_table(tiny_space)


@pytest.fixture
def tiny_ckpt(tmp_path, tiny_space):
    """An untrained tiny supernet with alpha logits favouring early blocks (deterministic)."""
    from slimformer.supernet import Supernet, arch_key, save_supernet

    torch.manual_seed(0)
    model = Supernet(tiny_space)
    logits = {}
    for si in range(4):
        kinds = tiny_space.kinds_at(si)
        for pos in range(tiny_space.depths[si]):
            t = torch.zeros(len(kinds))
            t[-1] = 0.3 * pos - 0.2 * si  # skip logit grows with depth: deep blocks matter less
            logits[arch_key(si, pos)] = t
    return save_supernet(tmp_path / "tiny.pt", model, arch_logits=logits, meta={"test": True})


@pytest.fixture
def tiny_loaders():
    """Fixed random batches shaped like the tiny space's data (train for BN recalibration, val for top-1)."""
    import types

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(4)]
    return types.SimpleNamespace(train=batches[:2], val=batches[2:], num_classes=10)


def budgets(table):
    """Three budgets strictly between the tiny space's smallest and largest predictions."""
    sp = table.space
    lo, hi = table.predict(sp.smallest()), table.predict(sp.largest())
    return [lo + f * (hi - lo) for f in (0.15, 0.5, 0.85)]
