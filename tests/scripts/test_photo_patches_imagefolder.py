"""scripts/photo_patches_imagefolder.py: patches from disjoint columns, a seeded tree the data loaders read."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import load_script


def _script():
    return load_script("photo_patches_imagefolder")


def test_training_and_validation_patches_come_from_disjoint_columns():
    m = _script()
    photo = np.tile(np.arange(400)[None, :] // 2, (256, 1)).astype(np.uint8)  # a pixel value says its column
    rng = np.random.default_rng(0)
    for cols in (m.TRAIN_COLS, m.VAL_COLS):
        for p in m.patches(photo, cols, 20, rng):
            lo, hi = cols[0] * 400 // 2, cols[1] * 400 // 2  # values are column // 2
            assert p.shape == (32, 32) and lo - 1 <= p.min() and p.max() <= hi + 1
    assert m.TRAIN_COLS[1] < m.VAL_COLS[0]


def test_tree_is_seeded_and_read_by_build_loaders(tmp_path, monkeypatch):
    from slimformer.data import build_loaders

    m = _script()
    monkeypatch.setattr(m, "load_photo", lambda loader: np.random.default_rng(len(loader)).integers(
        0, 255, (256, 300), dtype=np.uint8))
    info = m.write_tree(tmp_path / "a", 4, 2, seed=0)
    m.write_tree(tmp_path / "b", 4, 2, seed=0)
    assert info["train"] == 40 and info["val"] == 20 and len(info["licence"]) == 10
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["not_imagenet"] is True
    a, b = (sorted(p.read_bytes() for p in (tmp_path / d).rglob("*.png")) for d in ("a", "b"))
    assert a == b
    ld = build_loaders(tmp_path / "a", img_size=32, batch_size=8)
    x, _y = next(iter(ld.val))
    assert ld.num_classes == 10 and x.shape == (8, 3, 32, 32)


def test_real_photographs_from_scikit_image():
    pytest.importorskip("skimage")
    m = _script()
    for loader, _lic in m.PHOTOS.values():
        photo = m.load_photo(loader)
        assert photo.dtype == np.uint8 and photo.ndim == 2 and min(photo.shape) == m.SHORT_SIDE
