"""benchmarks/space_vs_space.py reports top-1 on validation batches the search did not select on."""
import types

import torch

from tests.conftest import load_benchmark


class _AlwaysZero(torch.nn.Module):
    def forward(self, x):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1)


def test_held_out_batches_follow_the_search_batches():
    bench = load_benchmark("space_vs_space")
    n = bench.SEARCH_BATCHES + bench.HELD_OUT_BATCHES
    # label 1 (always wrong) on the search's batches and after the held-out ones, label 0 (right) between
    val = [(torch.zeros(4, 3, 8, 8), torch.full((4,), 0 if bench.SEARCH_BATCHES <= i < n else 1)) for i in range(n + 3)]
    loaders = types.SimpleNamespace(val=val, train=[])
    assert bench.held_out(_AlwaysZero(), loaders, recal=False) == 1.0
