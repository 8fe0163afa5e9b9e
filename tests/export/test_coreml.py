"""``export --format coreml``: a package ready for an app, checked from its spec (any OS).

L1 (224 px) and a searched tiny subnet with MB3D blocks: ML Program, fp16 weights and compute, fp32 input
``input`` of the model's shape, outputs ``logits`` (the ONNX name) and ``classLabel`` with the class
labels, description and metadata from the model card, the op types used (also in the card), no
training-only op, and exactly the folded PyTorch model's weights."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from slimformer.export import export_model, resolve_source
from slimformer.export._export import TRAINING_ONLY_OPS, coreml_summary
from slimformer.export._fold import fold_bn
from slimformer.supernet import EfficientFormerNet, get_arch
from tests.conftest import randomize_

if os.environ.get("SLIMFORMER_REQUIRE_COREML"):  # .ci/run sets it: there these tests run, never skip
    import coremltools as ct
else:
    ct = pytest.importorskip("coremltools", reason="the coreml extra (in dev; .ci/run requires it)")
pytestmark = pytest.mark.slow


def _folded_weights(model) -> int:
    f = fold_bn(model.eval())
    return sum(t.numel() for t in [*f.parameters(), *f.buffers()] if t.is_floating_point())


def _check(card, out, model, labels):
    from slimformer.latency_lut._bundle import quiet

    with quiet():
        spec = ct.utils.load_spec(str(out / "model.mlpackage"))
    s = coreml_summary(spec)
    a = model.arch
    assert s["model_type"] == "mlProgram" and spec.specificationVersion >= 7  # iOS 16
    assert s["inputs"] == [{"name": "input", "type": "multiarray float32", "shape": [1, 3, a.img_size, a.img_size]}]
    assert {o["name"] for o in s["outputs"]} == {"logits", "classLabel"} and s["predicted_feature"] == "classLabel"
    assert spec.description.predictedProbabilitiesName == "logits"
    assert set(s["weights_by_precision"]) == {"float16"}  # fp16 weights: fp16 compute on the Neural Engine
    assert s["weights_by_precision"]["float16"] == _folded_weights(model)
    assert not TRAINING_ONLY_OPS & set(s["op_types"]) and {"conv", "softmax", "layer_norm"} <= set(s["op_types"])
    classes = [o for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
               for o in b.operations if o.type == "classify"]
    assert len(classes) == 1
    assert card["coreml"]["op_types"] == s["op_types"] and card["coreml"]["class_labels"] == len(labels)
    assert card["files"]["coreml"] == "model.mlpackage"
    meta = s["metadata"]
    assert json.loads(meta["arch"]) == a.to_dict() and json.loads(meta["preprocess"])["img_size"] == a.img_size
    assert spec.description.metadata.shortDescription.startswith("slimformer") and a.summary() in \
        spec.description.metadata.shortDescription
    if sys.platform != "darwin":
        assert card["coreml"]["note"].startswith("prediction parity skipped") and "macOS" in card["coreml"]["note"]
    else:
        assert card["coreml"]["parity_max_abs_diff"] < 5e-2  # fp16 compute


def test_l1_package(tmp_path):
    model = randomize_(EfficientFormerNet(get_arch("l1")), seed=1)  # no equal or zero tensors to deduplicate
    card = export_model(model, tmp_path, formats=("coreml",), measure=False)
    assert model.arch.img_size == 224
    _check(card, tmp_path, model, card["class_names"])
    assert card["coreml"]["class_labels"] == 1000


def test_searched_subnet_with_mb3d_package(search_run, tmp_path, capsys):
    from slimformer.cli import main

    src = resolve_source(search_run, supernet=search_run / "supernet.pt")
    assert src.model.arch.num_mb3d > 0
    assert main(["export", str(search_run / "arch.json"), "--supernet", str(search_run / "supernet.pt"),
                 "--format", "coreml", "-o", str(tmp_path), "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "coreml: prediction parity" in out
    card = json.loads((tmp_path / "card.json").read_text())
    _check(card, tmp_path, src.model, [f"thing{i}" for i in range(10)])
    with torch.no_grad():  # the package's labels are the run's class names
        assert card["class_names"][:2] == ["thing0", "thing1"]
