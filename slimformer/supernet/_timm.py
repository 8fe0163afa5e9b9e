"""Pretrained EfficientFormer weights from a local file: timm's format or the original repository's.

``checkpoint_filter_fn`` maps a foreign state dict to ours (which is timm's naming, see ``_model``);
``load_pretrained`` builds the preset and loads a local file; ``Supernet.load_subnet`` then places
the weights into the supernet's slices. Nothing is downloaded: the user passes a file.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from timm.models.efficientformer import checkpoint_filter_fn as _timm_filter

from .._errors import SlimformerError
from ._config import ArchConfig
from ._model import EfficientFormerNet
from ._presets import get_arch
from ._space import SearchSpace
from ._supernet import Supernet


def checkpoint_filter_fn(state_dict: dict, model: EfficientFormerNet | None = None) -> dict:
    """Map a timm or original-repository (snap-research) EfficientFormer state dict to our keys.

    Unwraps ``{'model': ...}`` / ``{'state_dict': ...}`` containers and strips a ``module.`` prefix
    (DDP); original keys (``patch_embed.*``, ``network.*``, ``dist_head``) go through timm's own map.
    """
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
            break
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    return _timm_filter(state_dict, model)


def read_state_dict(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` with one clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise SlimformerError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a torn/foreign file
        raise SlimformerError(f"{path} is not a readable PyTorch weights file ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise SlimformerError(f"{path} does not hold a state dict")
    return obj


def load_pretrained(path: str | Path, arch: str | ArchConfig = "l1") -> EfficientFormerNet:
    """Build ``arch`` (a preset name or config) and load EfficientFormer weights from a local ``path``."""
    cfg = get_arch(arch) if isinstance(arch, str) else arch
    model = EfficientFormerNet(cfg)
    state = checkpoint_filter_fn(read_state_dict(path), model)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise SlimformerError(f"{path} does not match {cfg.name or 'the architecture'}: "
                              f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    if missing or unexpected:
        some = (missing or unexpected)[:3]
        raise SlimformerError(
            f"{path} does not match {cfg.name or 'the architecture'}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected keys (e.g. {', '.join(some)})")
    return model.eval()


def supernet_from_pretrained(path: str | Path, arch: str | ArchConfig = "l1",
                             space: SearchSpace | None = None) -> Supernet:
    """A supernet of ``space`` whose ``arch`` slices hold the pretrained weights in ``path``.

    The classifier is kept only if the space has the file's number of classes.
    """
    if space is not None and space.family == "efficientvit":
        from .efficientvit._timm import supernet_from_pretrained as evit_from_pretrained

        return evit_from_pretrained(path, arch, space)
    net = load_pretrained(path, arch)
    space = space or SearchSpace()
    cfg = net.arch
    sup = Supernet(space)
    same_head = cfg.num_classes == space.num_classes
    if not same_head:
        cfg = replace(cfg, num_classes=space.num_classes)
    if cfg.img_size != space.img_size:
        raise SlimformerError(f"pretrained {arch} is for {cfg.img_size}px but the space is {space.img_size}px")
    sup.load_subnet(cfg, net if same_head else _retarget(net, cfg), skip_head=not same_head)
    return sup


def _retarget(net: EfficientFormerNet, cfg: ArchConfig) -> EfficientFormerNet:
    out = EfficientFormerNet(cfg)
    own = out.state_dict()
    own.update({k: v for k, v in net.state_dict().items() if not k.startswith(("head.", "head_dist."))})
    out.load_state_dict(own)
    return out
