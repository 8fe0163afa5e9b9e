from __future__ import annotations

import os

import pytest
import torch

# The machine has 2 cores shared by everything; one intra-op thread keeps tests predictable.
torch.set_num_threads(1)
os.environ.setdefault("SLIMFORMER_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "slimformer"))


@pytest.fixture
def tiny_space():
    from slimformer.supernet import get_space

    return get_space("tiny")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every float tensor (weights, layer scales, BN stats) random values, so parity tests bite."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if "running_var" in k:
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module


def load_benchmark(name: str, folder: str = "benchmarks"):
    """The module ``<folder>/<name>.py`` (benchmarks and scripts are not a package), for testing its helpers."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_script(name: str):
    """The module ``scripts/<name>.py``."""
    return load_benchmark(name, "scripts")
