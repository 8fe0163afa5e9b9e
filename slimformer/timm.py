"""slimformer's models in timm's registry.

``import slimformer.timm`` (importing the model class does it too) registers ``slimformer_subnet`` and
the presets ``slimformer_l1/l3/l7``; then timm builds a searched subnet from an exported file alone::

    model = timm.create_model("slimformer_subnet", pretrained=True, pretrained_cfg_overlay=dict(file="out/model.pt"))

or from a search run: ``arch="runs/search-Y"`` with ``file="runs/search-Y/subnet.pt"``. The models carry
timm's ``pretrained_cfg`` (so ``timm.data.resolve_model_data_config`` gives their input size and
transform), ``features_only=True``/``forward_intermediates`` give NCHW stage features.
"""
from __future__ import annotations

from .supernet._model import slimformer_l1, slimformer_l3, slimformer_l7, slimformer_subnet

__all__ = ["slimformer_l1", "slimformer_l3", "slimformer_l7", "slimformer_subnet"]
