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


def test_timing_is_a_median_of_warm_calls_next_to_the_cards(onnx_model):
    """The page shows a median over warm calls, not one cold first call, and the export-time median beside it."""
    clf = Classifier(onnx_model)
    outs = [clf.predict(png_bytes()) for _ in range(4)]
    assert [o["calls"] for o in outs] == [1, 2, 3, 4]
    assert outs[-1]["inference_median_ms"] == pytest.approx(float(np.median([o["inference_ms"] for o in outs])))
    assert outs[-1]["card_median_ms"] is None  # this export was not measured: nothing to show beside it
    clf.card = {**clf.card, "measured_latency_ms": {"median_ms": 1.25, "p10_ms": 1.2, "p90_ms": 1.4}}
    assert clf.predict(png_bytes())["card_median_ms"] == 1.25


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


# ----------------------------------------------------------------- hostile uploads and load (loopback only)


def flat_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_thin_images_are_capped_before_decoding(client):
    data = flat_png(40000, 1)
    assert len(data) < 300  # a 200-byte PNG declaring 40000 x 1 pixels
    r = client.post("/predict", files={"file": ("thin.png", data, "image/png")})
    assert r.status_code == 400 and "pixels a side" in r.json()["detail"]


def test_thin_image_within_caps_is_cropped_without_a_giant_intermediate(onnx_model):
    from slimformer.export import _serve

    clf = Classifier(onnx_model)
    left, top, right, bottom = clf.crop_box(12000, 1)
    assert right - left == bottom - top == pytest.approx(clf.crop_pct)  # a square of the short side
    assert 0 <= left and right <= 12000 and 0 <= top and bottom <= 1
    assert clf.preprocess(flat_png(12000, 1)).shape == (1, 3, 32, 32)
    assert 12000 <= _serve.MAX_SIDE and 12000 * 40 <= _serve.MAX_PIXELS


@pytest.fixture
def live_server():
    """Start an app with uvicorn on 127.0.0.1 (a free port) in a thread; yields (base URL, app)."""
    import threading

    import uvicorn

    servers = []

    def start(app):
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            t.join(0.05)
        servers.append((server, t))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, t in servers:
        server.should_exit = True
        t.join(10)


def _slow(clf, seconds: float, started):
    """clf.predict behind a blocking sleep: on the event loop it would stall every other request."""
    import time

    real = clf.predict

    def predict(data, k=5):
        started.append(time.monotonic())
        time.sleep(seconds)
        return real(data, k)

    return predict


def _post_all(url: str, n: int, results: list):
    import threading

    import httpx

    def one():
        r = httpx.post(f"{url}/predict", files={"file": ("a.png", png_bytes(), "image/png")}, timeout=60)
        results.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_page_stays_answered_while_uploads_run(onnx_model, live_server):
    import httpx

    app = create_app(onnx_model, workers=2, queue=4)
    started: list[float] = []
    app.state.classifier.predict = _slow(app.state.classifier, 2.0, started)
    url = live_server(app)
    finished: list[int] = []
    threads = _post_all(url, 4, finished)
    while len(started) < 2:  # both workers busy, two uploads queued
        threads[0].join(0.02)
    pages = [httpx.get(url + "/", timeout=30) for _ in range(3)]
    during = len(finished)
    for t in threads:
        t.join(60)
    assert all(p.status_code == 200 and 'type="file"' in p.text for p in pages)
    assert during == 0, "GET / waited for an upload: inference is blocking the event loop"
    assert finished == [200] * 4


def test_uploads_beyond_the_queue_get_503_at_once(onnx_model, live_server):
    app = create_app(onnx_model, workers=1, queue=1)
    started: list[float] = []
    app.state.classifier.predict = _slow(app.state.classifier, 1.5, started)
    url = live_server(app)
    codes: list[int] = []
    for t in _post_all(url, 5, codes):
        t.join(60)
    assert sorted(codes) == [200, 200, 503, 503, 503]
