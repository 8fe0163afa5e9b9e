"""``EfficientViTSupernet``: every subnet of an :class:`EfficientViTSpace` in one weight-sharing network.

The same face as the MetaBlock :class:`~slimformer.supernet.Supernet`: ``set_active(cfg)`` then call it
like a model; ``extract_subnet(cfg)`` returns a standalone :class:`EfficientViTNet` holding copies of the
active slices (the two agree to float precision); ``load_subnet(cfg, net)`` writes a standalone model's
weights back, which is how timm's EfficientViT-M weights enter the supernet. ``slices(cfg)`` is the one
map, keyed by the standalone model's state-dict names, that all three use.
"""
from __future__ import annotations

import torch
from torch import nn

from .._elastic import Slices, read_slices, write_slices
from ._config import EfficientViTConfig
from ._elastic import ElasticEViTBlock, ElasticNormLinear, ElasticPatchEmbed, ElasticSubsample
from ._model import EfficientViTNet
from ._space import EfficientViTSpace


class _Stage(nn.Module):
    def __init__(self, space: EfficientViTSpace, si: int):
        super().__init__()
        mw = space.max_widths
        self.downsample = ElasticSubsample(mw[si - 1], mw[si]) if si > 0 else None
        cga = {"max_heads": space.heads[-1], "max_chunk": space.max_chunk(si), "max_qk": space.qk_dims[-1],
                   "max_v": space.max_v(si), "max_k": space.kernels[-1]}
        window = min(space.window, EfficientViTConfig.resolution(space.largest(), si))
        self.blocks = nn.ModuleList(ElasticEViTBlock(mw[si], space.max_hidden(si), cga, window)
                                    for _ in range(space.depths[si]))


class EfficientViTSupernet(nn.Module):
    """The EfficientViT supernet of ``space``."""

    def __init__(self, space: EfficientViTSpace):
        super().__init__()
        self.space = sp = space
        self.patch_embed = ElasticPatchEmbed(sp.in_chans, sp.max_widths[0])
        self.stages = nn.ModuleList(_Stage(sp, si) for si in range(3))
        self.head = ElasticNormLinear(sp.max_widths[-1], sp.num_classes)
        self.head_dist = ElasticNormLinear(sp.max_widths[-1], sp.num_classes) if sp.distillation else None
        self.num_classes = sp.num_classes
        self.distilled_training = False
        self._active = sp.largest()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- active subnet
    def set_active(self, cfg: EfficientViTConfig) -> EfficientViTSupernet:
        self._active = self.space.validate(cfg)
        return self

    @property
    def active_config(self) -> EfficientViTConfig:
        return self._active

    def set_mixture(self, weights) -> None:
        if weights:
            raise NotImplementedError("Gumbel mixtures of block kinds do not apply to the EfficientViT family "
                                      "(every position holds one block kind)")

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self._active
        x = self.patch_embed(x, cfg.stages[0].width)
        for si, stage in enumerate(self.stages):
            width = cfg.stages[si].width
            if stage.downsample is not None:
                x = stage.downsample(x, cfg.stages[si - 1].width, width)
            for pos, b in enumerate(cfg.stages[si].blocks):
                x = stage.blocks[pos](x, width, b, cfg.window_size(si))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        c = self._active.num_features
        x = x.mean((2, 3))
        if pre_logits:
            return x
        logits = self.head(x, c)
        if self.head_dist is None:
            return logits
        dist = self.head_dist(x, c)
        if self.distilled_training and self.training:
            return logits, dist
        return (logits + dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    # ----------------------------------------------------------------- weights of one subnet
    def slices(self, cfg: EfficientViTConfig) -> Slices:
        """Every tensor of the standalone model of ``cfg``: its state-dict name -> (supernet tensor, index)."""
        out = self.patch_embed.slices("patch_embed", cfg.stages[0].width)
        for si, stage in enumerate(self.stages):
            width = cfg.stages[si].width
            if stage.downsample is not None:
                out.update(stage.downsample.slices(f"stages.{si}.downsample", cfg.stages[si - 1].width, width))
            for pos, b in enumerate(cfg.stages[si].blocks):
                out.update(stage.blocks[pos].slices(f"stages.{si}.blocks.{pos}", width, b))
        out.update(self.head.slices("head", cfg.num_features))
        if self.head_dist is not None:
            out.update(self.head_dist.slices("head_dist", cfg.num_features))
        return out

    def extract_subnet(self, cfg: EfficientViTConfig | None = None) -> EfficientViTNet:
        cfg = self.space.validate(cfg or self._active)
        net = EfficientViTNet(cfg).to(next(self.parameters()).device)
        net.load_state_dict(read_slices(self.slices(cfg)), strict=True)
        return net.train(self.training)

    def load_subnet(self, cfg: EfficientViTConfig, net: EfficientViTNet, *, skip_head: bool = False) -> None:
        cfg = self.space.validate(cfg)
        sl = self.slices(cfg)
        if skip_head:
            sl = {k: v for k, v in sl.items() if not k.startswith(("head.", "head_dist."))}
        write_slices(sl, net.state_dict())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.jit.ignore
    def no_weight_decay(self):
        return {k for k, _ in self.named_parameters() if "attention_biases" in k}
