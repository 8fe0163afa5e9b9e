"""``EfficientFormerNet``: the standalone model one ``ArchConfig`` describes.

It is what ``Supernet.extract_subnet`` returns and what export, pruning and fine-tuning work on.
Layers come from timm's EfficientFormer (stem, downsample, pooling mixer, Conv-BN MLP, layer scale),
and the module tree follows timm's naming exactly, so an EfficientFormer-L1/L3/L7 state dict from
timm loads into the matching preset unchanged. Differences from timm, all needed by the search space:
per-block MLP ratios and attention dims (V dim per head is free, not ``attn_ratio * key_dim``), skip
positions are simply absent, and a config without MB3D still flattens before the final norm.
"""
from __future__ import annotations

import torch
from timm.layers import DropPath, LayerScale, LayerScale2d, Mlp, trunc_normal_
from timm.models.efficientformer import ConvMlpWithNorm, Downsample, Flat, Pooling, Stem4
from torch import nn

from ._config import ArchConfig, BlockConfig
from ._layout import flatten_at


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

    def forward(self, x):
        return self.blocks(self.downsample(x))


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
        self.num_features = self.head_hidden_size = cfg.num_features
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(self.num_features, cfg.num_classes)
                          if cfg.distillation and cfg.num_classes > 0 else None)
        self.apply(_init_weights)

    # timm model API ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = self.head_drop(x.mean(dim=1))
        if pre_logits:
            return x
        if self.head_dist is None:
            return self.head(x)
        x, x_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training and not torch.jit.is_scripting():
            return x, x_dist
        return (x + x_dist) / 2

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.head if self.head_dist is None else (self.head, self.head_dist)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
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
