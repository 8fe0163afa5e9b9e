"""benchmarks/sandwich_flops.py counts forward FLOPs as the analytic count of a known network."""
from torch import nn

from tests.conftest import load_benchmark


def test_forward_flops_of_a_known_network():
    bench = load_benchmark("sandwich_flops")
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 10, bias=False))
    conv = 2 * 8 * 16 * 16 * 3 * 3 * 3  # multiply-adds of every output element, counted as 2 FLOPs
    linear = 2 * 8 * 16 * 16 * 10
    assert bench.forward_gflops(net, 16) * 1e9 == conv + linear
