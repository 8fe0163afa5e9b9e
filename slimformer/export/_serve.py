"""``slimformer serve``: a small FastAPI page that classifies an uploaded photo with an exported ONNX model.

Preprocessing and class names come from the model card beside the ONNX file (``card.json``): image
size, crop, mean/std. Uploads over ``max_bytes`` get HTTP 413, anything that is not a readable image
HTTP 400, both with a sentence saying why; the page shows the top-5 classes and the inference time.

A small upload can declare a huge image (a 200-byte PNG of 40000 x 1 pixels): the declared size is
checked against ``MAX_SIDE`` and ``MAX_PIXELS`` from the header, before anything is decoded, and the
crop is taken from the original image and resized once (no intermediate larger than the input).
Decoding and inference run in a bounded pool of worker threads, off the event loop, so the page and
other clients stay answered while uploads are processed; when ``workers + queue`` uploads are in
flight, the next one gets HTTP 503 at once instead of waiting without bound.
"""
from __future__ import annotations

import asyncio
import collections
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile  # module level: FastAPI reads the
from fastapi.responses import HTMLResponse, JSONResponse  # string annotations from here

from .._errors import SlimformerError
from .._validate import check_int
from ._card import default_class_names
from ._load import find_card
from ._measure import ort_session

WARMUP_CALLS = 3  # session runs at start-up, before the first upload
RECENT_CALLS = 50  # the median the page shows is over this many of the last calls

MAX_BYTES = 8 * 1024 * 1024
MAX_SIDE = 16_384            # pixels per side of an uploaded image
MAX_PIXELS = 40_000_000      # pixels of an uploaded image (120 MB decoded as RGB)
WORKERS = 2                  # uploads decoded and classified at once
QUEUE = 8                    # further uploads waiting for a worker; beyond: HTTP 503


class Classifier:
    """The ONNX session plus the card's preprocessing; ``predict(bytes) -> dict``."""

    def __init__(self, model_path: str | Path, *, threads: int = 1):
        p = Path(model_path)
        if not p.is_file():
            raise SlimformerError(f"model file not found: {p}")
        if p.suffix != ".onnx":
            raise SlimformerError(f"serve needs an ONNX file (slimformer export --format onnx), got {p.name}")
        try:
            self.session = ort_session(p, threads=threads)
        except Exception as e:  # noqa: BLE001
            raise SlimformerError(f"{p} is not a loadable ONNX model ({type(e).__name__})") from None
        self.input_name = self.session.get_inputs()[0].name
        card = find_card(p) or {}
        pre = card.get("preprocess", {})
        shape = self.session.get_inputs()[0].shape
        self.img_size = int(pre.get("img_size") or (shape[-1] if isinstance(shape[-1], int) else 224))
        self.crop_pct = float(pre.get("crop_pct", 0.875))
        self.mean = np.asarray(pre.get("mean", (0.485, 0.456, 0.406)), np.float32).reshape(3, 1, 1)
        self.std = np.asarray(pre.get("std", (0.229, 0.224, 0.225)), np.float32).reshape(3, 1, 1)
        n = int(self.session.get_outputs()[0].shape[-1])
        names = card.get("class_names")
        self.class_names = names if isinstance(names, list) and len(names) == n else default_class_names(n)
        self.name = card.get("name") or p.stem
        self.card = card
        self.path = p
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_CALLS)
        x = np.zeros((1, 3, self.img_size, self.img_size), np.float32)  # preprocess makes RGB
        for _ in range(WARMUP_CALLS):  # the first calls of a session allocate and plan: keep them off the figures
            self.session.run(None, {self.input_name: x})

    def preprocess(self, data: bytes) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w < 1 or h < 1 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                raise ValueError(f"the image is {w} x {h} pixels; this server takes up to {MAX_SIDE} pixels a side "
                                 f"and {MAX_PIXELS / 1e6:g} megapixels")
            box = self.crop_box(w, h)
            img.draft("RGB", (max(1, round(w * self.img_size / (box[2] - box[0]))),
                              max(1, round(h * self.img_size / (box[3] - box[1])))))  # JPEG: decode smaller
            scale_x, scale_y = img.size[0] / w, img.size[1] / h
            img = img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise ValueError(f"the upload is not a readable image ({type(e).__name__})") from None
        box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
        img = img.resize((self.img_size, self.img_size), Image.Resampling.BICUBIC, box=box)
        a = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return ((a - self.mean) / self.std)[None].astype(np.float32)

    def crop_box(self, w: int, h: int) -> tuple[float, float, float, float]:
        """The centre square of a ``w`` x ``h`` image that timm's eval transform keeps (resize the short side to
        ``img_size / crop_pct``, centre-crop ``img_size``), in the original image's coordinates."""
        side = min(w, h) * self.crop_pct
        left, top = (w - side) / 2, (h - side) / 2
        return left, top, left + side, top + side

    def predict(self, data: bytes, k: int = 5) -> dict[str, Any]:
        t0 = time.perf_counter()
        x = self.preprocess(data)
        t1 = time.perf_counter()
        logits = self.session.run(None, {self.input_name: x})[0][0].astype(np.float64)
        t2 = time.perf_counter()
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p)[: min(k, len(p))]
        return {"top5": [{"index": int(i), "label": self.class_names[int(i)], "probability": float(p[i])}
                         for i in top],
                "preprocess_ms": (t1 - t0) * 1e3, "model": self.name, **self._timing((t2 - t1) * 1e3)}

    def _timing(self, ms: float) -> dict[str, Any]:
        """This call, the median of the last calls and the model card's export-time median, in ms."""
        self._recent.append(ms)
        card = (self.card.get("measured_latency_ms") or {}).get("median_ms")
        return {"inference_ms": ms, "inference_median_ms": float(np.median(list(self._recent))),
                "calls": len(self._recent), "card_median_ms": card}


def _page(clf: Classifier) -> str:
    html = resources.files("slimformer.export").joinpath("static/index.html").read_text(encoding="utf-8")
    import html as _html

    info = (f"{clf.name}: {clf.card.get('summary', '')} - {len(clf.class_names)} classes, "
            f"{clf.img_size}px input")
    return html.replace("__MODEL_INFO__", _html.escape(info))


class _Pool:
    """Worker threads for decoding + inference, with a bound on the uploads in flight."""

    def __init__(self, workers: int, queue: int):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slimformer-serve")
        self.slots = threading.BoundedSemaphore(workers + queue)

    async def run(self, fn, *args):
        if not self.slots.acquire(blocking=False):
            raise HTTPException(503, "the server is busy with other uploads; try again in a moment")
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.slots.release()


def create_app(model_path: str | Path, *, max_bytes: int = MAX_BYTES, threads: int = 1, workers: int = WORKERS,
               queue: int = QUEUE):
    """The FastAPI app: ``GET /`` the page, ``POST /predict`` (multipart ``file``), ``GET /card``."""
    check_int(max_bytes, "the upload cap (bytes)", lo=1)
    check_int(workers, "--workers", lo=1)
    check_int(queue, "the upload queue", lo=0)
    clf = Classifier(model_path, threads=threads)
    pool = _Pool(workers, queue)
    app = FastAPI(title="slimformer demo", docs_url=None, redoc_url=None)
    app.state.classifier = clf
    app.state.pool = pool
    too_big = f"the upload is larger than the {max_bytes / 2 ** 20:g} MB limit"

    @app.middleware("http")
    async def cap_size(request: Request, call_next):  # refuse before parsing when the length is declared
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > max_bytes + 65536:
            return JSONResponse({"detail": too_big}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _page(clf)

    @app.get("/card")
    def card() -> dict:
        return {k: v for k, v in clf.card.items() if k != "class_names"}

    @app.post("/predict")
    async def predict(file: UploadFile | None = File(None)) -> dict:  # noqa: B008 (FastAPI idiom)
        if file is None:
            raise HTTPException(400, "no file uploaded: send the image as the multipart field 'file'")
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_big)
        if not data:
            raise HTTPException(400, "the upload is empty")
        try:
            return await pool.run(app.state.classifier.predict, data)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    return app


def serve(model_path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = MAX_BYTES,
          threads: int = 1, workers: int = WORKERS) -> None:
    import socket

    import uvicorn

    app = create_app(model_path, max_bytes=max_bytes, threads=threads, workers=workers)
    try:  # a port in use or not ours to take: one line, before uvicorn logs its own traceback
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as e:
        raise SlimformerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    print(f"serving {model_path} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
