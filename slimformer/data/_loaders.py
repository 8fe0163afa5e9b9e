"""Data loaders (built-in toy data or an ImageFolder tree) and top-1 evaluation: the data contract."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .._errors import SlimformerError
from ._builtin import CLASSES, BuiltinShapes

BUILTIN = "builtin"
BUILTIN_SIZES = {"train": 5000, "val": 1000}
VAL_ORDER_SEED = 0  # the one fixed order of every ImageFolder validation split (see _interleaved)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Loaders:
    """The train and validation loaders of one data source, with its classes."""

    train: DataLoader
    val: DataLoader
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    source: str = ""

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the training order for ``epoch`` (deterministic from the seed, also under DDP)."""
        sampler = self.train.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def read_image(path: str):
    """ImageFolder's loader (PIL, RGB), with an unreadable file as one clear error naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # UnidentifiedImageError too
        raise SlimformerError(f"cannot read the image {path} ({type(e).__name__}): remove or replace it") from None


def _image_folder(root: Path, split: str, img_size: int, *, training: bool, **transform_kw: Any):
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    d = root / split
    if not d.is_dir():
        raise SlimformerError(f"the data folder {root} has no {split}/ folder (expected {root}/{split}/<class>/<images>)")
    tf = create_transform(img_size, is_training=training, **transform_kw)
    try:
        ds = ImageFolder(str(d), transform=tf, loader=read_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise SlimformerError(f"no images found in {d} (expected {d}/<class>/<image files>): "
                              f"{str(e).splitlines()[0]}") from None
    if len(ds) == 0:
        raise SlimformerError(f"no images found in {d}")
    return ds


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise SlimformerError(f"a data subset size must be positive, got {n}")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(ds, sorted(idx[:n]))


def _interleaved(ds: Dataset) -> Dataset:
    """``ds`` in a fixed random order, the same for every run and seed.

    An ImageFolder lists its images class by class, so the first N validation batches (what a search selects
    on, or a held-out split cut after them) would hold one or two classes; in this order every prefix is a
    random sample of all of them. Evaluating the whole split gives the same figure either way."""
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(VAL_ORDER_SEED)).tolist()
    return Subset(ds, idx)


def build_datasets(data: str | Path, *, img_size: int, seed: int = 0, train_size: int | None = None,
                   val_size: int | None = None, **transform_kw: Any) -> tuple[Dataset, Dataset, list[str]]:
    """(train, val, class_names) of ``data``: ``"builtin"`` or an ImageFolder root with ``train/`` and ``val/``."""
    if str(data) == BUILTIN:
        train = BuiltinShapes(img_size=img_size, length=train_size or BUILTIN_SIZES["train"], seed=seed, split="train")
        val = BuiltinShapes(img_size=img_size, length=val_size or BUILTIN_SIZES["val"], seed=seed, split="val")
        return train, val, list(CLASSES)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise SlimformerError(f"data must be 'builtin' or an ImageFolder directory with train/ and val/; "
                              f"{str(data)!r} is neither")
    train = _image_folder(root, "train", img_size, training=True, **transform_kw)
    val = _image_folder(root, "val", img_size, training=False)
    if train.classes != val.classes:
        raise SlimformerError(f"train/ and val/ of {root} have different class folders "
                              f"({len(train.classes)} vs {len(val.classes)})")
    return _subset(train, train_size, seed), _interleaved(_subset(val, val_size, seed + 1)), list(train.classes)


def build_loaders(data: str | Path, *, img_size: int, batch_size: int, workers: int = 0, seed: int = 0,
                  train_size: int | None = None, val_size: int | None = None, distributed: bool = False,
                  pin_memory: bool = False, **transform_kw: Any) -> Loaders:
    """Train/val loaders of ``data`` (``"builtin"``: the procedural toy dataset; else an ImageFolder root).

    The training order is shuffled from ``seed`` and the epoch (``Loaders.set_epoch``), so a resumed run sees
    the same order; with ``distributed`` each process reads its own shard (``DistributedSampler``) of the
    training set. Validation is never reshuffled: the built-in data is generated in random class order, and an
    ImageFolder's validation images come in one fixed random order (:func:`_interleaved`). Extra keywords go to timm's ``create_transform`` for the
    training split of an ImageFolder (e.g. ``auto_augment``); the built-in data is rendered already varied.
    """
    if batch_size <= 0:
        raise SlimformerError(f"batch size must be positive, got {batch_size}")
    train, val, names = build_datasets(data, img_size=img_size, seed=seed, train_size=train_size,
                                       val_size=val_size, **transform_kw)
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    else:
        world, rank = 1, 0
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    per_rank = len(sampler)
    common = {"num_workers": workers, "pin_memory": pin_memory, "persistent_workers": workers > 0}
    train_loader = DataLoader(train, batch_size=batch_size, sampler=sampler, drop_last=per_rank >= batch_size,
                              **common)
    val_loader = DataLoader(val, batch_size=batch_size, shuffle=False, **common)
    return Loaders(train=train_loader, val=val_loader, num_classes=len(names), class_names=names, source=str(data))


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(model: torch.nn.Module, loader, *, max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over ``loader`` (eval mode, no grad; the model's mode is restored)."""
    was_training = model.training
    device = _device_of(model)
    hit = n = 0
    model.eval()
    try:
        with torch.no_grad():
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                out = model(x.to(device, non_blocking=True))
                if isinstance(out, (tuple, list)):
                    out = (out[0] + out[1]) / 2
                hit += int((out.argmax(dim=1).cpu() == y).sum())
                n += len(y)
    finally:
        model.train(was_training)
    return hit / n if n else 0.0
