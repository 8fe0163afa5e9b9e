"""``slimformer bench``: latency and throughput of searched subnets next to timm baselines.

Protocol (EfficientViT's): batch-1 latency, median and 10th-90th percentile spread, and throughput
on CPU / onnxruntime at batch 16 with one thread; on a GPU (torch backend, ``device='cuda'``) at the
largest power-of-two batch that fits. Our subnets run folded (``fold_bn``); timm baselines run as
timm builds them (``pretrained=False``: random weights time the same) and are exported the plain way.
Results go to ``bench.json`` (rewritten after every model, so a killed run resumes), ``bench.png``
and ``report.md`` in one run directory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import SlimformerError
from .._io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    figure_png,
    make_run_dir,
    read_json,
)
from .._validate import check_int
from ..latency_lut import get_table
from ..latency_lut._measure import ONNX_EXPORT
from ..supernet import arch_from_dict, count_macs
from ._export import export_onnx
from ._fold import fold_bn
from ._load import _arch_of, load, resolve_source
from ._measure import TIMER, measure_onnx, measure_torch

BASELINES = ("timm:mobilenetv2_100", "timm:poolformer_s12", "timm:levit_256", "timm:efficientformer_l1",
             *(f"timm:efficientvit_m{i}" for i in range(6)))
BACKENDS = ("onnxruntime", "torch")


@dataclass
class BenchModel:
    name: str
    kind: str                      # "slimformer" or "timm"
    img_size: int
    model: torch.nn.Module | None  # None when only an ONNX file is given
    onnx: Path | None = None
    arch: Any = None               # ArchConfig for our subnets
    params: int | None = None
    macs: int | None = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _macs_of(model: torch.nn.Module, img_size: int) -> int | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.randn(1, 3, img_size, img_size))
        return int(fc.get_total_flops() // 2)
    except Exception:  # noqa: BLE001
        return None


def resolve_model(spec: str) -> BenchModel:
    """``timm:NAME``, a preset (l1), an arch JSON / search run dir, an exported model.pt or .onnx."""
    if spec.startswith("timm:"):
        import timm

        name = spec[5:]
        try:
            m = timm.create_model(name, pretrained=False).eval()
        except RuntimeError as e:
            raise SlimformerError(f"unknown timm model {name!r} ({e})") from None
        img = int(m.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        return BenchModel(spec, "timm", img, m, params=sum(p.numel() for p in m.parameters()),
                          macs=_macs_of(m, img))
    p = Path(spec)
    if p.suffix == ".onnx":
        if not p.is_file():
            raise SlimformerError(f"model file not found: {p}")
        card = load(p).card
        if not card:
            raise SlimformerError(f"{p} has no model card beside it (card.json): its input size is unknown")
        if not isinstance(card.get("arch"), dict):
            raise SlimformerError(f"the model card beside {p} has no architecture ('arch'): re-export the model")
        cfg = arch_from_dict(card["arch"])
        return BenchModel(card.get("name") or p.stem, "slimformer", cfg.img_size, None, onnx=p, arch=cfg,
                          params=card.get("params"), macs=card.get("macs"))
    if p.suffix in (".pt", ".ts") or (p.is_dir() and (p / "model.pt").is_file()):
        m = load(p)
        if not hasattr(m, "arch"):
            raise SlimformerError(f"{p}: bench needs a model.pt or an arch (TorchScript files carry no config)")
        cfg = m.arch
        name = cfg.name or (p.resolve().parent.name if p.is_file() else p.resolve().name)
    else:
        cfg, info, run_dir = _arch_of(spec)
        m = resolve_source(spec, random_init=True).model
        if info and run_dir is not None:  # a search/prune run: its folder names it (configs keep "largest")
            name = run_dir.resolve().name
        else:
            name = cfg.name or p.stem
    return BenchModel(name, "slimformer", cfg.img_size, fold_bn(m), arch=cfg,
                      params=sum(t.numel() for t in m.parameters()), macs=count_macs(cfg))


def largest_gpu_batch(model: torch.nn.Module, img_size: int, *, limit: int = 1024) -> int:
    """The largest power-of-two batch whose forward fits in GPU memory (EfficientViT's GPU protocol)."""
    best, b = 1, 1
    model = model.cuda().eval()
    while b <= limit:
        try:
            with torch.inference_mode():
                model(torch.randn(b, 3, img_size, img_size, device="cuda"))
            torch.cuda.synchronize()
            best, b = b, b * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return best


def bench_one(bm: BenchModel, *, index: int = 0, backends: tuple[str, ...], run_dir: Path, batch: int, threads: int,
              warmup: int, repeats: int, device: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for be in backends:
        if be == "onnxruntime":
            path = bm.onnx
            if path is None:
                path = run_dir / "onnx" / f"{index:02d}-{_safe(bm.name)}.onnx"
                if not path.is_file():
                    export_onnx(bm.model, path, img_size=bm.img_size)
            lat = measure_onnx(path, img_size=bm.img_size, batch=1, threads=threads, warmup=warmup,
                               repeats=repeats)
            thr = measure_onnx(path, img_size=bm.img_size, batch=batch, threads=threads, warmup=1,
                               repeats=max(3, repeats // 4))
        elif be == "torch":
            if bm.model is None:
                res[be] = {"skipped": "only an ONNX file was given"}
                continue
            tb = largest_gpu_batch(bm.model, bm.img_size) if device.startswith("cuda") else batch
            lat = measure_torch(bm.model, img_size=bm.img_size, batch=1, threads=threads, warmup=warmup,
                                repeats=repeats, device=device)
            thr = measure_torch(bm.model, img_size=bm.img_size, batch=tb, threads=threads, warmup=1,
                                repeats=max(3, repeats // 4), device=device)
        else:
            raise SlimformerError(f"unknown backend {be!r}: choose from {', '.join(BACKENDS)}")
        res[be] = {"latency": lat, "throughput": {"batch": thr["batch"], "median_ms": thr["median_ms"],
                                                  "images_per_s": thr["batch"] / thr["median_ms"] * 1e3}}
    return res


def _lut_predictions(bm: BenchModel, tables: list[str], lut_dir: str | None) -> dict[str, Any]:
    if bm.arch is None or not tables:
        return {}
    out: dict[str, Any] = {}
    for name in tables:
        t = get_table(name, lut_dir=lut_dir)
        faults = t.space.check(bm.arch)
        out[name] = {"ms": float(t.predict(bm.arch))} if not faults else {"ms": None,
                                                                          "note": f"not in the table's space: {faults[0]}"}
    return out


def run_bench(models: list[str], *, out_root: str | Path | None = None, run_dir: str | Path | None = None,
              backends: tuple[str, ...] = BACKENDS, batch: int = 16, threads: int = 1, warmup: int = 3,
              repeats: int = 30, device: str = "cpu", with_lut: list[str] | None = None,
              lut_dir: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Measure every model; write bench.json / bench.png / report.md; return (run dir, results)."""
    from ._measure import host_description

    models = list(models) or list(BASELINES)
    for field, v, lo in (("batch", batch, 1), ("threads", threads, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        check_int(v, f"--{field}", lo=lo)
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise SlimformerError(f"unknown backend {bad[0]!r}: choose from {', '.join(BACKENDS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SlimformerError("--device cuda asked for, but no CUDA GPU is visible")
    if with_lut:  # fail early on an unknown table name, before minutes of measurement
        for name in with_lut:
            get_table(name, lut_dir=lut_dir)
    rd = Path(run_dir) if run_dir is not None else make_run_dir(out_root, "bench")
    rd.mkdir(parents=True, exist_ok=True)
    jpath = rd / "bench.json"
    settings = {"backends": list(backends), "batch": batch, "threads": threads, "warmup": warmup,
                "repeats": repeats, "device": device, "host": host_description(), "onnx_export": dict(ONNX_EXPORT),
                "timer": TIMER}
    data = read_json(jpath, "benchmark results") if jpath.is_file() else {"settings": settings, "models": {}}
    done = data.get("models", {})
    from tqdm import tqdm

    for i, spec in enumerate(tqdm(models, desc="bench", unit="model", disable=not progress)):
        if spec in done and all(b in done[spec]["results"] for b in backends):
            continue  # resumed run: measured before the kill
        bm = resolve_model(spec)
        taken = {e["name"] for s, e in done.items() if s != spec}
        if bm.name in taken:
            bm.name = f"{bm.name}#{i + 1}"
        entry = {"name": bm.name, "spec": spec, "kind": bm.kind, "img_size": bm.img_size, "params": bm.params,
                 "macs": bm.macs,
                 "results": bench_one(bm, index=i, backends=backends, run_dir=rd, batch=batch, threads=threads,
                                      warmup=warmup, repeats=repeats, device=device),
                 "lut": _lut_predictions(bm, with_lut or [], lut_dir)}
        done[spec] = entry
        data["models"] = done
        atomic_write_json(jpath, data)
    data["models"] = {s: done[s] for s in models if s in done}
    atomic_write_json(jpath, data)
    table = format_table(data)
    atomic_write_text(rd / "report.md", f"# slimformer bench\n\n{_settings_line(data['settings'])}\n\n```\n{table}\n```\n")
    plot_bench(data, rd / "bench.png")
    return rd, data


def _settings_line(s: dict) -> str:
    return (f"backends {', '.join(s['backends'])}; latency at batch 1, throughput at batch {s['batch']} "
            f"({'largest power of two on GPU' if s['device'].startswith('cuda') else 'CPU'}); {s['threads']} "
            f"thread(s); median of {s['repeats']} runs after {s['warmup']} warm-up{_export_note(s)}; host: {s['host']}")


def _export_note(s: dict) -> str:
    e = s.get("onnx_export")  # absent in results written before the one exporter
    return f"; ONNX opset {e['opset']}, dynamic batch" if e and "onnxruntime" in s["backends"] else ""


def format_table(data: dict) -> str:
    backends = data["settings"]["backends"]
    luts = sorted({n for e in data["models"].values() for n in e.get("lut", {})})
    head = ["model", "input", "params M", "MACs M"]
    for be in backends:
        head += [f"{be} ms (p10-p90)", f"{be} img/s"]
    head += [f"LUT {n} ms" for n in luts]
    rows = [head]
    for e in data["models"].values():
        row = [e["name"], f"{e['img_size']} px" if e.get("img_size") else "-",
               f"{e['params'] / 1e6:.2f}" if e.get("params") else "-",
               f"{e['macs'] / 1e6:.0f}" if e.get("macs") else "-"]
        for be in backends:
            r = e["results"].get(be, {})
            if "latency" in r:
                lat = r["latency"]
                row += [f"{lat['median_ms']:.3f} ({lat['p10_ms']:.3f}-{lat['p90_ms']:.3f})",
                        f"{r['throughput']['images_per_s']:.1f}"]
            else:
                row += ["-", "-"]
        for n in luts:
            v = e.get("lut", {}).get(n, {}).get("ms")
            row.append(f"{v:.3f}" if v is not None else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_bench(data: dict, path: Path) -> Path:

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    entries = list(data["models"].values())
    backends = data["settings"]["backends"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    x = np.arange(len(entries))
    w = 0.8 / max(1, len(backends))
    for i, be in enumerate(backends):
        med = [e["results"].get(be, {}).get("latency", {}).get("median_ms", np.nan) for e in entries]
        lo = [m - e["results"].get(be, {}).get("latency", {}).get("p10_ms", m) for m, e in zip(med, entries)]
        hi = [e["results"].get(be, {}).get("latency", {}).get("p90_ms", m) - m for m, e in zip(med, entries)]
        ax1.bar(x + i * w, med, w, yerr=[lo, hi], capsize=3, label=be)
    ax1.set_xticks(x + w * (len(backends) - 1) / 2, [e["name"] for e in entries], rotation=40, ha="right",
                   fontsize=8)
    ax1.set_ylabel("batch-1 latency, ms (median, p10-p90)")
    ax1.legend()
    be = backends[0]
    for e in entries:
        lat = e["results"].get(be, {}).get("latency", {}).get("median_ms")
        if lat is None or not e.get("macs"):
            continue
        ax2.scatter(e["macs"] / 1e6, lat, c="tab:red" if e["kind"] == "slimformer" else "tab:blue")
        ax2.annotate(e["name"], (e["macs"] / 1e6, lat), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax2.set_xlabel("MACs (M)")
    ax2.set_ylabel(f"{be} batch-1 latency, ms")
    ax2.set_title("red: slimformer subnets, blue: timm baselines", fontsize=9)
    fig.suptitle(_settings_line(data["settings"]), fontsize=7)
    fig.tight_layout()
    return atomic_write_bytes(path, figure_png(fig, dpi=110))
