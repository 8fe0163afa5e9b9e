"""EfficientFormer-L1 exported by slimformer vs timm's ``efficientformer_l1`` exported the plain way.

Both models hold the same weights: timm's ``efficientformer_l1`` is built with ``pretrained=False``
(random init: latency does not depend on the values; nothing is downloaded) and its state dict is
loaded into our L1 preset, whose outputs are checked to match. Then:

- ours: ``slimformer.export`` (BatchNorm and layer scale folded, heads merged, attention bias
  precomputed, qk scale folded) -> ``torch.onnx.export`` with a dynamic batch;
- timm: ``torch.onnx.export(timm_model)`` as is, same exporter settings.

Both run in onnxruntime on CPU, batch 1, one intra-op thread, in the same process with the two
sessions interleaved call by call (so load from other jobs hits both alike); the median of
``--repeats`` calls each. Printed per graph-optimization level: medians, spread, and the ratio
ours / timm (target <= 0.90). ``--levels`` adds runs with onnxruntime's own graph optimizations
reduced, which shows how much of the folding onnxruntime would otherwise do itself.

    python benchmarks/export_vs_timm.py [--repeats 200] [--levels all,disable] [--json out.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch

from slimformer.export import export_onnx, fold_bn
from slimformer.supernet import EfficientFormerNet, get_arch

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def session(path: Path, level: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = LEVELS[level]
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def interleaved(sessions: dict[str, ort.InferenceSession], x: np.ndarray, *, warmup: int, repeats: int):
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(warmup + repeats):
        order = list(sessions.items()) if i % 2 == 0 else list(sessions.items())[::-1]
        for name, s in order:
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def op_counts(path: Path) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node).most_common())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--levels", default="all,disable", help="onnxruntime graph optimization levels, comma-separated")
    ap.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch eager comparison")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    if any(lv not in LEVELS for lv in levels):
        ap.error(f"levels must be among {', '.join(LEVELS)}")

    ref = timm.create_model("efficientformer_l1", pretrained=False).eval()  # random init, no download
    ours = EfficientFormerNet(get_arch("l1"))
    ours.load_state_dict(ref.state_dict())
    ours.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        same = float((ours(x) - ref(x)).abs().max())
        folded_diff = float((fold_bn(ours)(x) - ref(x)).abs().max())
    with tempfile.TemporaryDirectory() as d:
        p_ours, p_timm = Path(d) / "ours_l1.onnx", Path(d) / "timm_l1.onnx"
        export_onnx(fold_bn(ours), p_ours, img_size=224)
        export_onnx(ref, p_timm, img_size=224)  # the plain way: the same exporter call on timm's module
        ops = {"ours": op_counts(p_ours), "timm": op_counts(p_timm)}
        xn = x.numpy()
        results = {}
        for lv in levels:
            sess = {"ours": session(p_ours, lv), "timm": session(p_timm, lv)}
            outs = {k: s.run(None, {"input": xn})[0] for k, s in sess.items()}
            times = interleaved(sess, xn, warmup=args.warmup, repeats=args.repeats)
            med = {k: statistics.median(v) for k, v in times.items()}
            results[lv] = {k: {"median_ms": med[k], "p10_ms": float(np.percentile(times[k], 10)),
                               "p90_ms": float(np.percentile(times[k], 90))} for k in times}
            results[lv]["ratio"] = med["ours"] / med["timm"]
            results[lv]["max_abs_diff_outputs"] = float(np.abs(outs["ours"] - outs["timm"]).max())
    if args.torch:  # the folded module in PyTorch eager vs timm's, interleaved the same way
        mods = {"ours": fold_bn(ours), "timm": ref}
        times = {k: [] for k in mods}
        with torch.inference_mode():
            for i in range(args.warmup + max(5, args.repeats // 4)):
                for k, m in (mods.items() if i % 2 == 0 else list(mods.items())[::-1]):
                    t0 = time.perf_counter()
                    m(x)
                    if i >= args.warmup:
                        times[k].append((time.perf_counter() - t0) * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        results["torch-eager"] = {k: {"median_ms": med[k]} for k in med} | {"ratio": med["ours"] / med["timm"]}
    print(f"EfficientFormer-L1, 224px, onnxruntime {ort.__version__} CPU, batch 1, 1 thread, "
          f"median of {args.repeats} interleaved calls (timm weights: random init, loaded into ours; "
          f"PyTorch outputs differ by {same:.1e} unfolded, {folded_diff:.1e} folded)")
    for lv, r in results.items():
        if lv == "torch-eager":
            continue
        print(f"  graph optimizations {lv:8s}: ours {r['ours']['median_ms']:7.2f} ms "
              f"(p10-p90 {r['ours']['p10_ms']:.2f}-{r['ours']['p90_ms']:.2f})   timm {r['timm']['median_ms']:7.2f} ms "
              f"(p10-p90 {r['timm']['p10_ms']:.2f}-{r['timm']['p90_ms']:.2f})   ratio ours/timm {r['ratio']:.3f} "
              f"(target <= 0.90)   max |d| outputs {r['max_abs_diff_outputs']:.1e}")
    if args.torch:
        r = results["torch-eager"]
        print(f"  PyTorch eager (no ONNX): ours {r['ours']['median_ms']:7.2f} ms   timm {r['timm']['median_ms']:7.2f} ms   "
              f"ratio ours/timm {r['ratio']:.3f}")
    print(f"  ONNX nodes: ours {sum(ops['ours'].values())} {ops['ours']}")
    print(f"              timm {sum(ops['timm'].values())} {ops['timm']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "onnx_ops": ops, "repeats": args.repeats,
                                               "onnxruntime": ort.__version__, "torch": torch.__version__},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
