"""The iPhone 12 estimate: a non-negative per-op cost model fitted on published end-to-end latencies.

Nobody released EfficientFormer's iPhone 12 table, and we cannot reach an iPhone from here. What is
public are end-to-end latencies of well-known classifiers (``data/published_iphone12_latency.csv``,
copied from the papers and README figures; two series, v1 and v2, which are two devices in effect).
Each row names a timm model that builds the architecture, so its op features
(:func:`~._features.model_features`) are known exactly. The cost model is linear and non-negative:

    latency = overhead + launch * ops + roofline * floor + sum_k cost_k * work_k + patchify * n_patchify

``floor`` is the sum over the ops of each op's roofline time on the A14 (:func:`~._features.roofline_ms`:
its FLOPs at the Neural Engine's 11 TOPS peak or its fp16 weight bytes at LPDDR4X's 34.1 GB/s, whichever
is longer; sources in :mod:`._features`), and its cost may not fall below 1: so no op, and no network,
is ever predicted faster than the hardware allows, and a search cannot win by piling weights into a
layer whose FLOPs look cheap. The other work terms price what an op does on top of that floor:
dense FLOPs (convolutions, linear layers and attention matmuls: one price, since a linear layer is a
1x1 convolution to the Neural Engine), depthwise-conv FLOPs (memory-bound, priced apart), norm elements
(LayerNorm/GroupNorm; BatchNorm after a conv or linear is folded), softmax elements (exponentials and
row reductions, which the multiply-accumulate array does not do), other elementwise elements
(activations, adds, pooling), layout elements (transposes, gathers, concatenations), fp16 weight bytes
and fp16 activation bytes moved (memory traffic beyond the floor). The terms were chosen for what the
op kinds do on the device, not by searching for the lowest leave-one-out error. ``n_patchify`` is a network
term (``NETWORK_TERMS``): the number of stride >= 4 patch-embedding convolutions, one fixed cost each, which
the v1 series' paper names as a mobile bottleneck and which no op of the search spaces has; without it the
v1 fit priced the PoolFormers' and DeiTs' stems through their norms and softmaxes instead (see
``benchmarks/iphone_calibration.py`` for the variants tried and their leave-one-out figures).
Only models built from the space's op vocabulary are fitted: ConvMixer, ResMLP, MobileViT and
EfficientNet rows exercise op families the space never emits (``OUT_OF_VOCABULARY``); the table reports
how the fit predicts them, apart from the leave-one-out figures.
It is fitted to minimise the absolute *relative* error with :func:`scipy.optimize.nnls` (reweighted
iteratively, so one odd row cannot dominate), and checked by leaving each model out in turn. Each op
of the search space is then priced from its own features (``build_op(key)``): its table entry is the
model without the overhead, which becomes the table's overhead.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from scipy.optimize import nnls
from scipy.stats import spearmanr
from torch.utils._python_dispatch import TorchDispatchMode

from .._errors import SlimformerError
from ..supernet import EfficientFormerNet, SearchSpace, get_arch, get_space
from ._features import _CONV, DRAM_BYTES_PER_S, PEAK_OPS_PER_S, _to, model_features, op_features

SERIES = {"v1": "iphone-lut", "v2": "iphone12-ios16"}
SERIES_DEVICE = {
    "v1": "iPhone 12, CoreML (EfficientFormer paper series, coreml-performance app)",
    "v2": "iPhone 12, CoreML, iOS 16 (EfficientFormerV2 paper series, Xcode 14 performance tool)",
}
G, M = 1e9, 1e6
# (name, unit, feature -> value): the cost model's columns after the overhead
TERMS: tuple[tuple[str, str, Callable[[dict], float]], ...] = (
    ("launch", "ms per op", lambda f: f["n_ops"]),
    ("roofline", "x the per-op roofline floor", lambda f: f["floor_ms"]),
    ("dense", "ms per GFLOP", lambda f: (f["conv_flops"] + f["linear_flops"] + f["attn_flops"]) / G),
    ("dwconv", "ms per GFLOP", lambda f: f["dwconv_flops"] / G),
    ("norm", "ms per M elements", lambda f: f["norm_elems"] / M),
    ("softmax", "ms per M elements", lambda f: f["softmax_elems"] / M),
    ("elementwise", "ms per M elements", lambda f: (f["act_elems"] + f["elt_elems"] + f["pool_elems"]) / M),
    ("layout", "ms per M elements", lambda f: f["layout_elems"] / M),
    ("weights", "ms per MB (fp16)", lambda f: f["weight_bytes"] / M),
    ("activations", "ms per MB (fp16)", lambda f: f["act_bytes"] / M),
)


# Rows whose models are built from op families the search space never emits. Their latency can only teach
# the cost model about ops we do not price, so they are left out of the fit (and of its leave-one-out
# figures); the table still reports how the fitted model predicts them, as an out-of-vocabulary check.
OUT_OF_VOCABULARY = {
    "convmixer": "large-kernel (9x9/7x7) depthwise convolutions on full-resolution maps",
    "resmlp": "affine-only norms and cross-patch linear layers",
    "mobilevit": "unfold/fold patch reshuffling around transformer blocks",
    "efficientnet_": "squeeze-excitation and SiLU around depthwise convolutions",
}


def in_vocabulary(timm_name: str) -> bool:
    return not timm_name.startswith(tuple(OUT_OF_VOCABULARY))


def design_row(f: dict[str, float]) -> np.ndarray:
    """The cost model's work vector of one module's features (no overhead column, no network terms)."""
    return np.array([fn(f) for _, _, fn in TERMS], dtype=float)


# --------------------------------------------------------------------------- network terms
# Costs of a whole network that no op of the search spaces has, fitted with the op terms so that they do not
# distort them. A patchify stem (a convolution with stride >= PATCH_STRIDE: ViT/DeiT's and ResMLP's 16x16/16,
# PoolFormer's 7x7/4, ConvMixer's p x p/p) is "a speed bottleneck on mobile devices" in the v1 series' own
# latency profile (EfficientFormer, arXiv 2206.01191, Sec. 3, Observation 1: large-kernel, large-stride
# convolutions are poorly supported by mobile compilers). Its cost is one per network, not per FLOP: the v1
# PoolFormers take 6.1/6.2/6.7 ms at 12/24/36 blocks, and DeiT-S (4x DeiT-T's FLOPs) only 2.6 ms more than
# DeiT-T. The space's stems are 3x3 stride-2 convolutions, so the term prices no table entry (a test checks).
PATCH_STRIDE = 4
NETWORK_TERMS: tuple[tuple[str, str, Callable[[dict], float]], ...] = (
    ("patchify", "ms per stride>=4 conv", lambda f: f.get("n_patchify", 0.0)),
)
ALL_TERMS = TERMS + NETWORK_TERMS


def fit_row(f: dict[str, float]) -> np.ndarray:
    """The full work vector the cost model is fitted on: the op terms, then the network terms (0 for an op)."""
    return np.concatenate([design_row(f), [fn(f) for _, _, fn in NETWORK_TERMS]])


class _PatchifyCounter(TorchDispatchMode):
    """Counts the convolutions with a stride of at least ``PATCH_STRIDE`` on every axis in one forward pass,
    and their FLOPs."""

    def __init__(self):
        super().__init__()
        self.n, self.flops = 0, 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        transposed = len(args) > 6 and bool(args[6])
        if name in _CONV and len(args) > 3 and min(args[3]) >= PATCH_STRIDE and not transposed:
            w = args[1]
            self.n += 1
            self.flops += 2.0 * out.numel() * w.shape[1] * math.prod(w.shape[2:])
        return out


def network_features(module, example_input) -> dict[str, float]:
    """Features of a whole network that the op features leave out: ``n_patchify``, its patchify convolutions,
    and ``patchify_flops``, their FLOPs (run once on the meta device, like :func:`~._features.op_features`)."""
    import copy

    import torch

    m = copy.deepcopy(module).eval().to("meta")
    x = _to(example_input, torch.device("meta"))
    counter = _PatchifyCounter()
    with torch.no_grad(), counter:
        m(*x) if isinstance(x, tuple) else m(x)
    return {"n_patchify": float(counter.n), "patchify_flops": counter.flops}


# --------------------------------------------------------------------------- the published data
@dataclass(frozen=True)
class PublishedRow:
    model: str
    timm_name: str
    input: int | None  # None: not stated in the source
    series: str
    ms: float
    confidence: str
    top1: float | None = None


def published_rows(series: str) -> list[PublishedRow]:
    """Rows of one series from the copy of the data shipped in the package."""
    if series not in SERIES:
        raise SlimformerError(f"unknown series {series!r}: use one of {', '.join(SERIES)}")
    text = resources.files("slimformer.latency_lut").joinpath("data/published_iphone12_latency.csv").read_text()
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        if r["series"] != series:
            continue
        rows.append(PublishedRow(r["model"], r["timm_name"], None if r["input"] == "?" else int(r["input"]),
                                 r["series"], float(r["iphone12_ms"]), r["confidence"],
                                 float(r["top1"]) if r.get("top1") else None))
    return rows


def timm_features(row: PublishedRow) -> tuple[dict[str, float], int, str | None]:
    """(features, input side, note) of the timm model a row names, built without weights (no hub access)."""
    import timm

    model = timm.create_model(row.timm_name, pretrained=False)
    note = None
    if row.input is None:
        size = tuple(model.pretrained_cfg["input_size"])
        note = f"{row.timm_name}: input size not stated in the source; used timm's default {size[-1]} px"
    else:
        size = (3, row.input, row.input)
    import torch

    f = model_features(model, size)
    f.update(network_features(model, torch.zeros((1, *size))))
    return f, size[-1], note


# --------------------------------------------------------------------------- fitting
# No op may be priced below its roofline time on the A14 (see ``_features.roofline_ms`` for the published
# peak and bandwidth): the roofline term's cost is at least 1. Dense FLOPs at the Neural Engine's peak are
# inside that floor, so no dense FLOP costs less than 1/11e12 s either (0.091 ms per GFLOP).
ROOFLINE_FLOOR = 1.0
DENSE_FLOOR_MS_PER_GFLOP = 1e3 * G / PEAK_OPS_PER_S


def _lower_bounds(n_terms: int = len(ALL_TERMS)) -> np.ndarray:
    lb = np.zeros(1 + n_terms)
    lb[1 + [n for n, _, _ in TERMS].index("roofline")] = ROOFLINE_FLOOR
    return lb


def fit_nonneg(X: np.ndarray, y: np.ndarray, *, iters: int = 50, floor: float = 0.02,
               lower: np.ndarray | None = None) -> np.ndarray:
    """Coefficients of ``[1, X]``, each >= its lower bound (default: 0, and 1 for the roofline term, the
    columns of ``X`` being the op terms, optionally followed by the network terms),
    minimising the sum of absolute relative errors.

    Relative error: each row is divided by its latency. Absolute, not squared: iteratively reweighted
    NNLS (weights ``1/sqrt(max(|r|, floor))``), which converges to the least-absolute-deviation fit.
    Lower bounds enter as ``w = lower + v`` with ``v >= 0``, so plain NNLS still solves it."""
    lower = _lower_bounds(X.shape[1]) if lower is None else lower
    A = np.hstack([np.ones((len(y), 1)), X]) / y[:, None]
    b = 1.0 - A @ lower
    scale = np.maximum(A.max(axis=0), 1e-12)  # conditioning only; NNLS is scale-invariant per column
    A = A / scale
    v, _ = nnls(A, b)
    for _ in range(iters):
        s = 1.0 / np.sqrt(np.maximum(np.abs(A @ v - b), floor))
        v, _ = nnls(A * s[:, None], b * s)
    return lower + v / scale


def leave_one_out(X: np.ndarray, y: np.ndarray, *, lower: np.ndarray | None = None) -> np.ndarray:
    """Prediction of every row by a model fitted on all the other rows."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = fit_nonneg(X[keep], y[keep], lower=lower)
        out[i] = w[0] + X[i] @ w[1:]
    return out


@dataclass
class IphoneFit:
    """The fitted cost model of one series and its leave-one-model-out error."""

    series: str
    overhead_ms: float
    costs: dict[str, float]  # term -> cost in its unit
    rows: list[PublishedRow]
    fitted_ms: list[float]
    loo_ms: list[float]
    notes: list[str] = field(default_factory=list)
    excluded: list[tuple[PublishedRow, float]] = field(default_factory=list)  # (row, prediction of the fit)

    def work_ms(self, features: dict[str, float]) -> float:
        """Cost of one op (or a whole model without the overhead) from its features."""
        return float(fit_row(features) @ np.array([self.costs[n] for n, _, _ in ALL_TERMS]))

    def error(self) -> dict[str, Any]:
        y = np.array([r.ms for r in self.rows])
        loo = np.array(self.loo_ms)
        e = np.abs(loo - y) / y * 100
        ins = np.abs(np.array(self.fitted_ms) - y) / y * 100
        worst = int(np.argmax(e))
        return {
            "method": "leave-one-model-out",
            "series": self.series,
            "n_models": len(y),
            "median_abs_pct": round(float(np.median(e)), 2),
            "worst_abs_pct": round(float(e[worst]), 2),
            "worst_model": self.rows[worst].model,
            "spearman_rho": round(float(spearmanr(loo, y).statistic), 4),
            "in_sample_median_abs_pct": round(float(np.median(ins)), 2),
            "cost_model": {"overhead_ms": round(self.overhead_ms, 6),
                           **{f"{n} ({u})": round(self.costs[n], 8) for n, u, _ in ALL_TERMS}},
            "per_model": [{"model": r.model, "timm_name": r.timm_name, "published_ms": r.ms,
                           "fit_ms": round(f, 4), "loo_ms": round(p, 4)}
                          for r, f, p in zip(self.rows, self.fitted_ms, self.loo_ms)],
            "out_of_vocabulary": [{"model": r.model, "timm_name": r.timm_name, "published_ms": r.ms,
                                   "predicted_ms": round(p, 4),
                                   "why_excluded": next(v for k, v in OUT_OF_VOCABULARY.items()
                                                        if r.timm_name.startswith(k))}
                                  for r, p in self.excluded],
            "notes": list(self.notes),
        }


def fit_series(series: str, *, progress: bool = False) -> IphoneFit:
    """Fit the cost model on one published series (builds each named timm model, without weights).

    Only rows built from the space's op vocabulary are fitted (see ``OUT_OF_VOCABULARY``)."""
    all_rows = published_rows(series)
    feats, notes = [], []
    it = all_rows
    if progress:
        from tqdm import tqdm

        it = tqdm(all_rows, desc=f"features of the {series} models", unit="model")
    for r in it:
        f, _, note = timm_features(r)
        feats.append(f)
        if note:
            notes.append(note)
    keep = [i for i, r in enumerate(all_rows) if in_vocabulary(r.timm_name)]
    rows = [all_rows[i] for i in keep]
    X_all = np.array([fit_row(f) for f in feats])
    X, y = X_all[keep], np.array([r.ms for r in rows])
    w = fit_nonneg(X, y)
    fitted = w[0] + X @ w[1:]
    loo = leave_one_out(X, y)
    excluded = [(all_rows[i], float(w[0] + X_all[i] @ w[1:])) for i in range(len(all_rows)) if i not in keep]
    notes.append(f"fitted on the {len(rows)} of {len(all_rows)} models built from the space's op vocabulary; "
                 f"left out: {', '.join(r.model for r, _ in excluded) or 'none'}")
    notes.append("fit: non-negative least absolute relative error (iteratively reweighted scipy nnls); every op "
                 "priced at >= its A14 roofline time (FLOPs at the Neural Engine's 11 TOPS, fp16 weights at "
                 "LPDDR4X-4266's 34.1 GB/s)")
    return IphoneFit(series, float(w[0]), {n: float(c) for (n, _, _), c in zip(ALL_TERMS, w[1:])}, rows,
                     [float(v) for v in fitted], [float(v) for v in loo], notes, excluded)


def op_costs(fit: IphoneFit, keys: list[str], *, progress: bool = False) -> dict[str, float]:
    """Estimated ms of every op key, from the features of ``build_op(key)``."""
    from ._ops import build_op

    it = keys
    if progress:
        from tqdm import tqdm

        it = tqdm(keys, desc=f"pricing ops ({fit.series})", unit="op")
    out = {}
    for k in it:
        m, x = build_op(k)
        out[k] = fit.work_ms(op_features(m, x))
    return out


def network_floor(cfg) -> dict[str, float]:
    """The least time the A14 can take for the network ``cfg`` (batch 1, fp16), in ms: its FLOPs at the
    Neural Engine's peak (``compute_ms``), its weights streamed once from DRAM (``weights_ms``), and the
    sum of its ops' roofline times (``roofline_ms``, >= both), which no estimated table goes below."""
    import torch

    with torch.device("meta"):
        net = EfficientFormerNet(cfg)
    f = model_features(net, (cfg.in_chans, cfg.img_size, cfg.img_size))
    flops = f["conv_flops"] + f["dwconv_flops"] + f["linear_flops"] + f["attn_flops"]
    return {"compute_ms": 1e3 * flops / PEAK_OPS_PER_S, "weights_ms": 1e3 * f["weight_bytes"] / DRAM_BYTES_PER_S,
            "roofline_ms": f["floor_ms"]}


def iphone_context(cfg, table_name: str, *, lut_dir=None) -> list[str]:
    """Lines that place a subnet chosen on one iPhone estimate: its prediction on the other series' table,
    its A14 floor, and the published reference point (EfficientFormer-L1 in that series, with its
    ImageNet top-1). Empty for any other table."""
    from ._registry import get_table

    series = next((k for k, v in SERIES.items() if v == table_name), None)
    if series is None:
        return []
    other = next(v for k, v in SERIES.items() if k != series)
    t = get_table(other, lut_dir=lut_dir)
    lines = []
    if not t.space.check(cfg):
        lines.append(f"on {other} (series {'v2' if series == 'v1' else 'v1'} estimate): {t.predict(cfg):.3f} ms")
    fl = network_floor(cfg)
    lines.append(f"A14 floor: {fl['roofline_ms']:.3f} ms (compute at 11 TOPS {fl['compute_ms']:.3f} ms, fp16 weights "
                 f"at 34.1 GB/s {fl['weights_ms']:.3f} ms)")
    ref = next(r for r in published_rows(series) if r.timm_name == "efficientformer_l1")
    lines.append(f"reference: {ref.model} {ref.ms:g} ms published (series {series}), {ref.top1:g} % ImageNet top-1")
    return lines


# --------------------------------------------------------------------------- the shipped tables
PRESET_ROWS = {"l1": "efficientformer_l1", "l3": "efficientformer_l3", "l7": "efficientformer_l7"}


def preset_predictions(table, fit: IphoneFit) -> dict[str, dict[str, float | None]]:
    """Predicted ms of the L1/L3/L7 presets from the table's op entries, beside what was published."""
    published = {r.timm_name: r.ms for r in fit.rows}
    out = {}
    for name, timm_name in PRESET_ROWS.items():
        cfg = get_arch(name)
        if not table.space.contains(cfg):
            continue
        out[name] = {"predicted_ms": round(table.predict(cfg), 4), "published_ms": published.get(timm_name)}
    return out


def estimate_table(series: str, *, space=None, fit: IphoneFit | None = None, progress: bool = False,
                   name: str | None = None):
    """The estimated iPhone 12 table of ``series`` (v1 -> ``iphone-lut``, v2 -> ``iphone12-ios16``) for ``space``
    (named ``name``, by default the series' table name)."""
    import datetime as _dt

    import scipy
    import timm
    import torch

    from ._keys import space_ops
    from ._table import LatencyTable

    space = space or SearchSpace()
    fit = fit or fit_series(series, progress=progress)
    costs = op_costs(fit, space_ops(space), progress=progress)
    entries = {k: {"median_ms": round(v, 6), "spread_ms": 0.0, "count": 0} for k, v in costs.items()}
    err = fit.error()
    table = LatencyTable(
        name=name or SERIES[series], kind="estimated", device=SERIES_DEVICE[series], backend="coreml (estimated)",
        space=space, entries=entries, overhead_ms=round(fit.overhead_ms, 6), correction=None, error=err,
        threads=None, batch=1, cpu=None, date=_dt.date.today().isoformat(),
        runtime={"torch": torch.__version__, "timm": timm.__version__, "scipy": scipy.__version__},
        meta={"estimate": (f"ESTIMATE, not a measurement: a non-negative per-op cost model fitted on "
                           f"{err['n_models']} published end-to-end iPhone 12 latencies (series {series}); "
                           f"leave-one-model-out error: median {err['median_abs_pct']}%, worst "
                           f"{err['worst_abs_pct']}% ({err['worst_model']}), Spearman rho {err['spearman_rho']}"),
              "source": "slimformer/latency_lut/data/published_iphone12_latency.csv"})
    table.meta["presets"] = preset_predictions(table, fit)
    return table


# the spaces the package ships iPhone estimates of, and the suffix of their table names
SHIPPED_SPACES = {"default": "", "efficientvit": "-efficientvit"}


def write_shipped_tables(out_dir=None, *, progress: bool = True) -> list:
    """Regenerate ``tables/iphone-lut.json`` and ``tables/iphone12-ios16.json`` (what the package ships),
    and the same estimates of the other ``SHIPPED_SPACES`` (``iphone-lut-efficientvit.json``...)."""
    from pathlib import Path

    out = Path(out_dir) if out_dir is not None else Path(__file__).parent / "tables"
    paths = []
    for series, name in SERIES.items():
        fit = fit_series(series, progress=progress)
        for space, suffix in SHIPPED_SPACES.items():
            table = estimate_table(series, space=get_space(space), fit=fit, progress=progress, name=name + suffix)
            paths.append(table.save(out / f"{name}{suffix}.json"))
    return paths


def format_fit(fit: IphoneFit, presets: dict | None = None) -> str:
    """A readable report of one series' fit: costs, per-model published vs leave-one-out, error figures."""
    e = fit.error()
    lines = [f"series {fit.series} -> {SERIES[fit.series]}: {e['n_models']} models",
             f"  cost model: overhead {fit.overhead_ms:.3f} ms; "
             + "; ".join(f"{n} {fit.costs[n]:.4g} {u}" for n, u, _ in ALL_TERMS),
             f"  {'model':28s} {'published':>9s} {'fit':>7s} {'LOO':>7s} {'LOO err':>8s}"]
    for p in e["per_model"]:
        lines.append(f"  {p['model']:28s} {p['published_ms']:9.2f} {p['fit_ms']:7.2f} {p['loo_ms']:7.2f} "
                     f"{(p['loo_ms'] - p['published_ms']) / p['published_ms'] * 100:+7.1f}%")
    lines.append(f"  leave-one-model-out |error|: median {e['median_abs_pct']:.1f}%, worst {e['worst_abs_pct']:.1f}% "
                 f"({e['worst_model']}); Spearman rho {e['spearman_rho']:.3f}; in-sample median "
                 f"{e['in_sample_median_abs_pct']:.1f}%")
    for o in e["out_of_vocabulary"]:
        lines.append(f"  left out: {o['model']:20s} published {o['published_ms']:5.2f} ms, predicted "
                     f"{o['predicted_ms']:5.2f} ms ({o['why_excluded']})")
    for n in e["notes"]:
        lines.append(f"  note: {n}")
    for name, p in (presets or {}).items():
        pub = f"{p['published_ms']:.2f} ms published" if p.get("published_ms") is not None else "not published"
        lines.append(f"  preset {name.upper()}: predicted {p['predicted_ms']:.2f} ms from the table ({pub})")
    return "\n".join(lines)
