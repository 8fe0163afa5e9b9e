"""``export_model``: write a folded subnet as pt / ONNX / TorchScript / CoreML, checked, with a model card.

Every format is written from the folded model (``fold_bn``) and checked against the unfolded PyTorch
model on random input of two batch sizes (ONNX and TorchScript: max |d| <= 1e-4, else an error).
``model.pt`` stores the unfolded weights with the architecture and the card, so it can be fine-tuned
again; ``slimformer.load(..., fold=True)`` folds on load.
"""
from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .._errors import SlimformerError
from .._io import atomic_torch_save, atomic_write_bytes, atomic_write_json, check_out_dir
from .._validate import check_int
from .._version import __version__
from ..latency_lut._bundle import quiet, save_package
from ..latency_lut._measure import export_onnx as onnx_bytes
from ..supernet import EfficientFormerNet, count_macs, count_params
from ._card import build_card, default_class_names, predicted_latency
from ._fold import fold_bn
from ._load import MODEL_FORMAT, MODEL_VERSION, Source

FORMATS = ("pt", "onnx", "torchscript", "coreml")
TOLERANCE = 1e-4
FILENAMES = {"pt": "model.pt", "onnx": "model.onnx", "torchscript": "model.ts", "coreml": "model.mlpackage"}


def _example(model: EfficientFormerNet, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = model.arch
    return torch.randn(batch, a.in_chans, a.img_size, a.img_size, generator=g)


def export_onnx(model: torch.nn.Module, path: str | Path, *, img_size: int, in_chans: int = 3) -> Path:
    """``model`` as ONNX (input ``input``, output ``logits``, dynamic batch), atomically.

    The bytes come from the tables' exporter (:func:`slimformer.latency_lut.export_onnx`), so a deployed
    file and a table entry are the same kind of graph: its settings are ``latency_lut.ONNX_EXPORT``."""
    x = torch.randn(1, in_chans, img_size, img_size)
    return atomic_write_bytes(path, onnx_bytes(model, (x,), input_names=["input"], output_names=["logits"]))


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
    try:
        with quiet():
            import coremltools  # noqa: F401
    except ImportError:
        raise SlimformerError("CoreML export needs coremltools: pip install 'slimformer[coreml]' "
                              "(conversion runs on Linux; running the model needs macOS)") from None


# ops a converted inference graph must not hold: training-only or left for the folding to remove
TRAINING_ONLY_OPS = frozenset({"dropout", "batch_norm", "instance_norm", "random_bernoulli", "random_uniform"})


def coreml_summary(spec) -> dict[str, Any]:
    """What an ML Program holds, read from its spec (works on any OS): I/O names, types and shapes, the op
    types used, and the weights (fp16/fp32 constants with at least one dimension) by precision."""
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2

    ops: dict[str, int] = {}
    weights: dict[str, int] = {}

    names = {MIL_pb2.FLOAT16: "float16", MIL_pb2.FLOAT32: "float32"}
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                ops[op.type] = ops.get(op.type, 0) + 1
                if op.type != "const" or not op.outputs:
                    continue
                t = op.outputs[0].type.tensorType
                dims = [int(d.constant.size) for d in t.dimensions]
                if dims and t.dataType in names:
                    weights[names[t.dataType]] = weights.get(names[t.dataType], 0) + int(np.prod(dims))

    def io(f):
        t = f.type
        kind = t.WhichOneof("Type")
        if kind == "multiArrayType":
            dt = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(t.multiArrayType.dataType)
            return {"name": f.name, "type": f"multiarray {dt.lower()}", "shape": list(t.multiArrayType.shape)}
        return {"name": f.name, "type": kind}

    return {"spec_version": int(spec.specificationVersion), "model_type": spec.WhichOneof("Type"),
            "inputs": [io(f) for f in spec.description.input], "outputs": [io(f) for f in spec.description.output],
            "op_types": dict(sorted(ops.items())), "weights_by_precision": weights,
            "predicted_feature": spec.description.predictedFeatureName or None,
            "metadata": dict(spec.description.metadata.userDefined)}


def export_coreml(model: torch.nn.Module, path: str | Path, *, img_size: int, in_chans: int = 3,
                  class_names: list[str] | None = None, description: str = "",
                  metadata: dict[str, str] | None = None) -> dict:
    """A package ready for an app: ML Program (iOS 16), fp16 compute, fp32 input ``input`` (1, C, H, W,
    normalised as the card says) and fp32 output ``logits`` as in the ONNX file, class labels (a CoreML
    classifier: also ``classLabel``), description and metadata. Written atomically; prediction parity
    is checked on macOS, and skipped elsewhere (coremltools predicts only on macOS), which it says."""
    _require_coremltools()
    with quiet():
        import coremltools as ct

    x = torch.randn(1, in_chans, img_size, img_size)
    labels = list(class_names) if class_names else None
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(model.eval(), (x,), check_trace=False)
            mlmodel = ct.convert(
                traced, inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
                outputs=[ct.TensorType(name="logits", dtype=np.float32)],
                classifier_config=ct.ClassifierConfig(labels, predicted_feature_name="classLabel") if labels else None,
                convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                minimum_deployment_target=ct.target.iOS16)
    except Exception as e:  # noqa: BLE001 - the converter raises anything: one line for the user
        msg = (str(e).strip().splitlines() or [""])[-1][:200]
        raise SlimformerError(f"CoreML conversion failed (coremltools {ct.__version__}, torch "
                              f"{torch.__version__}): {type(e).__name__}: {msg}") from None
    if labels:  # a CoreML classifier: its score dictionary gets the ONNX output's name
        spec = mlmodel.get_spec()
        ct.utils.rename_feature(spec, spec.description.predictedProbabilitiesName, "logits")
        with quiet():
            mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    mlmodel.short_description = description
    mlmodel.author = "slimformer"
    mlmodel.license = "see the model card"
    mlmodel.version = metadata.get("slimformer_version", "") if metadata else ""
    mlmodel.input_description["input"] = (f"RGB image, 1x{in_chans}x{img_size}x{img_size} float32, scaled to "
                                          "[0, 1] and normalised with the ImageNet mean/std (see the model card)")
    mlmodel.output_description["logits"] = ("class scores (logits, the ONNX model's output 'logits'), by class label"
                                            if labels else "class scores (logits), as the ONNX model's output")
    if labels:
        mlmodel.output_description["classLabel"] = "the highest-scoring class"
    for k, v in (metadata or {}).items():
        mlmodel.user_defined_metadata[k] = v
    spec = mlmodel.get_spec()
    info = coreml_summary(spec)
    info["class_labels"] = len(labels) if labels else 0
    save_package(mlmodel, Path(path))
    if sys.platform == "darwin":
        got = mlmodel.predict({"input": x.numpy()})["logits"]
        with torch.no_grad():
            ref = model(x).numpy().ravel()
        vals = np.array([got[c] for c in labels]) if labels else np.asarray(got).ravel()
        info["parity_max_abs_diff"] = float(np.abs(vals - ref).max())
        info["note"] = f"prediction parity on this Mac (fp16 compute): max |d| {info['parity_max_abs_diff']:.3g}"
    else:
        info["note"] = f"prediction parity skipped: coremltools predicts only on macOS (this is {sys.platform})"
    return info


def _coreml_description(src: Source, class_names, lut_dir) -> dict[str, Any]:
    """Class labels, a one-line description and metadata for the CoreML package, from the model card's fields."""
    cfg = src.model.arch
    names = class_names or src.class_names
    names = names if names and len(names) == cfg.num_classes else default_class_names(cfg.num_classes)
    lat = {k: v["ms"] for k, v in predicted_latency(cfg, lut_dir=lut_dir).items() if "ms" in v}
    desc = (f"slimformer EfficientFormer-style subnet {cfg.summary()}: {count_params(cfg) / 1e6:.2f} M params, "
            f"{count_macs(cfg) / 1e6:.0f} M MACs, {cfg.num_classes} classes"
            + "".join(f"; predicted {v:.3f} ms on {k}" for k, v in lat.items() if k.startswith("iphone")))
    meta = {"slimformer_version": __version__, "arch": cfg.to_json(), "summary": cfg.summary(),
            "preprocess": json.dumps({"img_size": cfg.img_size, "mean": list(IMAGENET_DEFAULT_MEAN),
                                      "std": list(IMAGENET_DEFAULT_STD), "scale": "1/255", "crop_pct": 0.875}),
            "predicted_latency_ms": json.dumps(lat), "source": json.dumps(src.origin, default=str)}
    return {"class_names": names, "description": desc, "metadata": meta}


def _check_request(formats: tuple[str, ...], repeats: int, warmup: int) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SlimformerError(f"unknown export format {unknown[0]!r}: choose from {', '.join(FORMATS)}")
    if not formats:
        raise SlimformerError("nothing to export: give at least one --format")
    if "coreml" in formats:  # say so before spending time on the other formats
        _require_coremltools()
    check_int(repeats, "--repeats", lo=1)
    check_int(warmup, "warmup runs", lo=0)


def _write_formats(src: Source, folded: torch.nn.Module, out: Path, formats: tuple[str, ...],
                   checks: list[torch.Tensor], parity: dict[str, float], *, class_names,
                   lut_dir) -> tuple[dict[str, str], dict[str, Any]]:
    """Write each format from the folded model, adding its parity with the unfolded one to ``parity``;
    returns the files written (by format) and the CoreML summary (if any)."""
    model, a = src.model, src.model.arch
    files: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for fmt in formats:
        path = out / FILENAMES[fmt]
        if fmt == "onnx":
            export_onnx(folded, path, img_size=a.img_size, in_chans=a.in_chans)
            parity["onnx"] = onnx_max_diff(path, model, checks)
        elif fmt == "torchscript":
            export_torchscript(folded, path, img_size=a.img_size, in_chans=a.in_chans)
            parity["torchscript"] = torchscript_max_diff(path, model, checks)
        elif fmt == "coreml":
            extra["coreml"] = export_coreml(folded, path, img_size=a.img_size, in_chans=a.in_chans,
                                            **_coreml_description(src, class_names, lut_dir))
        files[fmt] = path.name
    bad = {k: v for k, v in parity.items() if k != "folded_vs_unfolded" and v > TOLERANCE}
    if bad:
        k, v = next(iter(bad.items()))
        raise SlimformerError(f"{k} export disagrees with PyTorch: max |d| = {v:.3g} > {TOLERANCE:g}")
    return files, extra


def _measure_folded(folded: torch.nn.Module, a, out: Path, files: dict[str, str], *, warmup: int,
                    repeats: int) -> dict:
    """The ONNX model's latency here, on a temporary ONNX file if none was asked for."""
    from ._measure import measure_onnx

    onnx_path = out / FILENAMES["onnx"]
    if "onnx" not in files:  # measure on a temporary ONNX file even if the user did not ask for one
        onnx_path = out / ".measure.onnx"
        export_onnx(folded, onnx_path, img_size=a.img_size, in_chans=a.in_chans)
    measured = measure_onnx(onnx_path, img_size=a.img_size, batch=1, threads=1, warmup=warmup,
                            repeats=repeats, in_chans=a.in_chans)
    if "onnx" not in files:
        onnx_path.unlink(missing_ok=True)
    return measured


def export_model(source: Source | EfficientFormerNet, out_dir: str | Path, *, formats: tuple[str, ...] = ("pt", "onnx"),
                 measure: bool = True, repeats: int = 30, warmup: int = 5, class_names: list[str] | None = None,
                 lut_dir: str | Path | None = None, accuracy: dict | None = None) -> dict[str, Any]:
    """Fold, write each of ``formats`` into ``out_dir``, check parity, and write ``card.json``.

    Returns the card (which lists the files written and the parity figures).
    """
    src = source if isinstance(source, Source) else Source(model=source, origin={"model": "in memory"})
    _check_request(formats, repeats, warmup)
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
    parity: dict[str, float] = {"folded_vs_unfolded": fold_diff}
    files, extra = _write_formats(src, folded, out, formats, checks, parity, class_names=class_names, lut_dir=lut_dir)
    measured = _measure_folded(folded, a, out, files, warmup=warmup, repeats=repeats) if measure else None
    card = build_card(src, files=files, parity=parity, measured=measured, extra=extra,
                      class_names=class_names or src.class_names, lut_dir=lut_dir, accuracy=accuracy)
    if "pt" in formats:
        atomic_torch_save(out / FILENAMES["pt"], {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                                                  "arch": a.to_dict(), "state_dict": model.state_dict(),
                                                  "card": card})
    atomic_write_json(out / "card.json", card)
    return card
