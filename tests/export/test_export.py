from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import slimformer
from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.export import export_model, load, ort_session, resolve_source
from slimformer.supernet import EfficientFormerNet, load_supernet


@pytest.fixture(scope="module")
def exported(search_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    src = resolve_source(search_run, supernet=search_run / "supernet.pt")
    card = export_model(src, out, formats=("pt", "onnx", "torchscript"), repeats=5, warmup=1)
    return src, card, out


def test_onnx_parity_and_dynamic_batch(exported):
    src, card, out = exported
    sess = ort_session(out / "model.onnx")
    assert sess.get_inputs()[0].shape[0] == "batch"
    for b in (1, 4):
        x = torch.randn(b, 3, 32, 32)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            ref = src.model(x).numpy()
        assert got.shape == (b, 10)
        assert np.abs(got - ref).max() <= 1e-4
    assert card["parity_max_abs_diff"]["onnx"] <= 1e-4


def test_torchscript_parity_other_batch(exported):
    src, card, out = exported
    ts = load(out / "model.ts")
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert float((ts(x) - src.model(x)).abs().max()) <= 1e-4
    assert card["parity_max_abs_diff"]["torchscript"] <= 1e-4


def test_subnet_weights_come_from_the_supernet(search_run, exported):
    src, _, _ = exported
    ck = load_supernet(search_run / "supernet.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ck.model.set_active(src.model.arch)
        assert float((ck.model(x) - src.model(x)).abs().max()) <= 1e-5


def test_model_card_contents(exported, search_run):
    src, _, out = exported
    on_disk = json.loads((out / "card.json").read_text())
    assert on_disk["arch"] == src.model.arch.to_dict()
    assert on_disk["params"] == sum(p.numel() for p in src.model.parameters())
    assert on_disk["macs"] > 0
    assert on_disk["class_names"] == [f"thing{i}" for i in range(10)]  # from the supernet's meta
    assert on_disk["accuracy"] == {"top1": 0.42, "source": "metrics.json:top1"}
    m = on_disk["measured_latency_ms"]
    assert m["backend"] == "onnxruntime" and m["batch"] == 1 and m["threads"] == 1 and m["median_ms"] > 0
    assert m["p10_ms"] <= m["median_ms"] <= m["p90_ms"]
    assert on_disk["preprocess"]["img_size"] == 32 and len(on_disk["preprocess"]["mean"]) == 3
    assert on_disk["files"] == {"pt": "model.pt", "onnx": "model.onnx", "torchscript": "model.ts"}
    assert on_disk["search"]["predicted_ms"] == 1.25
    assert isinstance(on_disk["predicted_latency_ms"], dict)
    assert "MB4D ls1" in on_disk["folding"]["layer_scale"]


def test_load_round_trip(exported, search_run):
    src, card, out = exported
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = src.model(x)
        for m in (load(out / "model.pt"), slimformer.load(out), slimformer.load(search_run)):
            assert isinstance(m, EfficientFormerNet) and not m.training
            assert m.arch == src.model.arch
            assert float((m(x) - ref).abs().max()) == 0.0
        folded = slimformer.load(out / "model.pt", fold=True)
        assert folded.head_dist is None and float((folded(x) - ref).abs().max()) <= 1e-5
        assert load(out / "model.pt").card["summary"] == card["summary"]
    onnx_model = load(out / "model.onnx")
    assert float((onnx_model(x) - ref).abs().max()) <= 1e-4
    assert onnx_model.card["num_classes"] == 10


def test_create_model_timm_style(exported, search_run):
    src, _, out = exported
    x = torch.randn(1, 3, 32, 32)
    for w in (out / "model.pt", search_run / "subnet.pt"):
        m = slimformer.create_model(search_run / "arch.json", weights=w)
        with torch.no_grad():
            assert float((m(x) - src.model(x)).abs().max()) == 0.0
    fresh = slimformer.create_model(src.model.arch.to_dict(), num_classes=3)
    assert fresh(x).shape == (1, 3)
    with pytest.raises(SlimformerError, match="does not fit"):
        slimformer.create_model("l1", weights=search_run / "subnet.pt")


def test_export_run_dir_without_supernet_uses_subnet_pt(search_run, exported, tmp_path):
    src, _, _ = exported
    card = export_model(resolve_source(search_run), tmp_path, formats=("onnx",), measure=False)
    assert card["measured_latency_ms"] is None and card["source"]["weights"].endswith("subnet.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert float((load(tmp_path / "model.onnx")(x) - src.model(x)).abs().max()) <= 1e-4


def test_coreml_is_guarded(search_run, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "coremltools", None)  # as if not installed
    with pytest.raises(SlimformerError, match="coremltools"):
        export_model(resolve_source(search_run), tmp_path / "c", formats=("onnx", "coreml"), measure=False)
    assert not (tmp_path / "c").exists()  # refused up front, nothing half-written


def test_cli_export_and_errors(search_run, tmp_path, capsys):
    rc = main(["export", str(search_run / "arch.json"), "--supernet", str(search_run / "supernet.pt"),
               "--format", "onnx", "-o", str(tmp_path / "o"), "--repeats", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "model.onnx" in out and "measured here" in out
    assert (tmp_path / "o" / "card.json").is_file() and not (tmp_path / "o" / "model.pt").exists()
    (tmp_path / "arch.json").write_text((search_run / "arch.json").read_text())  # no subnet.pt beside it
    assert main(["export", str(tmp_path / "arch.json"), "-o", str(tmp_path / "p")]) == 2
    assert "no weights" in capsys.readouterr().err
    assert main(["export", "nosuch", "--random-init", "-o", str(tmp_path / "q")]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert main(["export", "l1", "--supernet", str(search_run / "supernet.pt"), "-o", str(tmp_path / "r")]) == 2
    assert "not a subnet" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a pickle")
    assert main(["export", str(search_run / "arch.json"), "--weights", str(tmp_path / "bad.pt"),
                 "-o", str(tmp_path / "s")]) == 2
    assert "not a readable" in capsys.readouterr().err


def test_card_predicts_with_tables_whose_space_matches(search_run, tiny_lut_dir, tmp_path):
    from slimformer.latency_lut import arch_ops, get_table

    src = resolve_source(search_run)
    card = export_model(src, tmp_path, formats=("onnx",), measure=False, lut_dir=tiny_lut_dir)
    pred = card["predicted_latency_ms"]
    expected = get_table("tiny-test", lut_dir=tiny_lut_dir).predict(src.model.arch)
    assert pred["tiny-test"]["ms"] == pytest.approx(expected, abs=1e-3)
    assert pred["tiny-test"]["ms"] == pytest.approx(0.5 + 0.01 * len(arch_ops(src.model.arch)), abs=1e-3)
    assert pred["tiny-test"]["device"] == "test-device"
    assert "iphone-lut" not in pred  # the shipped tables are for the default space


def test_run_recorded_supernet_and_search_accuracy(search_run, tmp_path):
    """A search run dir without subnet.pt: the supernet recorded in arch.json is used, and an
    accuracy-driven search's score lands in the card as its accuracy."""
    info = json.loads((search_run / "arch.json").read_text())
    info.update(supernet=str(search_run / "supernet.pt"), accuracy_driven=True, score=0.37,
                score_name="top-1 accuracy (inherited weights, BN recalibrated)")
    run = tmp_path / "run"
    run.mkdir()
    (run / "arch.json").write_text(json.dumps(info))
    src = resolve_source(run)
    assert src.origin["supernet"].endswith("supernet.pt")
    card = export_model(src, tmp_path / "o", formats=("onnx",), measure=False)
    assert card["accuracy"]["top1"] == 0.37 and card["accuracy"]["source"] == "arch.json:score"
    assert card["search"]["accuracy_driven"] is True
    info["accuracy_driven"] = False
    (run / "arch.json").write_text(json.dumps(info))
    assert export_model(resolve_source(run), tmp_path / "p", formats=("onnx",), measure=False)["accuracy"] is None


def test_supernet_export_recalibrates_bn(search_run, monkeypatch):
    """--recalibrate: the subnet's BN statistics are re-estimated on the data before extraction."""
    from types import SimpleNamespace

    from slimformer.export import _load

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=g) * 3 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    calls = {}

    def fake_build_loaders(data, *, img_size, batch_size, seed=0, **kw):
        calls.update(data=data, img_size=img_size)
        return SimpleNamespace(train=batches, val=[], num_classes=10, class_names=[f"c{i}" for i in range(10)])

    monkeypatch.setattr(_load, "build_loaders", fake_build_loaders)
    plain = resolve_source(search_run, supernet=search_run / "supernet.pt")
    recal = resolve_source(search_run, supernet=search_run / "supernet.pt", recal_data="builtin", recal_batches=3)
    assert calls == {"data": "builtin", "img_size": 32}
    assert recal.origin["bn_recalibration"] == {"data": "builtin", "batches": 3}
    assert recal.class_names == [f"thing{i}" for i in range(10)]  # the checkpoint's own names win
    mean_plain = plain.model.stem.norm1.running_mean
    mean_recal = recal.model.stem.norm1.running_mean
    assert not torch.allclose(mean_plain, mean_recal)
    # the recalibrated statistics are those of the data: stem conv1 output mean over the 3 batches
    with torch.no_grad():
        conv = recal.model.stem.conv1
        expected = torch.stack([conv(x).mean(dim=(0, 2, 3)) for x, _ in batches[:3]]).mean(0)
    assert torch.allclose(mean_recal, expected, atol=1e-4)
