"""Serve under load: is ``GET /`` still answered fast while uploads are classified? (loopback only)

Exports EfficientFormer-L1 (random weights, ONNX, 224 px), serves it with uvicorn on 127.0.0.1, then
times ``GET /`` three ways in one run: idle; while ``--uploads`` clients keep posting images (a 12000 x 1
PNG and a 1024 x 768 noise PNG, alternately); and the same load with inference put back on the event loop
(how ``serve`` ran before: the comparison). Also the preprocessing time of thin images with the crop
taken from the original (now) against resizing the whole image first (before), and the peak RSS of this
process. Medians and maxima of
``--gets`` requests; on a shared 2-core machine the absolute times are noisy, the ratios less so.
Goal: under load, the median ``GET /`` stays within a few times the idle one (not seconds).

    python benchmarks/serve_load.py [--uploads 4] [--gets 20]
"""
from __future__ import annotations

import argparse
import io
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def start(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", server, t


def time_gets(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=120) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            c.get(url + "/").raise_for_status()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def under_load(url: str, uploads: int, gets: int, images: list[bytes]) -> tuple[list[float], int]:
    stop = threading.Event()
    done = [0]

    def client(i: int):
        with httpx.Client(timeout=120) as c:
            k = i
            while not stop.is_set():
                c.post(url + "/predict", files={"file": ("x.png", images[k % len(images)], "image/png")})
                done[0] += 1
                k += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(uploads)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # let the uploads pile up
    ms = time_gets(url, gets)
    stop.set()
    for t in threads:
        t.join(120)
    return ms, done[0]


def resize_then_crop(data: bytes, img_size: int, crop_pct: float) -> Image.Image:
    """How ``serve`` preprocessed before: keep the aspect ratio, resize the short side, then crop."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = round(img_size / crop_pct)
    w, h = img.size
    size = (scale, max(1, round(h * scale / w))) if w <= h else (max(1, round(w * scale / h)), scale)
    img = img.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - img_size) // 2, (size[1] - img_size) // 2
    return img.crop((left, top, left + img_size, top + img_size))


def thin_images(clf) -> list[str]:
    lines = []
    for w in (1000, 4000):
        data = _png(Image.new("RGB", (w, 1), (90, 120, 200)))
        t0 = time.perf_counter()
        clf.preprocess(data)
        t1 = time.perf_counter()
        resize_then_crop(data, clf.img_size, clf.crop_pct)
        t2 = time.perf_counter()
        lines.append(f"  {w} x 1 PNG ({len(data)} bytes): crop from the original {1e3 * (t1 - t0):.1f} ms, "
                     f"resize-then-crop {1e3 * (t2 - t1):.0f} ms (an intermediate of {w * 256} x 256)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=4)
    ap.add_argument("--gets", type=int, default=20)
    args = ap.parse_args()

    from slimformer.export import _serve, export_model, resolve_source

    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    export_model(resolve_source("l1", random_init=True), tmp, formats=("onnx",), measure=False)
    rng = np.random.default_rng(0)
    images = [_png(Image.new("RGB", (12000, 1), (90, 120, 200))),
              _png(Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)))]
    rows = []
    app = _serve.create_app(tmp / "model.onnx")
    thin = thin_images(app.state.classifier)
    url, server, t = start(app)
    rows.append(("idle", time_gets(url, args.gets), 0))
    rows.append(("uploads, worker pool (now)", *under_load(url, args.uploads, args.gets, images)))

    async def on_loop(self, fn, *a):  # how serve ran before: inference inside the async handler
        return fn(*a)

    _serve._Pool.run = on_loop
    rows.append(("uploads, on the event loop (before)", *under_load(url, args.uploads, args.gets, images)))
    server.should_exit = True
    t.join(10)
    print(f"GET / latency, {args.uploads} upload clients, {args.gets} GETs each, L1 224 px ONNX, 1 ORT thread, "
          f"2 workers:")
    for name, ms, n in rows:
        print(f"  {name:38s} median {statistics.median(ms):8.1f} ms   max {max(ms):8.1f} ms   ({n} uploads done)")
    print("preprocessing thin images (224 px model):")
    print("\n".join(thin))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
