from __future__ import annotations

import json

import pytest
import torch

from slimformer.supernet import EfficientFormerNet, Supernet, get_space, save_supernet
from tests.conftest import randomize_


@pytest.fixture
def random_net(tiny_space):
    """A tiny subnet with an MB3D tail, random weights, random BN statistics and layer scales."""
    cfg = next(c for c in (tiny_space.sample(s) for s in range(50)) if c.num_mb3d > 0)
    return randomize_(EfficientFormerNet(cfg), seed=3).eval()


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A search-like run dir: arch.json (contract 3) and a supernet checkpoint with random weights."""
    d = tmp_path_factory.mktemp("run")
    space = get_space("tiny")
    sup = randomize_(Supernet(space), seed=5).eval()
    save_supernet(d / "supernet.pt", sup, meta={"class_names": [f"thing{i}" for i in range(10)]})
    cfg = next(c for c in (space.sample(s) for s in range(50)) if c.num_mb3d > 0)
    (d / "arch.json").write_text(json.dumps({"arch": cfg.to_dict(), "predicted_ms": 1.25, "device": "cpu",
                                             "table_hash": "abc", "table_kind": "measured", "strategy": "evo",
                                             "seed": 0, "score": 0.4}))
    (d / "metrics.json").write_text(json.dumps({"top1": 0.42}))
    torch.save(sup.extract_subnet(cfg).state_dict(), d / "subnet.pt")
    return d


@pytest.fixture(scope="module")
def tiny_lut_dir(tmp_path_factory):
    """A user latency-table folder holding one table of the tiny space: every op costs 0.01 ms."""
    from slimformer.latency_lut import LatencyTable, space_ops

    d = tmp_path_factory.mktemp("luts")
    space = get_space("tiny")
    LatencyTable(name="tiny-test", kind="measured", device="test-device", backend="onnxruntime", space=space,
                 entries={k: 0.01 for k in space_ops(space)}, overhead_ms=0.5).save(d / "tiny-test.json")
    return d
