"""Eager torch's activations reuse heap pages once a torch runner is made (``_alloc``), whatever ran before."""
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the policy is glibc's")

# a module whose forward makes a 48 MiB activation: above glibc's largest dynamic mmap threshold (32 MiB), so by
# default every call maps it anew and faults its pages in
_SCRIPT = """
import json, resource, sys, torch
from slimformer.latency_lut._measure import runner
class Big(torch.nn.Module):
    def forward(self, x):
        return (x.expand(3, 1024, 4096) + 1.0).sum()
x = torch.ones(1, 1024, 4096)
if sys.argv[1] == "runner":
    fn = runner(Big(), (x,), backend="torch", threads=1)
else:
    def fn():
        with torch.inference_mode():
            return Big()(x)
for _ in range(3):
    fn()
seq = []
for _ in range(15):
    a = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    seq.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - a)
from slimformer.latency_lut._alloc import allocator_policy
print(json.dumps({"faults": sorted(seq)[len(seq) // 2], "policy": allocator_policy()}))
"""


def _faults(how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, how], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_a_torch_runner_keeps_large_activations_in_the_heap_without_page_faults():
    steady, plain = _faults("runner"), _faults("plain")
    assert steady["policy"] and "mmap_max 0" in steady["policy"]
    assert plain["policy"] is None
    assert steady["faults"] < 100  # the median call; 48 MiB mapped anew is ~12 000 faults of 4 KiB pages
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not (thp.is_file() and "[always]" in thp.read_text()):  # with huge pages always on, faults are few either way
        assert plain["faults"] > 2000


def test_a_torch_table_records_the_policy_and_a_validation_says_when_it_differs():
    from slimformer.latency_lut._validate import figure_lines

    f = {"within_5pct": 1.0, "within_10pct": 1.0, "mape_pct": 1.0, "worst_pct": 2.0, "kendall_tau": 1.0}
    base = {"uncorrected": f, "corrected": None}
    same = figure_lines({**base, "allocator": {"now": "p", "table": "p"}})
    old = figure_lines({**base, "allocator": {"now": "p", "table": None}})
    assert len(old) == len(same) + 1 and "rebuild" in old[-1] and "glibc by default" in old[-1]


def test_the_allocator_benchmark_summarises_faults_and_the_ratio_spread_over_processes():
    from tests.conftest import load_benchmark

    bench = load_benchmark("torch_allocator")
    runs = [{"policy": None, "subnets": [{"ratio": 1.0 + d, "ms": 10.0, "faults": f}, {"ratio": 2.0, "ms": 20.0,
                                                                                       "faults": 0}]}
            for d, f in ((0.0, 0), (0.1, 5000), (-0.1, 100))]
    s = bench.summary(runs)
    assert s["faults_per_call"] == 0 and s["faults_max"] == 5000
    assert s["ms"] == [10.0, 20.0]
    # subnet 1: sd of (1.0, 1.1, 0.9) = 8.16 % of its mean; subnet 2: 0 %; the median of the two
    assert s["ratio_sd_pct"] == pytest.approx(100 * np.std([1.0, 1.1, 0.9]) / 2)


def test_lut_show_names_a_torch_tables_allocator_policy():
    from slimformer.latency_lut._report import describe
    from slimformer.supernet import get_space
    from tests.latency_lut.test_table import fake_table

    t = fake_table(get_space("tiny"))
    assert "allocator" not in describe(t)  # onnxruntime keeps its own arena
    t.backend = "torch"
    assert "allocator: glibc defaults" in describe(t)
    t.meta["build"] = {"allocator": "glibc malloc: mmap_max 0, trim_threshold 1 GiB"}
    assert "allocator: glibc malloc: mmap_max 0" in describe(t)
