from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from slimformer._errors import SlimformerError
from slimformer.export import export_model, resolve_source
from slimformer.export._serve import Classifier, create_app


@pytest.fixture(scope="module")
def onnx_model(search_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    export_model(resolve_source(search_run, supernet=search_run / "supernet.pt"), out, formats=("onnx",),
                 measure=False)
    return out / "model.onnx"


def png_bytes(w: int = 48, h: int = 40, seed: int = 0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(onnx_model):
    return TestClient(create_app(onnx_model, max_bytes=64 * 1024))


def test_page_has_upload_form(client):
    r = client.get("/")
    assert r.status_code == 200 and 'type="file"' in r.text
    assert "10 classes" in r.text


def test_valid_image_gives_top5_and_timing(client, onnx_model):
    r = client.post("/predict", files={"file": ("cat.png", png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["top5"]) == 5 and out["inference_ms"] > 0
    probs = [t["probability"] for t in out["top5"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(t["label"] == f"thing{t['index']}" for t in out["top5"])  # names from the model card
    # the server's answer is the model's: same preprocessing + session gives the same top class
    clf = Classifier(onnx_model)
    x = clf.preprocess(png_bytes())
    assert x.shape == (1, 3, 32, 32)
    logits = clf.session.run(None, {clf.input_name: x})[0][0]
    assert out["top5"][0]["index"] == int(np.argmax(logits))


def test_non_image_is_a_clear_400(client):
    r = client.post("/predict", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    r = client.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = client.post("/predict")
    assert r.status_code == 400 and "no file" in r.json()["detail"]
    r = client.post("/predict", files={"file": ("trunc.png", png_bytes()[:60], "image/png")})
    assert r.status_code == 400


def test_oversized_upload_is_413(client):
    big = png_bytes(400, 400, seed=1)  # ~480 KB of noise, over the 64 KB cap of this app
    assert len(big) > 64 * 1024
    r = client.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_upload_over_cap_is_caught_by_the_read_check_too(onnx_model):
    app = create_app(onnx_model, max_bytes=1000)
    r = TestClient(app).post("/predict", files={"file": ("a.png", png_bytes(30, 30), "image/png")})
    assert len(png_bytes(30, 30)) > 1000 and r.status_code == 413


def test_serve_refuses_non_onnx(tmp_path, search_run):
    with pytest.raises(SlimformerError, match="ONNX"):
        Classifier(search_run / "subnet.pt")
    with pytest.raises(SlimformerError, match="not found"):
        Classifier(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    with pytest.raises(SlimformerError, match="not a loadable"):
        Classifier(tmp_path / "bad.onnx")


def test_imagenet_names_for_1000_classes():
    from slimformer.export import default_class_names

    names = default_class_names(1000)
    assert len(names) == 1000 and names[1] == "goldfish"


def test_cli_serve_bad_model_is_one_line_error(tmp_path, capsys):
    from slimformer.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err
