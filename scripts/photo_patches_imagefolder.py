"""Write **photo10**, a 10-class patch set cut from real photographs shipped inside scikit-image, as an ImageFolder.

    pip install scikit-image       # or: pip install -e '.[realdata]'
    python scripts/photo_patches_imagefolder.py data/photo10 [--train-per-class 400] [--val-per-class 100] [--seed 0]
    slimformer train --space tiny --data data/photo10 ...

What it is: the task "which photograph is this patch from?" over ten photographs that ship in the scikit-image
wheel (no download): a portrait, a cat, a coffee cup, a rocket launch, old coins, a stained tissue section,
the camera man, and three surface textures (brick, grass, gravel). Every photograph is turned grey (so colour
alone gives no class away), scaled to a shorter side of 256 px, and cut into square patches of 40-72 px at
random places, each resized to 32 x 32. Training patches come from the left 60 % of each photograph and
validation patches from the right 30 % (a 10 % gap between), so validation asks for the same photograph's
*other* content and texture, never an overlapping crop. The photographs' licences (from scikit-image's
docstrings) are public domain, CC0 or "no known copyright restrictions"; they are listed per class in
``<out>/dataset.json``; scikit-image is BSD-3-Clause. It is a small, grey, built set of real photographs, NOT
ImageNet: figures on it say how subnets of a space differ on real image statistics, not how they do on ImageNet.
A finished tree is marked by ``<out>/dataset.json``; rerunning on it does nothing, and an interrupted run is
redone from scratch.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

#: class name -> (scikit-image loader, licence as its docstring states it)
PHOTOS = {
    "astronaut": ("astronaut", "public domain (NASA)"),
    "brick": ("brick", "CC0 (CC0Textures)"),
    "camera": ("camera", "CC0 (Lav Varshney)"),
    "chelsea": ("chelsea", "CC0 (Stefan van der Walt)"),
    "coffee": ("coffee", "CC0 (Rachel Michetti)"),
    "coins": ("coins", "no known copyright restrictions"),
    "grass": ("grass", "CC0 (CC0Textures)"),
    "gravel": ("gravel", "CC0 (CC0Textures)"),
    "tissue": ("immunohistochemistry", "no known copyright restrictions"),
    "rocket": ("rocket", "public domain (SpaceX)"),
}
SHORT_SIDE, PATCH = 256, (40, 72)
TRAIN_COLS, VAL_COLS = (0.0, 0.6), (0.7, 1.0)


def load_photo(loader: str) -> np.ndarray:
    """One photograph as a grey uint8 array with shorter side :data:`SHORT_SIDE`."""
    from PIL import Image

    try:
        from skimage import data
    except ImportError:
        sys.exit("this script needs scikit-image (it ships the photographs): pip install scikit-image")
    img = Image.fromarray(getattr(data, loader)()).convert("L")
    scale = SHORT_SIDE / min(img.size)
    return np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC))


def patches(photo: np.ndarray, cols: tuple[float, float], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random square patches (side in :data:`PATCH`) whose columns lie in the ``cols`` share of the width."""
    from PIL import Image

    h, w = photo.shape
    x0, x1 = round(cols[0] * w), round(cols[1] * w)
    out = []
    for _ in range(n):
        s = int(rng.integers(PATCH[0], min(PATCH[1], x1 - x0, h) + 1))
        x, y = int(rng.integers(x0, x1 - s + 1)), int(rng.integers(0, h - s + 1))
        out.append(np.asarray(Image.fromarray(photo[y:y + s, x:x + s]).resize((32, 32), Image.BICUBIC)))
    return out


def write_tree(out: Path, train_per_class: int, val_per_class: int, seed: int) -> dict:
    from PIL import Image

    from slimformer._io import atomic_write_json

    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    for name, (loader, _) in PHOTOS.items():
        photo = load_photo(loader)
        for split, cols, n in (("train", TRAIN_COLS, train_per_class), ("val", VAL_COLS, val_per_class)):
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i, p in enumerate(patches(photo, cols, n, rng)):
                Image.fromarray(p, mode="L").save(d / f"{i:04d}.png")
    info = {"name": "photo10", "source": "scikit-image's shipped sample photographs (skimage.data), grey patches",
            "licence": {name: lic for name, (_, lic) in PHOTOS.items()}, "package_licence": "scikit-image: BSD-3-Clause",
            "classes": sorted(PHOTOS), "train": train_per_class * len(PHOTOS), "val": val_per_class * len(PHOTOS),
            "image_size": [32, 32], "patch_px": list(PATCH), "train_columns": list(TRAIN_COLS),
            "val_columns": list(VAL_COLS), "seed": seed, "not_imagenet": True}
    atomic_write_json(out / "dataset.json", info)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to create (train/ and val/ inside)")
    ap.add_argument("--train-per-class", type=int, default=400)
    ap.add_argument("--val-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.train_per_class < 1 or args.val_per_class < 1:
        sys.exit("--train-per-class and --val-per-class must be at least 1")
    out = Path(args.out)
    if (out / "dataset.json").is_file():
        print(f"{out} is already complete ({(out / 'dataset.json').read_text().strip()[:80]}...)")
        return
    info = write_tree(out, args.train_per_class, args.val_per_class, args.seed)
    print(f"wrote {info['train']} training and {info['val']} validation patches of {len(info['classes'])} "
          f"photographs to {out}/train and {out}/val")


if __name__ == "__main__":
    main()
