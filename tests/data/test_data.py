from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from slimformer._errors import SlimformerError
from slimformer.data import BuiltinShapes, build_loaders, evaluate, render


def test_builtin_deterministic_any_resolution():
    a, la = render(7, size=32, seed=3, split="train")
    b, lb = render(7, size=32, seed=3, split="train")
    assert la == lb == 7 and np.array_equal(a, b) and a.shape == (32, 32, 3)
    assert not np.array_equal(a, render(7, size=32, seed=4, split="train")[0])
    assert not np.array_equal(a, render(7, size=32, seed=3, split="val")[0])
    big, _ = render(7, size=64, seed=3)
    assert big.shape == (64, 64, 3) and 0 <= big.min() and big.max() <= 1
    ds = BuiltinShapes(img_size=32, length=20)
    assert [ds[i][1] for i in range(10)] == list(range(10))
    with pytest.raises(IndexError):
        ds[20]


def test_builtin_loaders_shapes_and_order():
    ld = build_loaders("builtin", img_size=32, batch_size=8, seed=1, train_size=32, val_size=16)
    assert ld.num_classes == 10 and ld.class_names[0] == "circle"
    x, y = next(iter(ld.train))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
    assert len(ld.train) == 4 and len(ld.val) == 2
    ld2 = build_loaders("builtin", img_size=32, batch_size=8, seed=1, train_size=32, val_size=16)
    assert torch.equal(next(iter(ld2.train))[1], y)  # same seed, same order
    ld2.set_epoch(1)
    assert not torch.equal(torch.cat([b[1] for b in ld2.train]), torch.cat([b[1] for b in ld.train]))


def _folder(root, split, classes, n=3, size=20):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / split / c
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_image_folder(tmp_path):
    _folder(tmp_path, "train", ["cat", "dog"])
    _folder(tmp_path, "val", ["cat", "dog"], n=2)
    ld = build_loaders(tmp_path, img_size=32, batch_size=2, seed=0)
    assert ld.num_classes == 2 and ld.class_names == ["cat", "dog"]
    x, _y = next(iter(ld.train))
    assert x.shape == (2, 3, 32, 32)
    assert len(ld.val.dataset) == 4
    sub = build_loaders(tmp_path, img_size=32, batch_size=2, train_size=4, val_size=1)
    assert len(sub.train.dataset) == 4 and len(sub.val.dataset) == 1


def test_image_folder_validation_is_one_fixed_mix_of_all_classes(tmp_path):
    """ImageFolder lists images class by class: the first validation batch must not be one class."""
    classes = [f"c{i}" for i in range(4)]
    _folder(tmp_path, "train", classes, n=2)
    _folder(tmp_path, "val", classes, n=8)
    a = [y.tolist() for _x, y in build_loaders(tmp_path, img_size=32, batch_size=8, seed=0).val]
    b = [y.tolist() for _x, y in build_loaders(tmp_path, img_size=32, batch_size=8, seed=5).val]
    assert a == b  # the same order whatever the training seed
    assert len(set(a[0])) >= 3 and sorted(v for row in a for v in row) == sorted(i for i in range(4) for _ in range(8))


def test_bad_data_paths(tmp_path):
    with pytest.raises(SlimformerError, match="builtin"):
        build_loaders(tmp_path / "nope", img_size=32, batch_size=2)
    _folder(tmp_path, "train", ["cat"])
    with pytest.raises(SlimformerError, match="val/"):
        build_loaders(tmp_path, img_size=32, batch_size=2)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(SlimformerError, match="no images"):
        build_loaders(tmp_path, img_size=32, batch_size=2)
    (tmp_path / "val" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(SlimformerError, match="no images"):
        build_loaders(tmp_path, img_size=32, batch_size=2)


def test_evaluate_restores_mode_and_counts():
    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen_training = []

        def forward(self, x):
            self.seen_training.append(self.training)
            return torch.nn.functional.one_hot(self.labels.pop(0), 10).float()

    ld = build_loaders("builtin", img_size=16, batch_size=4, train_size=8, val_size=8)
    m = Oracle().train()
    m.labels = [y for _, y in ld.val]
    m.labels[1] = (m.labels[1] + 1) % 10  # the second batch is all wrong
    assert evaluate(m, ld.val) == pytest.approx(0.5)
    assert m.training and m.seen_training == [False, False]
    m.labels = [y for _, y in ld.val]
    assert evaluate(m, ld.val, max_batches=1) == 1.0
