"""Getting a model: from a search run, a supernet, a weights file, or an exported file.

- ``resolve_source(src, supernet=..., weights=...)``: what ``slimformer export`` exports;
- ``load(path)``: an exported ``model.pt`` (or a folder holding one), a search run dir with
  ``arch.json`` + ``subnet.pt``, a TorchScript file or an ONNX file;
- ``create_model(cfg, weights=...)``: timm-style construction from a config and a local weights file.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import SlimformerError
from .._io import read_json
from .._validate import finite_tensors
from ..data import build_loaders
from ..supernet import (
    ArchConfig,
    EfficientFormerNet,
    checkpoint_filter_fn,
    load_supernet,
    read_arch,
    recalibrate_bn,
)
from ..supernet._timm import read_state_dict

MODEL_FORMAT = "slimformer.model"
MODEL_VERSION = 1


@dataclass
class Source:
    """A model to export plus what is known about where it came from."""

    model: EfficientFormerNet
    origin: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)   # arch.json contents when from a search run
    run_dir: Path | None = None
    class_names: list[str] | None = None


def _arch_of(src: str | Path) -> tuple[ArchConfig, dict, Path | None]:
    """(config, search/prune output around it or {}, run dir) of a preset, arch JSON or run directory."""
    cfg, info, folder = read_arch(src)
    return cfg, (info if "arch" in info else {}), folder


def _state_dict_from(obj: Any, path: Path) -> dict:
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        return obj["state_dict"]
    if isinstance(obj, dict):
        for k in ("state_dict", "model", "model_ema"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SlimformerError(f"{path} does not hold a model state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_weights(model: EfficientFormerNet, path: Path) -> EfficientFormerNet:
    sd = _state_dict_from(read_state_dict(path), path)
    finite_tensors(sd, str(path))
    if not any(k.startswith("stages.") for k in sd):  # original-repository or other naming: timm's map
        sd = checkpoint_filter_fn(sd, model)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        raise SlimformerError(f"{path} does not fit this architecture ({lines[0] if lines else 'shape mismatch'})") \
            from None
    if missing or unexpected:
        some = ", ".join((missing or unexpected)[:3])
        raise SlimformerError(f"{path} does not fit this architecture: {len(missing)} missing and "
                              f"{len(unexpected)} unexpected keys (e.g. {some})")
    return model.eval()


def _class_names_from(*sources: Any) -> list[str] | None:
    for s in sources:
        if isinstance(s, dict):
            names = s.get("class_names")
            if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
                return names
    return None


def _recal_batches(data: str, img_size: int, batch_size: int, n: int, seed: int = 0):
    loaders = build_loaders(str(data), img_size=img_size, batch_size=batch_size, seed=seed)
    batches = []
    for b in loaders.train:
        if len(batches) >= n:
            break
        batches.append(b)
    return batches, list(getattr(loaders, "class_names", None) or [])


def resolve_source(src: str | Path, *, supernet: str | Path | None = None, weights: str | Path | None = None,
                   random_init: bool = False, recal_data: str | None = None, recal_batches: int = 20,
                   batch_size: int = 64) -> Source:
    """The model ``slimformer export`` exports: a search run (arch.json + subnet.pt, or + ``supernet``),
    an arch JSON or preset with ``supernet`` or ``weights``, or (``random_init``) random weights.

    With a supernet, ``recal_data`` (``builtin`` or an ImageFolder) re-estimates the subnet's BatchNorm
    statistics on ``recal_batches`` training batches before extraction (a search run's ``subnet.pt`` is
    already recalibrated by the search)."""
    cfg, info, run_dir = _arch_of(src)
    origin: dict[str, Any] = {"arch": str(src)}
    recorded = info.get("supernet") if isinstance(info.get("supernet"), str) else None
    if supernet is None and weights is None and recorded and Path(recorded).is_file() and not (
            run_dir is not None and (run_dir / "subnet.pt").is_file()):
        supernet = recorded  # the checkpoint the search used, as arch.json records it
    meta: dict[str, Any] = {}
    if supernet is not None:
        ck = load_supernet(supernet)
        faults = ck.space.check(cfg)
        if faults:
            raise SlimformerError(f"{src} is not a subnet of the supernet's space {ck.space.name!r}: {faults[0]}")
        meta = dict(ck.meta)
        if recal_data is not None:
            batches, names = _recal_batches(recal_data, cfg.img_size, batch_size, recal_batches)
            ck.model.set_active(cfg)
            used = recalibrate_bn(ck.model, batches)
            origin["bn_recalibration"] = {"data": str(recal_data), "batches": used}
            if names and "class_names" not in meta:
                meta["class_names"] = names
        model = ck.model.extract_subnet(cfg).eval()
        origin["supernet"] = str(ck.path)
    elif weights is not None:
        model = _load_weights(EfficientFormerNet(cfg), Path(weights))
        origin["weights"] = str(weights)
    elif run_dir is not None and (run_dir / "subnet.pt").is_file():
        model = _load_weights(EfficientFormerNet(cfg), run_dir / "subnet.pt")
        origin["weights"] = str(run_dir / "subnet.pt")
    elif random_init:
        model = EfficientFormerNet(cfg).eval()
        origin["weights"] = "random initialisation"
    else:
        raise SlimformerError(f"no weights for {src}: pass --supernet CKPT (or --weights FILE), or a search run "
                              "directory holding subnet.pt")
    return Source(model=model, origin=origin, run_info=info, run_dir=run_dir,
                  class_names=_class_names_from(info, meta))


# ------------------------------------------------------------------------------------------ loading
class OnnxModel:
    """An exported ONNX model behind a torch-like call: ``OnnxModel(path)(x) -> logits tensor``."""

    def __init__(self, path: str | Path, *, threads: int = 1):
        from ._measure import ort_session

        self.path = Path(path)
        try:
            self.session = ort_session(self.path, threads=threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a foreign file
            raise SlimformerError(f"{self.path} is not a loadable ONNX model ({type(e).__name__})") from None
        self.input_name = self.session.get_inputs()[0].name
        card = find_card(self.path)
        self.card = card or {}

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return torch.from_numpy(self.session.run(None, {self.input_name: a.astype(np.float32)})[0])

    def eval(self) -> OnnxModel:
        return self


def find_card(model_path: str | Path) -> dict | None:
    """The model card beside an exported file: ``<stem>.card.json`` or ``card.json`` in its folder."""
    p = Path(model_path)
    for c in (p.with_name(p.stem + ".card.json"), p.parent / "card.json"):
        if c.is_file():
            return read_json(c, "model card")
    return None


def _model_file(path: Path) -> Path | None:
    for name in ("model.pt", "model.onnx", "model.ts"):
        if (path / name).is_file():
            return path / name
    return None


def load(path: str | Path, *, fold: bool = False, threads: int = 1):
    """Load an exported model or a search run.

    ``model.pt`` (what ``slimformer export --format pt`` writes) and run dirs give an
    :class:`EfficientFormerNet` in eval mode (``fold=True``: BatchNorm etc. folded, see ``fold_bn``);
    ``.ts``/``.torchscript`` gives the TorchScript module; ``.onnx`` gives an :class:`OnnxModel`.
    """
    p = Path(path)
    if p.is_dir():
        f = _model_file(p)
        if f is None:
            if (p / "arch.json").is_file() and (p / "subnet.pt").is_file():
                model = resolve_source(p).model
                return _maybe_fold(model, fold)
            raise SlimformerError(f"{p} holds no exported model (model.pt/.onnx/.ts) nor arch.json + subnet.pt")
        p = f
    if not p.is_file():
        raise SlimformerError(f"model file not found: {p}")
    if p.suffix == ".onnx":
        return OnnxModel(p, threads=threads)
    if p.suffix in (".ts", ".torchscript"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.load(str(p), map_location="cpu").eval()
        except Exception as e:  # noqa: BLE001
            raise SlimformerError(f"{p} is not a readable TorchScript file ({type(e).__name__})") from None
    obj = read_state_dict(p)
    if obj.get("format") == MODEL_FORMAT:
        if obj.get("version") != MODEL_VERSION:
            raise SlimformerError(f"{p} has model format version {obj.get('version')}, this slimformer reads "
                                  f"{MODEL_VERSION}")
        model = EfficientFormerNet(ArchConfig.from_dict(obj["arch"]))
        model.load_state_dict(obj["state_dict"])
        model.card = obj.get("card") or {}
        return _maybe_fold(model.eval(), fold)
    raise SlimformerError(f"{p} is not a slimformer model file (a plain state dict needs its architecture: "
                          "use slimformer.create_model(arch, weights=...))")


def _maybe_fold(model: EfficientFormerNet, fold: bool):
    if not fold:
        return model
    from ._fold import fold_bn

    card = getattr(model, "card", None)
    out = fold_bn(model)
    if card is not None:
        out.card = card
    return out


def create_model(arch: str | Path | dict | ArchConfig, *, weights: str | Path | None = None,
                 num_classes: int | None = None, fold: bool = False) -> EfficientFormerNet:
    """timm-style: build the subnet ``arch`` (config, dict, preset name or arch JSON file) and load
    ``weights`` (a slimformer ``model.pt``, a search run's ``subnet.pt`` or an EfficientFormer state dict)."""
    if isinstance(arch, ArchConfig):
        cfg = arch
    elif isinstance(arch, dict):
        cfg = ArchConfig.from_dict(arch)
    else:
        cfg = _arch_of(arch)[0]
    if num_classes is not None and num_classes != cfg.num_classes:
        if weights is not None:
            raise SlimformerError("num_classes cannot change while loading weights; load, then reset_classifier()")
        cfg = replace(cfg, num_classes=int(num_classes))
    model = EfficientFormerNet(cfg)
    if weights is not None:
        _load_weights(model, Path(weights))
    return _maybe_fold(model.eval(), fold)


