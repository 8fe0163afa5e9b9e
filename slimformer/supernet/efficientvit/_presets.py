"""EfficientViT-M0...M5 exactly as timm's ``efficientvit_m0``...``m5``, and the named EfficientViT spaces.

timm builds every model with key dim 16 and ``attn_ratio = dim / (16 * heads)``, so the V dim per head is
the head's input chunk ``dim // heads``; the kernel list holds one query kernel per head position.
"""
from __future__ import annotations

from ._config import EfficientViTConfig, EViTBlockConfig, EViTStageConfig
from ._space import EfficientViTSpace

EFFICIENTVIT = {
    # name: (widths, depths, heads, kernels)
    "m0": ((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    "m1": ((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    "m2": ((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    "m3": ((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    "m4": ((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    "m5": ((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
}


def efficientvit_config(variant: str, *, img_size: int = 224, num_classes: int = 1000) -> EfficientViTConfig:
    """The exact EfficientViT-``variant`` (``m0``...``m5``) of timm."""
    widths, depths, heads, kernels = EFFICIENTVIT[variant]
    stages = []
    for w, d, h in zip(widths, depths, heads):
        blk = EViTBlockConfig(heads=h, qk_dim=16, v_dim=w // h, ffn_ratio=2.0, kernels=kernels[:h])
        stages.append(EViTStageConfig(w, (blk,) * d))
    return EfficientViTConfig(stages=tuple(stages), img_size=img_size, num_classes=num_classes,
                              name=f"efficientvit_{variant}")


EVIT_PRESETS = {name: (lambda n=name: efficientvit_config(n)) for name in EFFICIENTVIT}


def _steps(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


EVIT_SPACES = {
    # holds M0...M5: widths in steps of 16, 2-4 heads, Q/K 8-32, V 16-128 (at most the chunk), FFN ratio 0.5-2
    "efficientvit": lambda: EfficientViTSpace(
        stage_widths=(_steps(64, 192, 16), _steps(128, 288, 16), _steps(192, 384, 16)),
        depths=(2, 4, 5), heads=(2, 3, 4), qk_dims=(8, 16, 24, 32), v_dims=_steps(16, 128, 16),
        ffn_ratios=(0.5, 1.0, 1.5, 2.0), kernels=(3, 5, 7), img_size=224, num_classes=1000,
        name="efficientvit"),
    # a small space for tests, demos and CPU training on 32-64 px images
    "efficientvit-tiny": lambda: EfficientViTSpace(
        stage_widths=((16, 32), (32, 48), (48, 64)), depths=(1, 2, 2), heads=(1, 2), qk_dims=(4, 8),
        v_dims=(8, 16, 24, 32), ffn_ratios=(1.0, 2.0), kernels=(3, 5), img_size=64, window=2,
        num_classes=10, name="efficientvit-tiny"),
}
