"""The built-in dataset: procedurally generated shapes and textures, for demos, tests and CPU sanity runs.

What it is, honestly: a *toy* 10-class image classification problem drawn on the fly, not ImageNet and
not a benchmark. Each image is rendered from ``(seed, split, index)`` alone, so it is deterministic,
needs no download, and exists at any resolution. The classes are

    circle, square, triangle, cross, ring, stripes_h, stripes_v, checker, dots, blob

drawn in one random colour on a random two-colour gradient background with pixel noise; position,
size, rotation (within limits that keep horizontal and vertical stripes apart), stripe/dot period and
all colours are random, so colour alone never decides the class: a model must look at shape or texture.
Labels are balanced (``index % 10``). Accuracy on it shows that training works; it says nothing about
accuracy on natural images. Images are normalised with the ImageNet mean and std, like real data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

CLASSES = ("circle", "square", "triangle", "cross", "ring", "stripes_h", "stripes_v", "checker", "dots", "blob")
_SPLITS = {"train": 0, "val": 1}


def _soft(d: np.ndarray, aa: float) -> np.ndarray:
    """Anti-aliased inside-mask of a signed distance field (negative inside)."""
    return np.clip(0.5 - d / aa, 0.0, 1.0)


def _foreground(rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    for _ in range(16):
        fg = rng.random(3)
        if np.linalg.norm(fg - bg_mean) > 0.45:
            return fg
    return 1.0 - bg_mean  # the complement always contrasts


@dataclass
class _Frame:
    """Pixel coordinates of one image around its shape: offsets from the centre, the same rotated by the
    shape's angle, the distance from the centre, and the shape's radius and angle."""
    s: int
    xx: np.ndarray
    yy: np.ndarray
    aa: float  # anti-aliasing width (1.5 pixels)
    dx: np.ndarray
    dy: np.ndarray
    u: np.ndarray
    v: np.ndarray
    dist: np.ndarray
    r: float
    rot: float


def _background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear gradient between two random colours along a random direction, and a colour that contrasts."""
    c0, c1 = rng.random(3), rng.random(3)
    th = rng.uniform(0, 2 * math.pi)
    t = np.clip((xx - 0.5) * math.cos(th) + (yy - 0.5) * math.sin(th) + 0.5, 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t, _foreground(rng, (c0 + c1) / 2)


def _frame(rng: np.random.Generator, s: int, xx: np.ndarray, yy: np.ndarray) -> _Frame:
    """A random centre, radius and angle for the shape, and the coordinates around them."""
    cx, cy = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.18, 0.3)
    rot = rng.uniform(-math.pi, math.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(rot) + dy * math.sin(rot)
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    return _Frame(s, xx, yy, 1.5 / s, dx, dy, u, v, np.sqrt(dx * dx + dy * dy), r, rot)


def _shape_mask(name: str, f: _Frame) -> np.ndarray:
    """The inside-mask of one of the six shape classes."""
    r, u, v, aa = f.r, f.u, f.v, f.aa
    if name == "circle":
        return _soft(f.dist - r, aa)
    if name == "square":
        return _soft(np.maximum(np.abs(u), np.abs(v)) - 0.8 * r, aa)
    if name == "triangle":
        d = np.full_like(u, -np.inf)
        for k in range(3):
            a = f.rot + k * 2 * math.pi / 3
            d = np.maximum(d, f.dx * math.cos(a) + f.dy * math.sin(a) - 0.5 * r)
        return _soft(d, aa)
    if name == "cross":
        w = max(0.3 * r, 1.2 / f.s)
        return _soft(np.minimum(np.maximum(np.abs(u) - r, np.abs(v) - w), np.maximum(np.abs(u) - w, np.abs(v) - r)), aa)
    if name == "ring":
        w = max(0.22 * r, 1.2 / f.s)
        return _soft(np.abs(f.dist - 0.85 * r) - w, aa)
    return np.exp(-(f.dist ** 2) / (2 * (0.55 * r) ** 2))  # blob


def _texture_mask(name: str, f: _Frame, rng: np.random.Generator) -> np.ndarray:
    """One of the four texture classes inside a random rectangle or ellipse."""
    hw, hh = rng.uniform(1.2, 1.6, 2) * f.r
    if rng.random() < 0.5:
        region = _soft(np.maximum(np.abs(f.dx) - hw, np.abs(f.dy) - hh), f.aa)
    else:
        region = _soft(np.sqrt((f.dx / hw) ** 2 + (f.dy / hh) ** 2) - 1.0, f.aa / min(hw, hh))
    lo = max(4.0 / f.s, 0.07)  # at least four pixels per period, also at tiny resolutions
    period = rng.uniform(lo, max(0.16, 1.5 * lo))
    ph = rng.uniform(0, 2 * math.pi, 2)
    jit = rng.uniform(-0.12, 0.12)  # a slight tilt keeps h and v stripes distinct
    su, sv = f.xx + jit * f.yy, f.yy - jit * f.xx
    sharp = 0.5 * period * f.s  # about one pixel of transition
    if name == "stripes_h":
        pat = np.sin(2 * math.pi * sv / period + ph[0])
    elif name == "stripes_v":
        pat = np.sin(2 * math.pi * su / period + ph[0])
    elif name == "checker":
        pat = np.sin(2 * math.pi * su / period + ph[0]) * np.sin(2 * math.pi * sv / period + ph[1])
    else:  # dots
        fu = (su / period + ph[0] / (2 * math.pi)) % 1.0 - 0.5
        fv = (sv / period + ph[1] / (2 * math.pi)) % 1.0 - 0.5
        pat = 0.3 - np.sqrt(fu * fu + fv * fv)
        sharp *= 4
    return region * np.clip(0.5 + sharp * pat, 0, 1)


_TEXTURES = ("stripes_h", "stripes_v", "checker", "dots")


def render(index: int, *, size: int, seed: int = 0, split: str = "train") -> tuple[np.ndarray, int]:
    """Image ``index`` of ``split`` as a (size, size, 3) float32 array in [0, 1], and its label."""
    label = index % len(CLASSES)
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(g, g, indexing="ij")
    bg, fg = _background(rng, xx, yy)
    f = _frame(rng, size, xx, yy)
    name = CLASSES[label]
    m = _texture_mask(name, f, rng) if name in _TEXTURES else _shape_mask(name, f)
    img = bg * (1 - m[..., None]) + fg * m[..., None]
    img = img + rng.normal(0.0, 0.04, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), label


class BuiltinShapes(Dataset):
    """``length`` images of the built-in toy dataset at ``img_size`` pixels (see the module docstring)."""

    classes: tuple[str, ...] = CLASSES

    def __init__(self, *, img_size: int, length: int, seed: int = 0, split: str = "train", normalize: bool = True):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}")
        self.img_size, self.length, self.seed, self.split = int(img_size), int(length), int(seed), split
        self.normalize = normalize
        self._mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        img, label = render(index, size=self.img_size, seed=self.seed, split=self.split)
        x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        if self.normalize:
            x = (x - self._mean) / self._std
        return x, label
