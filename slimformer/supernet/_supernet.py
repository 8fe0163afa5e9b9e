"""``Supernet``: every subnet of a :class:`SearchSpace` in one weight-sharing network.

Use ``set_active(cfg)`` then call the supernet like any model, or ``extract_subnet(cfg)`` for a
standalone :class:`EfficientFormerNet` with physically sliced weights (the two agree to float
precision). ``load_subnet(cfg, model)`` writes a standalone model's weights back into the slices,
which is how pretrained timm EfficientFormer weights enter the supernet.

Gumbel mode: ``set_mixture({(stage, pos): weights})`` makes those positions output
``sum_k weights[k] * path_k(x)`` over ``space.kinds_at(stage)`` (EfficientFormer's supernet). A path
whose weight is a constant zero is not computed. The MB4D path uses the active block's MLP ratio
(the largest if the block is a skip); the MB3D path uses the active block's attention dims if it is
an MB3D block, else the space's largest.

Internally the supernet keeps feature maps (B, C, H, W) and converts to tokens only around MB3D
blocks, so positions with a mixture of kinds compose; standalone models flatten once, as timm does.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ._config import ArchConfig, BlockConfig, mb4d
from ._elastic import (
    ElasticDownsample,
    ElasticHead,
    ElasticMB3D,
    ElasticMB4D,
    ElasticStem,
    read_slices,
    write_slices,
)
from ._layout import stage_resolution
from ._model import MB3D, MB4D, EfficientFormerNet
from ._space import SearchSpace


class SupernetPosition(nn.Module):
    """One block position: an MB4D and (in MB3D stages) an MB3D, sharing nothing but the position."""

    def __init__(self, space: SearchSpace, si: int):
        super().__init__()
        dim, hidden = space.max_widths[si], space.max_hidden(si)
        self.mb4d = ElasticMB4D(dim, hidden)
        self.mb3d = (ElasticMB3D(dim, space.heads[-1], space.qk_dims[-1], space.v_dims[-1], hidden,
                                 stage_resolution(space.img_size, si)) if si in space.mb3d_stages else None)


class SupernetStage(nn.Module):
    def __init__(self, space: SearchSpace, si: int):
        super().__init__()
        self.downsample = ElasticDownsample(space.max_widths[si - 1], space.max_widths[si]) if si > 0 else None
        self.blocks = nn.ModuleList(SupernetPosition(space, si) for _ in range(space.depths[si]))


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2) if x.dim() == 4 else x


def _to_map(x: torch.Tensor, res: int) -> torch.Tensor:
    if x.dim() == 4:
        return x
    B, _, C = x.shape
    return x.transpose(1, 2).reshape(B, C, res, res)


class Supernet(nn.Module):
    """The EfficientFormer MetaBlock supernet of ``space``."""

    def __init__(self, space: SearchSpace | None = None):
        super().__init__()
        self.space = space or SearchSpace()
        sp = self.space
        self.stem = ElasticStem(sp.in_chans, sp.stem_widths[-1], sp.max_widths[0])
        self.stages = nn.ModuleList(SupernetStage(sp, si) for si in range(4))
        self.head = ElasticHead(sp.max_widths[-1], sp.num_classes, sp.distillation)
        self.num_classes = sp.num_classes
        self.distilled_training = False
        self._active = sp.largest()
        self._mixture: dict[tuple[int, int], torch.Tensor] = {}
        self.apply(_init_weights)

    # ----------------------------------------------------------------- active subnet
    def set_active(self, cfg: ArchConfig) -> Supernet:
        self._active = self.space.validate(cfg)
        return self

    @property
    def active_config(self) -> ArchConfig:
        return self._active

    def set_mixture(self, weights: dict[tuple[int, int], torch.Tensor] | None) -> None:
        """Gumbel mode: per (stage, position) weights over ``space.kinds_at(stage)``; ``None`` turns it off."""
        self._mixture = dict(weights or {})

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self._active
        x = self.stem(x, cfg.stem_width, cfg.stages[0].width)
        for si, stage in enumerate(self.stages):
            width, res = cfg.stages[si].width, cfg.resolution(si)
            if stage.downsample is not None:
                x = stage.downsample(_to_map(x, res * 2), cfg.stages[si - 1].width, width)
            for pos, position in enumerate(stage.blocks):
                block = cfg.block(si, pos)
                w = self._mixture.get((si, pos))
                if w is None:
                    if block.kind == "mb4d":
                        x = position.mb4d(_to_map(x, res), width, block.hidden(width))
                    elif block.kind == "mb3d":
                        x = position.mb3d(_to_tokens(x), width, block)
                else:
                    x = self._mixed(position, _to_map(x, res), si, block, width, res, w)
        return F.layer_norm(_to_tokens(x), (cfg.num_features,), self.head.norm.weight[:cfg.num_features],
                            self.head.norm.bias[:cfg.num_features], self.head.norm.eps)

    def _mixed(self, position, x, si, block: BlockConfig, width, res, w: torch.Tensor) -> torch.Tensor:
        out = 0
        for k, kind in enumerate(self.space.kinds_at(si)):
            wk = w[k]
            if not wk.requires_grad and float(wk) == 0.0:
                continue
            if kind == "skip":
                y = x
            elif kind == "mb4d":
                ratio = block.mlp_ratio if block.kind != "skip" else self.space.max_mlp_ratio
                y = position.mb4d(x, width, mb4d(ratio).hidden(width))
            else:
                b3 = block if block.kind == "mb3d" else self.space.largest_mb3d()
                y = _to_map(position.mb3d(_to_tokens(x), width, b3), res)
            out = out + wk * y
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        c = self._active.num_features
        x = x.mean(dim=1)
        if pre_logits:
            return x
        logits = F.linear(x, self.head.head.weight[:, :c], self.head.head.bias)
        if self.head.head_dist is None:
            return logits
        dist = F.linear(x, self.head.head_dist.weight[:, :c], self.head.head_dist.bias)
        if self.distilled_training and self.training:
            return logits, dist
        return (logits + dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    # ----------------------------------------------------------------- weights of one subnet
    def _pairs(self, cfg: ArchConfig, net: EfficientFormerNet) -> Iterable[tuple[nn.Module, dict]]:
        """(standalone module, slices of the supernet) for every weighted part of ``cfg``."""
        yield net.stem, self.stem.slices(cfg.stem_width, cfg.stages[0].width)
        for si, stage in enumerate(self.stages):
            width = cfg.stages[si].width
            if stage.downsample is not None:
                ds = net.stages[si].downsample
                ds = ds[-1] if isinstance(ds, nn.Sequential) else ds
                yield ds, stage.downsample.slices(cfg.stages[si - 1].width, width)
            modules = [m for m in net.stages[si].blocks if isinstance(m, (MB4D, MB3D))]
            blocks = [(pos, b) for pos, b in enumerate(cfg.stages[si].blocks) if b.kind != "skip"]
            for m, (pos, b) in zip(modules, blocks, strict=True):
                position = stage.blocks[pos]
                if b.kind == "mb4d":
                    yield m, position.mb4d.slices(width, b.hidden(width))
                else:
                    yield m, position.mb3d.slices(width, b)
        yield net, self.head.slices(cfg.num_features)

    def extract_subnet(self, cfg: ArchConfig | None = None) -> EfficientFormerNet:
        """A standalone model of ``cfg`` (default: the active one) holding copies of its slices."""
        cfg = self.space.validate(cfg or self._active)
        device = next(self.parameters()).device
        net = EfficientFormerNet(cfg).to(device)
        for module, slices in self._pairs(cfg, net):
            own = module.state_dict()
            state = read_slices(slices)
            own.update(state)
            module.load_state_dict(own, strict=True)
        return net.train(self.training)

    def load_subnet(self, cfg: ArchConfig, net: EfficientFormerNet, *, skip_head: bool = False) -> None:
        """Write the weights of a standalone model of ``cfg`` into this supernet's slices."""
        cfg = self.space.validate(cfg)
        for module, slices in self._pairs(cfg, net):
            if module is net:
                if skip_head:
                    slices = {k: v for k, v in slices.items() if k.startswith("norm.")}
                write_slices(slices, {k: v for k, v in net.state_dict().items()})
            else:
                write_slices(slices, module.state_dict())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.jit.ignore
    def no_weight_decay(self):
        return {k for k, _ in self.named_parameters() if "attention_biases" in k}


def _init_weights(m: nn.Module):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
