"""slimformer: find the most accurate EfficientFormer-style vision transformer under a latency budget."""
from __future__ import annotations

__version__ = "0.1.0"
