"""CLI for export, bench and serve (see slimformer.export). Parses and calls; no logic here."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .._errors import SlimformerError
from .._validate import MAX_MB, NONNEG_INT, PORT, POSITIVE_INT

# `slimformer serve` needs the [serve] extra; each entry: the distribution and the modules that provide it
SERVE_DEPS = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}


def register(sub) -> None:
    p = sub.add_parser("export", help="write a searched subnet as a folded pt/ONNX/TorchScript/CoreML model + card")
    p.add_argument("source", help="search run dir, arch.json, or a preset (l1, l3, l7)")
    p.add_argument("--supernet", default=None, help="supernet checkpoint to extract the subnet's weights from")
    p.add_argument("--weights", default=None, help="or: a state dict for this architecture (e.g. timm weights)")
    p.add_argument("--recalibrate", dest="recal_data", default=None, metavar="DATA",
                   help="with --supernet: re-estimate BN statistics on DATA (builtin or an ImageFolder) first")
    p.add_argument("--recal-batches", type=POSITIVE_INT, default=20)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="batch size for --recalibrate")
    p.add_argument("--random-init", action="store_true", help="export with random weights (latency work only)")
    p.add_argument("--format", dest="formats", action="append", choices=("pt", "onnx", "torchscript", "coreml"),
                   help="repeatable; default: pt and onnx")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--class-names", default=None, help="JSON list or text file (one name a line) of class names")
    p.add_argument("--lut-dir", default=None, help="extra folder of latency tables for the card's predictions")
    p.add_argument("--repeats", type=POSITIVE_INT, default=50, help="timed runs for the measured latency (default 50)")
    p.add_argument("--no-measure", action="store_true", help="skip measuring latency here")
    p.set_defaults(func=_export)

    p = sub.add_parser("bench", help="latency/throughput of subnets vs timm baselines (EfficientViT protocol)")
    p.add_argument("models", nargs="*", help="timm:NAME, preset, arch.json, run dir, model.pt or model.onnx "
                                             "(default: the timm baselines)")
    p.add_argument("--backend", dest="backends", action="append", choices=("onnxruntime", "torch"),
                   help="repeatable; default both")
    p.add_argument("--batch", type=POSITIVE_INT, default=16, help="throughput batch on CPU (default 16)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="intra-op threads (default 1)")
    p.add_argument("--repeats", type=POSITIVE_INT, default=30, help="timed runs per measurement (default 30)")
    p.add_argument("--warmup", type=NONNEG_INT, default=3)
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (GPU: largest power-of-two batch)")
    p.add_argument("--with-lut", action="append", default=None, metavar="NAME",
                   help="put this latency table's prediction beside the measurement (repeatable)")
    p.add_argument("--lut-dir", default=None)
    p.add_argument("--out", default=None, help="runs root (default runs/)")
    p.add_argument("--run-dir", default=None, help="reuse this run dir (resumes a killed bench)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("serve", help="local web page: upload a photo, see the top-5 classes and inference time")
    p.add_argument("--model", required=True, help="exported model.onnx (its card.json beside it)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=8000)
    p.add_argument("--max-mb", type=MAX_MB, default=8.0, help="upload size cap in MB (default 8)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1)
    p.add_argument("--workers", type=POSITIVE_INT, default=2, help="uploads classified at once (default 2)")
    p.set_defaults(func=_serve)


def _read_names(path: str | None):
    if path is None:
        return None
    from slimformer._io import read_json

    p = Path(path)
    if p.suffix == ".json":
        names = read_json(p, "class names file")
        if not isinstance(names, list):
            raise SlimformerError(f"{p} must hold a JSON list of class names")
        return [str(n) for n in names]
    if not p.is_file():
        raise SlimformerError(f"class names file not found: {p}")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]


def _export(args) -> int:
    from slimformer.export import export_model, resolve_source

    src = resolve_source(args.source, supernet=args.supernet, weights=args.weights, random_init=args.random_init,
                         recal_data=args.recal_data, recal_batches=args.recal_batches, batch_size=args.batch_size)
    card = export_model(src, args.out, formats=tuple(args.formats or ("pt", "onnx")), measure=not args.no_measure,
                        repeats=args.repeats, class_names=_read_names(args.class_names), lut_dir=args.lut_dir)
    print(f"exported {card['summary']}: {card['params'] / 1e6:.2f} M params, {card['macs'] / 1e6:.1f} M MACs")
    for fmt, name in card["files"].items():
        d = card["parity_max_abs_diff"].get(fmt)
        print(f"  {fmt:12s} {Path(args.out) / name}" + (f"  (max |d| vs PyTorch {d:.2e})" if d is not None else ""))
    if "coreml" in card:
        print(f"  coreml: {card['coreml']['note']}")
    m = card.get("measured_latency_ms")
    if m:
        print(f"  measured here: {m['median_ms']:.3f} ms median (p10 {m['p10_ms']:.3f}, p90 {m['p90_ms']:.3f}), "
              "onnxruntime, batch 1, 1 thread")
    for name, p in card["predicted_latency_ms"].items():
        if "ms" in p:
            print(f"  predicted by {name} ({p['kind']}, {p['device']}): {p['ms']:.3f} ms")
    print(f"model card: {Path(args.out) / 'card.json'}")
    return 0


def _bench(args) -> int:
    from slimformer.export._bench import format_table, run_bench

    rd, data = run_bench(args.models, out_root=args.out, run_dir=args.run_dir,
                         backends=tuple(args.backends or ("onnxruntime", "torch")), batch=args.batch,
                         threads=args.threads, warmup=args.warmup, repeats=args.repeats, device=args.device,
                         with_lut=args.with_lut, lut_dir=args.lut_dir, progress=sys.stderr.isatty())
    print(format_table(data))
    print(f"results: {rd / 'bench.json'}, plot: {rd / 'bench.png'}, report: {rd / 'report.md'}")
    return 0


def missing_serve_deps() -> list[str]:
    """The [serve] extra's distributions that are not installed (looked up, not imported)."""
    return [dist for dist, modules in SERVE_DEPS.items()
            if not any(importlib.util.find_spec(m) is not None for m in modules)]


def _serve(args) -> int:
    missing = missing_serve_deps()
    if missing:
        raise SlimformerError(f"serve needs {', '.join(missing)}: install slimformer[serve] "
                              f"(pip install 'slimformer[serve]')")
    from slimformer.export._serve import serve

    serve(args.model, host=args.host, port=args.port, max_bytes=int(args.max_mb * 2 ** 20), threads=args.threads,
          workers=args.workers)
    return 0
