"""slimformer: find the most accurate EfficientFormer-style vision transformer under a latency budget."""
from __future__ import annotations

from ._version import __version__ as __version__


def load(path, **kwargs):
    """Load an exported model (``model.pt``/``.onnx``/``.ts``) or a search run dir; see ``slimformer.export.load``."""
    from .export import load as _load

    return _load(path, **kwargs)


def create_model(arch, *, weights=None, **kwargs):
    """timm-style: build a searched subnet from its config (or arch JSON / preset) and a local weights file."""
    from .export import create_model as _create

    return _create(arch, weights=weights, **kwargs)
