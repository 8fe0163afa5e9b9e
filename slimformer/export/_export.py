"""``export_model``: write a folded subnet as pt / ONNX / TorchScript / CoreML, checked, with a model card.

Every format is written from the folded model (``fold_bn``) and checked against the unfolded PyTorch
model on random input of two batch sizes (ONNX and TorchScript: max |d| <= 1e-4, else an error).
``model.pt`` stores the unfolded weights with the architecture and the card, so it can be fine-tuned
again; ``slimformer.load(..., fold=True)`` folds on load.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import SlimformerError
from .._io import atomic_torch_save, atomic_write_bytes, atomic_write_json, check_out_dir
from .._validate import check_int
from ..supernet import EfficientFormerNet
from ._card import build_card
from ._fold import fold_bn
from ._load import MODEL_FORMAT, MODEL_VERSION, Source

FORMATS = ("pt", "onnx", "torchscript", "coreml")
TOLERANCE = 1e-4
FILENAMES = {"pt": "model.pt", "onnx": "model.onnx", "torchscript": "model.ts", "coreml": "model.mlpackage"}


def _example(model: EfficientFormerNet, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = model.arch
    return torch.randn(batch, a.in_chans, a.img_size, a.img_size, generator=g)


def export_onnx(model: torch.nn.Module, path: str | Path, *, img_size: int, in_chans: int = 3,
                opset: int = 18) -> Path:
    """``torch.onnx.export`` with a dynamic batch axis (input ``input``, output ``logits``), atomically."""
    x = torch.randn(1, in_chans, img_size, img_size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter: fast and mature for these convolution/attention graphs
            torch.onnx.export(model.eval(), (x,), buf, input_names=["input"], output_names=["logits"],
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except Exception:  # noqa: BLE001 - newer torch without it: the dynamo exporter
            buf = io.BytesIO()
            prog = torch.onnx.export(model.eval(), (x,), input_names=["input"], output_names=["logits"],
                                     dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            prog.save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def onnx_max_diff(path: str | Path, reference: torch.nn.Module, inputs: list[torch.Tensor]) -> float:
    from ._measure import ort_session

    sess = ort_session(path, threads=1)
    name = sess.get_inputs()[0].name
    worst = 0.0
    with torch.inference_mode():
        for x in inputs:
            got = sess.run(None, {name: x.numpy()})[0]
            worst = max(worst, float(np.abs(got - reference(x).numpy()).max()))
    return worst


def export_torchscript(model: torch.nn.Module, path: str | Path, *, img_size: int, in_chans: int = 3) -> Path:
    """Trace (shapes are read from the input, so any batch size works) and save atomically."""
    x = torch.randn(2, in_chans, img_size, img_size)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (x,), check_trace=False)
        traced = torch.jit.freeze(traced)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return atomic_write_bytes(path, buf.getvalue())


def torchscript_max_diff(path: str | Path, reference: torch.nn.Module, inputs: list[torch.Tensor]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(path), map_location="cpu").eval()
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            worst = max(worst, float((ts(x) - reference(x)).abs().max()))
    return worst


def _require_coremltools() -> None:
    import importlib.util

    if importlib.util.find_spec("coremltools") is None:
        raise SlimformerError("CoreML export needs coremltools: pip install 'slimformer[coreml]' "
                              "(conversion runs on Linux; running the model needs macOS)")


def export_coreml(model: torch.nn.Module, path: str | Path, *, img_size: int, in_chans: int = 3) -> dict:
    """Convert through coremltools (the ``coreml`` extra) and check the spec; predictions need macOS."""
    _require_coremltools()
    import coremltools as ct

    x = torch.randn(1, in_chans, img_size, img_size)
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), (x,), check_trace=False)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=x.shape)],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    spec = mlmodel.get_spec()
    outputs = [o.name for o in spec.description.output]
    if len(outputs) != 1:
        raise SlimformerError(f"CoreML conversion produced {len(outputs)} outputs, expected 1")
    mlmodel.save(str(path))
    return {"spec_version": int(spec.specificationVersion), "inputs": [i.name for i in spec.description.input],
            "outputs": outputs, "note": "predictions with coremltools need macOS; not run here"}


def export_model(source: Source | EfficientFormerNet, out_dir: str | Path, *, formats: tuple[str, ...] = ("pt", "onnx"),
                 measure: bool = True, repeats: int = 30, warmup: int = 5, class_names: list[str] | None = None,
                 lut_dir: str | Path | None = None, accuracy: dict | None = None) -> dict[str, Any]:
    """Fold, write each of ``formats`` into ``out_dir``, check parity, and write ``card.json``.

    Returns the card (which lists the files written and the parity figures).
    """
    src = source if isinstance(source, Source) else Source(model=source, origin={"model": "in memory"})
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SlimformerError(f"unknown export format {unknown[0]!r}: choose from {', '.join(FORMATS)}")
    if not formats:
        raise SlimformerError("nothing to export: give at least one --format")
    if "coreml" in formats:  # say so before spending time on the other formats
        _require_coremltools()
    check_int(repeats, "--repeats", lo=1)
    check_int(warmup, "warmup runs", lo=0)
    model = src.model.eval()
    a = model.arch
    if class_names is not None and len(class_names) != a.num_classes:
        raise SlimformerError(f"{len(class_names)} class names given for a model of {a.num_classes} classes: "
                              "give one name per class, in class-index order")
    out = check_out_dir(out_dir, what="output folder (-o)", allow=(*FILENAMES.values(), "card.json"))
    out.mkdir(parents=True, exist_ok=True)
    folded = fold_bn(model)
    checks = [_example(model, 1, 1), _example(model, 3, 2)]
    with torch.no_grad():
        fold_diff = max(float((folded(x) - model(x)).abs().max()) for x in checks)
    files: dict[str, str] = {}
    parity: dict[str, float] = {"folded_vs_unfolded": fold_diff}
    extra: dict[str, Any] = {}
    onnx_path = out / FILENAMES["onnx"]
    for fmt in formats:
        path = out / FILENAMES[fmt]
        if fmt == "onnx":
            export_onnx(folded, path, img_size=a.img_size, in_chans=a.in_chans)
            parity["onnx"] = onnx_max_diff(path, model, checks)
        elif fmt == "torchscript":
            export_torchscript(folded, path, img_size=a.img_size, in_chans=a.in_chans)
            parity["torchscript"] = torchscript_max_diff(path, model, checks)
        elif fmt == "coreml":
            extra["coreml"] = export_coreml(folded, path, img_size=a.img_size, in_chans=a.in_chans)
        files[fmt] = path.name
    bad = {k: v for k, v in parity.items() if k != "folded_vs_unfolded" and v > TOLERANCE}
    if bad:
        k, v = next(iter(bad.items()))
        raise SlimformerError(f"{k} export disagrees with PyTorch: max |d| = {v:.3g} > {TOLERANCE:g}")
    measured = None
    if measure:
        from ._measure import measure_onnx

        if "onnx" not in files:  # measure on a temporary ONNX file even if the user did not ask for one
            onnx_path = out / ".measure.onnx"
            export_onnx(folded, onnx_path, img_size=a.img_size, in_chans=a.in_chans)
        measured = measure_onnx(onnx_path, img_size=a.img_size, batch=1, threads=1, warmup=warmup,
                                repeats=repeats, in_chans=a.in_chans)
        if "onnx" not in files:
            onnx_path.unlink(missing_ok=True)
    card = build_card(src, files=files, parity=parity, measured=measured, extra=extra,
                      class_names=class_names or src.class_names, lut_dir=lut_dir, accuracy=accuracy)
    if "pt" in formats:
        atomic_torch_save(out / FILENAMES["pt"], {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                                                  "arch": a.to_dict(), "state_dict": model.state_dict(),
                                                  "card": card})
    atomic_write_json(out / "card.json", card)
    return card
