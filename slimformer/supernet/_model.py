"""``EfficientFormerNet``: the standalone model one ``ArchConfig`` describes.

It is what ``Supernet.extract_subnet`` returns and what export, pruning and fine-tuning work on.
Layers come from timm's EfficientFormer (stem, downsample, pooling mixer, Conv-BN MLP, layer scale),
and the module tree follows timm's naming exactly, so an EfficientFormer-L1/L3/L7 state dict from
timm loads into the matching preset unchanged. Differences from timm, all needed by the search space:
per-block MLP ratios and attention dims (V dim per head is free, not ``attn_ratio * key_dim``), skip
positions are simply absent, and a config without MB3D still flattens before the final norm.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerScale, LayerScale2d, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, register_model
from timm.models._features import feature_take_indices
from timm.models.efficientformer import ConvMlpWithNorm, Downsample, Flat, Pooling, Stem4
from torch import nn

from .._errors import ConfigError, SlimformerError
from ._config import ArchConfig, BlockConfig
from ._layout import flatten_at


def _cfg(cfg: ArchConfig, **kwargs: Any) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a subnet: its input size, ImageNet mean/std, the evaluation crop of
    ``slimformer export``'s model card and the web demo (shorter side to img_size / 0.875, bicubic)."""
    return {
        "url": "", "architecture": "slimformer_subnet", "num_classes": cfg.num_classes,
        "input_size": (cfg.in_chans, cfg.img_size, cfg.img_size), "pool_size": None, "fixed_input_size": True,
        "crop_pct": 0.875, "crop_mode": "center", "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1", "classifier": ("head", "head_dist") if cfg.distillation else "head",
        "license": "apache-2.0", **kwargs,
    }


class Attention(nn.Module):
    """EfficientFormer MHSA with learned attention bias; ``qkv`` rows are per head [q | k | v]."""

    def __init__(self, dim: int, heads: int, qk_dim: int, v_dim: int, resolution: int):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = heads, qk_dim, v_dim
        self.scale = qk_dim ** -0.5
        self.val_attn_dim = heads * v_dim
        self.qkv = nn.Linear(dim, heads * (2 * qk_dim + v_dim))
        self.proj = nn.Linear(self.val_attn_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", relative_position_index(resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn + self.attention_biases[:, self.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
        return self.proj(x)


def relative_position_index(resolution: int) -> torch.Tensor:
    """timm's ``attention_bias_idxs``: |dy| * res + |dx| between every pair of tokens."""
    ys, xs = torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()])
    rel = (pos[:, :, None] - pos[:, None, :]).abs()
    return rel[0] * resolution + rel[1]


class MB4D(nn.Module):
    """MetaBlock 4D: x + LS(pool(x) - x); x + LS(Conv1x1-BN-GELU-Conv1x1-BN (x))."""

    def __init__(self, dim: int, hidden: int, drop_path: float = 0.0, ls_init: float = 1e-5):
        super().__init__()
        self.token_mixer = Pooling(pool_size=3)
        self.ls1 = LayerScale2d(dim, ls_init)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = ConvMlpWithNorm(dim, hidden_features=hidden, act_layer=nn.GELU, norm_layer=nn.BatchNorm2d)
        self.ls2 = LayerScale2d(dim, ls_init)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))


class MB3D(nn.Module):
    """MetaBlock 3D on tokens: x + LS(MHSA(LN(x))); x + LS(MLP(LN(x)))."""

    def __init__(self, dim: int, block: BlockConfig, resolution: int, drop_path: float = 0.0, ls_init: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, block.heads, block.qk_dim, block.v_dim, resolution)
        self.ls1 = LayerScale(dim, ls_init)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=block.hidden(dim), act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, ls_init)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.token_mixer(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class Unflat(nn.Module):
    """Tokens back to a map; only used before a downsample when the MB3D tail began a stage earlier."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution

    def forward(self, x):
        B, _, C = x.shape
        return x.transpose(1, 2).reshape(B, C, self.resolution, self.resolution)


class Stage(nn.Module):
    def __init__(self, cfg: ArchConfig, si: int, in_dim: int, tokens_in: bool, dpr: list[float]):
        super().__init__()
        stage = cfg.stages[si]
        res = cfg.resolution(si)
        if si == 0:
            self.downsample = nn.Identity()
        elif tokens_in:
            self.downsample = nn.Sequential(Unflat(res * 2), Downsample(in_dim, stage.width))
        else:
            self.downsample = Downsample(in_dim, stage.width)
        blocks: list[nn.Module] = []
        real = [b for b in stage.blocks if b.kind != "skip"]
        at = flatten_at([b.kind for b in real], tokens_in=tokens_in, last=si == len(cfg.stages) - 1)
        for i, b in enumerate(real):
            if i == at:
                blocks.append(Flat())
            if b.kind == "mb3d":
                blocks.append(MB3D(stage.width, b, res, dpr.pop(0)))
            else:
                blocks.append(MB4D(stage.width, b.hidden(stage.width), dpr.pop(0)))
        if at == len(real):
            blocks.append(Flat())
        self.blocks = nn.Sequential(*blocks)
        self.tokens_out = at is not None
        self.resolution = res
        self.grad_checkpointing = False

    def forward(self, x):
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def classify(model: torch.nn.Module, x: torch.Tensor):
    """Both families' classifier: logits of pooled features ``x`` through ``model.head`` (and
    ``model.head_dist`` when there is one; averaged at inference, both returned in distilled training)."""
    if model.head_dist is None:
        return model.head(x)
    x, x_dist = model.head(x), model.head_dist(x)
    if model.distilled_training and model.training and not torch.jit.is_scripting():
        return x, x_dist
    return (x + x_dist) / 2


class EfficientFormerNet(nn.Module):
    """A standalone EfficientFormer-style network with timm's model API."""

    def __init__(self, cfg: ArchConfig, *, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.arch = cfg
        self.num_classes = cfg.num_classes
        self.in_chans = cfg.in_chans
        self.global_pool = "avg"
        self.distilled_training = False
        self.stem = Stem4(cfg.in_chans, cfg.stages[0].width)
        if cfg.stem_width != cfg.stages[0].width // 2:  # timm ties the stem's middle width to width/2
            self.stem.conv1 = nn.Conv2d(cfg.in_chans, cfg.stem_width, 3, 2, 1)
            self.stem.norm1 = nn.BatchNorm2d(cfg.stem_width)
            self.stem.conv2 = nn.Conv2d(cfg.stem_width, cfg.stages[0].width, 3, 2, 1)
        n_blocks = sum(cfg.depths)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        stages, in_dim, tokens = [], cfg.stages[0].width, False
        for si in range(len(cfg.stages)):
            st = Stage(cfg, si, in_dim, tokens, dpr)
            stages.append(st)
            in_dim, tokens = cfg.stages[si].width, st.tokens_out
        self.stages = nn.Sequential(*stages)
        self.feature_info = [{"num_chs": s.width, "reduction": 4 * 2 ** i, "module": f"stages.{i}"}
                             for i, s in enumerate(cfg.stages)]
        self.num_features = self.head_hidden_size = cfg.num_features
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(self.num_features, cfg.num_classes)
                          if cfg.distillation and cfg.num_classes > 0 else None)
        self.pretrained_cfg = self.default_cfg = _cfg(cfg)
        self.apply(_init_weights)

    # timm model API ---------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Refuse an image of another size: the MB3D token grid and its attention bias are fixed at
        ``img_size``, and a wrong size would otherwise broadcast silently (one token) or fail deep inside."""
        want = (self.in_chans, self.arch.img_size, self.arch.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise SlimformerError(
                f"this model takes images of shape (batch, {want[0]}, {want[1]}, {want[2]}), got "
                f"{tuple(x.shape)}; resize/crop to {want[1]} px (timm.data.resolve_model_data_config(model) "
                "and timm.data.create_transform give the transform)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.norm(self.stages(self.stem(x)))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's feature API: the output of each stage in ``indices`` (None: all; int n: the last n) as
        NCHW maps (token stages reshaped to their grid; ``norm`` applies the final norm to the last);
        with ``intermediates_only=False`` also the final features, normed, as ``forward_features``."""
        if output_fmt != "NCHW":
            raise ConfigError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        self.check_input(x)
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        last = len(self.arch.stages) - 1
        intermediates, x, i = [], self.stem(x), 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                y = self.norm(x) if norm and i == last else x
                if stage.tokens_out:
                    y = y.transpose(1, 2).reshape(y.shape[0], -1, stage.resolution, stage.resolution)
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if i == last else x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: drop the stages after the last of ``indices`` (and the norm/head that no longer fit)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        self.stages = self.stages[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise LR decay: stem, then stages (or each block), then the final norm;
        the classifier heads are left unmatched, which timm puts in the last group."""
        if coarse:
            blocks = [(r"^stages\.(\d+)", None), (r"^norm", (99999,))]
        else:
            blocks = [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                      (r"^norm", (99999,))]
        return {"stem": r"^stem", "blocks": blocks}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else classify(self, x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.head if self.head_dist is None else (self.head, self.head_dist)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        if global_pool is not None:
            if global_pool not in ("", "avg"):
                raise ConfigError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def set_distilled_training(self, enable: bool = True):
        self.distilled_training = enable

    @torch.jit.ignore
    def no_weight_decay(self):
        return {k for k, _ in self.named_parameters() if "attention_biases" in k}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_macs(self) -> int:
        from ._profile import count_macs

        return count_macs(self.arch)


def _init_weights(m: nn.Module):
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# timm registry ---------------------------------------------------------------------------------
def _arch_for(arch: Any, file: str | Path | None) -> ArchConfig:
    """The config to build: ``arch`` (config, dict, preset name, arch JSON or search run dir), else the one
    the weights ``file`` names (a ``slimformer export`` model.pt, or a run's subnet.pt beside arch.json)."""
    from ._presets import read_arch

    if isinstance(arch, ArchConfig):
        return arch
    if isinstance(arch, dict):
        return ArchConfig.from_dict(arch)
    if arch is not None:
        return read_arch(arch)[0]
    if file is None:
        raise SlimformerError("slimformer_subnet needs arch=(config, preset, arch.json or run dir) or "
                              "pretrained_cfg_overlay=dict(file=model.pt)")
    from ._timm import read_state_dict

    obj = read_state_dict(file)
    if isinstance(obj.get("arch"), dict):
        return ArchConfig.from_dict(obj["arch"])
    if (Path(file).parent / "arch.json").is_file():
        return read_arch(Path(file).parent)[0]
    raise SlimformerError(f"{file} names no architecture (not a slimformer model.pt, no arch.json beside it): "
                          "pass arch=...")


def _build(cfg: ArchConfig, num_classes: int | None = None, in_chans: int | None = None,
           img_size: Any = None, global_pool: str | None = None, **kwargs: Any) -> EfficientFormerNet:
    """``cfg`` with timm's model keywords applied (``img_size`` as an int or timm's (H, W))."""
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if h != w:
            raise ConfigError(f"slimformer models take square images, got img_size {img_size}")
        cfg = replace(cfg, img_size=int(h))
    if num_classes is not None:
        cfg = replace(cfg, num_classes=int(num_classes))
    if in_chans is not None:
        cfg = replace(cfg, in_chans=int(in_chans))
    model = EfficientFormerNet(cfg, **kwargs)
    if global_pool is not None:
        model.reset_classifier(cfg.num_classes, global_pool)
    return model


def _create(variant: str, cfg: ArchConfig, pretrained: bool = False, **kwargs: Any) -> EfficientFormerNet:
    from ._timm import checkpoint_filter_fn

    pretrained_cfg = kwargs.pop("pretrained_cfg", None) or _cfg(cfg, architecture=variant)
    feature_cfg = {"out_indices": kwargs.pop("out_indices", 4), "feature_cls": "getter"}
    return build_model_with_cfg(lambda **kw: _build(cfg, **kw), variant, pretrained, pretrained_cfg=pretrained_cfg,
                                pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg, **kwargs)


@register_model
def slimformer_subnet(pretrained: bool = False, arch: Any = None, **kwargs: Any) -> EfficientFormerNet:
    """Any subnet: ``timm.create_model("slimformer_subnet", pretrained=True,
    pretrained_cfg_overlay=dict(file="out/model.pt"))`` (the file names its architecture), or
    ``arch="runs/search-Y"`` with ``pretrained_cfg_overlay=dict(file="runs/search-Y/subnet.pt")``."""
    file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
    return _create("slimformer_subnet", _arch_for(arch, file), pretrained, **kwargs)


def _preset(variant: str):
    def entry(pretrained: bool = False, **kwargs: Any) -> EfficientFormerNet:
        from ._presets import efficientformer_config

        return _create(f"slimformer_{variant}", efficientformer_config(variant), pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = f"slimformer_{variant}"
    entry.__doc__ = (f"EfficientFormer-{variant.upper()} as a slimformer model (timm's weights load with "
                     "pretrained_cfg_overlay=dict(file=...)).")
    entry.__module__ = __name__
    return entry


slimformer_l1 = register_model(_preset("l1"))
slimformer_l3 = register_model(_preset("l3"))
slimformer_l7 = register_model(_preset("l7"))
