"""Checks for values that come from users: command-line options, JSON files, checkpoints.

One rule everywhere: a number is of the right type (no ``"a"``, no ``true`` for an int, no ``2.5`` for a
count), finite (no NaN, no Infinity) and in range; a failure is one sentence naming the field. The CLI
uses the ``*_arg`` factories as argparse ``type=`` callbacks (argparse prints ``argument --lr: ...``);
readers of JSON and checkpoints call :func:`check_int` / :func:`check_float` / :func:`finite_tensors`,
which raise :class:`~slimformer._errors.SlimformerError`.

``CAPS`` are the stated upper bounds on architecture sizes: far above any EfficientFormer (L7 is 768
wide at 224 px), low enough that a typo cannot ask for terabytes.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import SlimformerError

CAPS = {
    "img_size": 1024,          # image side in pixels
    "in_chans": 16,
    "num_classes": 100_000,
    "stem_width": 1024,
    "width": 4096,             # channels of a stage
    "blocks": 64,              # block positions of a stage
    "mlp_ratio": 16.0,
    "heads": 64,
    "qk_dim": 512,             # per head
    "v_dim": 1024,             # per head
    "params": 1_000_000_000,   # whole model (4 GB of float32 weights; EfficientFormer-L7 has 82 M)
}


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(lo, hi, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}" if not lo_open else f"above {_num(lo)} and at most {_num(hi)}"
    if lo is not None:
        return ("positive" if lo == 0 else f"above {_num(lo)}") if lo_open else f"at least {_num(lo)}"
    return f"at most {_num(hi)}"


def _named(field: str, rest: str) -> str:
    return f"{field} {rest}" if field else rest


def check_float(value: Any, field: str, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), or one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SlimformerError(_named(field, f"must be a number, got {value!r}"))
    v = float(value)
    if not math.isfinite(v):
        raise SlimformerError(_named(field, f"must be a finite number, got {value!r}"))
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        raise SlimformerError(_named(field, f"must be {_range_text(lo, hi, lo_open)}, got {value!r}"))
    return v


def check_int(value: Any, field: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``; a float is accepted only when whole (``64.0``), never NaN."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SlimformerError(_named(field, f"must be a whole number, got {value!r}"))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SlimformerError(_named(field, f"must be {_range_text(lo, hi, False)}, got {value!r}"))
    return value


def check_choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SlimformerError(f"{field} must be one of {', '.join(choices)}, got {value!r}")
    return value


def finite_tensors(state: Mapping[str, Any], what: str) -> None:
    """Refuse a state dict holding NaN or infinite values (a diverged run's weights)."""
    import torch

    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise SlimformerError(f"{what} holds non-finite (NaN or infinite) values in {len(bad)} of {len(state)} "
                              f"tensors (e.g. {bad[0]}): the training that wrote it diverged")


# ----------------------------------------------------------------- argparse ``type=`` callbacks


def _arg(check: Callable[[Any], Any], parse: Callable[[str], Any], kind: str):
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check(value)
        except SlimformerError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = kind  # argparse names the type in some messages
    return convert


def int_arg(lo: int | None = None, hi: int | None = None):
    """An argparse type: a whole number in ``[lo, hi]``."""
    return _arg(lambda v: check_int(v, "", lo=lo, hi=hi), int, "a whole number")


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """An argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    return _arg(lambda v: check_float(v, "", lo=lo, hi=hi, lo_open=lo_open), float, "a number")


POSITIVE_INT = int_arg(1)
NONNEG_INT = int_arg(0)
SEED = int_arg(0, 2**63 - 1)
PORT = int_arg(1, 65535)
POSITIVE_FLOAT = float_arg(0, lo_open=True)
NONNEG_FLOAT = float_arg(0)
FRACTION = float_arg(0, 1)
ANY_FLOAT = float_arg()
IMG_SIZE = int_arg(32, CAPS["img_size"])
MAX_MB = float_arg(0, 4096, lo_open=True)  # an upload cap in MB
