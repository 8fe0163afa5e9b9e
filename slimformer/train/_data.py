"""Data loaders (built-in toy data or an ImageFolder tree), Mixup/CutMix, and top-1 evaluation.

``build_loaders("builtin", ...)`` serves :class:`BuiltinShapes`; ``build_loaders(PATH, ...)`` serves
``PATH/train`` and ``PATH/val`` through torchvision's ``ImageFolder`` with timm's ``create_transform``
(training augmentation / eval resize+centre crop). The training loader shuffles through a
``DistributedSampler`` seeded by ``seed``: call ``loader.sampler.set_epoch(epoch)`` each epoch so the
order depends only on (seed, epoch), which makes a resumed run see the same batches as an
uninterrupted one. Under ``torch.distributed`` each rank reads its own shard of the training set;
validation is not sharded (every rank evaluates the whole, small, validation set).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .._errors import SlimformerError
from ._builtin import BuiltinShapes

BUILTIN_TRAIN_SIZE = 10_000
BUILTIN_VAL_SIZE = 2_000
_IMG_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    num_classes: int
    class_names: list[str]


def _check_split(root: Path, split: str) -> Path:
    d = root / split
    if not d.is_dir():
        raise SlimformerError(f"data folder {root} has no {split}/ subfolder (expected {root}/{split}/<class>/<image>)")
    has_images = any(p.is_file() and p.suffix.lower() in _IMG_EXT for c in d.iterdir() if c.is_dir()
                     for p in c.iterdir())
    if not has_images:
        raise SlimformerError(f"{d} holds no images in class subfolders (expected {d}/<class>/<image>)")
    return d


def _image_folders(root: Path, img_size: int) -> tuple[Dataset, Dataset, list[str]]:
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise SlimformerError(f"data folder not found: {root} (give an ImageFolder tree or 'builtin')")
    tr, va = _check_split(root, "train"), _check_split(root, "val")
    try:
        train = ImageFolder(str(tr), transform=create_transform(img_size, is_training=True))
        val = ImageFolder(str(va), transform=create_transform(img_size, is_training=False))
    except (FileNotFoundError, RuntimeError) as e:
        raise SlimformerError(f"cannot read image folders under {root}: {e}") from None
    missing = sorted(set(val.classes) - set(train.classes))
    if missing:
        raise SlimformerError(f"{va} has classes that {tr} lacks: {', '.join(missing[:5])}")
    if val.class_to_idx != {c: train.class_to_idx[c] for c in val.classes}:
        val.samples = [(p, train.class_to_idx[val.classes[y]]) for p, y in val.samples]
        val.targets = [y for _, y in val.samples]
    return train, val, list(train.classes)


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Subset(ds, idx.tolist())


def build_loaders(data: str | Path, *, img_size: int, batch_size: int, workers: int = 0, seed: int = 0,
                  train_size: int | None = None, val_size: int | None = None) -> Loaders:
    """Training and validation loaders for ``data`` ("builtin" or an ImageFolder root with train/ and val/)."""
    if batch_size < 1 or img_size < 8:
        raise SlimformerError("batch size must be >= 1 and image size >= 8")
    if str(data) == "builtin":
        train: Dataset = BuiltinShapes(img_size=img_size, length=train_size or BUILTIN_TRAIN_SIZE, seed=seed,
                                       split="train")
        val: Dataset = BuiltinShapes(img_size=img_size, length=val_size or BUILTIN_VAL_SIZE, seed=seed, split="val")
        names = list(BuiltinShapes.classes)
    else:
        train, val, names = _image_folders(Path(data), img_size)
        train, val = _subset(train, train_size, seed), _subset(val, val_size, seed + 1)
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    else:
        world, rank = 1, 0
    per_rank = len(train) // world
    if per_rank < batch_size:
        raise SlimformerError(f"the training set has {len(train)} images, fewer than one batch of {batch_size} "
                              f"per process ({world} process(es)): lower --batch-size")
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    pin = torch.cuda.is_available()
    train_loader = DataLoader(train, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                              pin_memory=pin, persistent_workers=workers > 0)
    val_loader = DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin,
                            persistent_workers=workers > 0)
    return Loaders(train=train_loader, val=val_loader, num_classes=len(names), class_names=names)


def build_mixup(*, mixup: float = 0.0, cutmix: float = 0.0, label_smoothing: float = 0.1, num_classes: int):
    """timm's ``Mixup`` (batch mode) if either alpha is positive, else ``None``; training only."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, *, max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` over ``loader`` (at most ``max_batches`` batches).

    For a :class:`~slimformer.supernet.Supernet`, ``set_active`` the subnet first. Eval mode is used
    and the model's previous mode restored; a (cls, dist) output pair is averaged.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                out = model(x)
            if isinstance(out, (tuple, list)):
                out = (out[0] + out[1]) / 2
            correct += int((out.argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    return correct / total if total else 0.0
