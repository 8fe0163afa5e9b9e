"""Export, folding, loading and benchmarking of EfficientViT subnets."""
from __future__ import annotations

import torch

import slimformer
from slimformer.export import export_model, fold_bn
from slimformer.supernet import build_model, get_arch, get_space
from tests.conftest import randomize_


def test_fold_is_exact_and_removes_every_batchnorm():
    for cfg in (get_space("efficientvit-tiny").sample(4), get_arch("m0")):
        net = randomize_(build_model(cfg)).eval()
        folded = fold_bn(net)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
        x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
        with torch.no_grad():
            assert (folded(x) - net(x)).abs().max().item() <= 1e-4
        assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())  # copy


def test_export_onnx_torchscript_and_load_back(tmp_path):
    cfg = get_space("efficientvit-tiny").sample(2)
    net = randomize_(build_model(cfg)).eval()
    card = export_model(net, tmp_path, formats=("pt", "onnx", "torchscript"), measure=False)
    assert max(card["parity_max_abs_diff"].values()) <= 1e-4
    back = slimformer.load(tmp_path / "model.pt")
    x = torch.randn(1, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        assert torch.allclose(back(x), net(x), atol=1e-6)
        onnx = slimformer.load(tmp_path / "model.onnx")
        assert (onnx(x) - net(x)).abs().max().item() <= 1e-4
    assert back.arch == cfg


def test_serve_answers_with_an_efficientvit_model(tmp_path):
    """The web demo serves the second family's ONNX export as it serves the first: its top class is the model's."""
    import numpy as np
    from fastapi.testclient import TestClient

    from slimformer.export._serve import Classifier, create_app
    from tests.export.test_serve import png_bytes

    cfg = get_space("efficientvit-tiny").sample(3)
    net = randomize_(build_model(cfg)).eval()
    export_model(net, tmp_path, formats=("onnx",), measure=False)
    client = TestClient(create_app(tmp_path / "model.onnx"))
    assert client.get("/").status_code == 200
    r = client.post("/predict", files={"file": ("scan.png", png_bytes(seed=3), "image/png")})
    assert r.status_code == 200, r.text
    top = r.json()["top5"]
    clf = Classifier(tmp_path / "model.onnx")
    x = clf.preprocess(png_bytes(seed=3))
    assert x.shape == (1, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        logits = net(torch.from_numpy(x))[0].numpy()
    assert top[0]["index"] == int(np.argmax(logits)) and len(top) == 5
