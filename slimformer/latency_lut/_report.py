"""What ``lut show`` prints and ``lut profile`` draws: metadata, error figures, latency by op kind and stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._io import atomic_write_json, make_run_dir
from ..supernet import ArchConfig
from ._fidelity import correction_text
from ._keys import ALL_OP_KINDS, arch_ops_by_stage, op_kind, parse_key, space_ops
from ._table import LatencyTable

KIND_LABELS = {
    "stem": "stem (2x Conv-BN-ReLU)", "ds": "downsample (Conv-BN)", "ds.tok": "downsample from tokens",
    "mb4d": "MB4D (pool + Conv MLP)", "flat": "flatten (map -> tokens)", "mb3d.qkv": "MB3D LayerNorm + QKV",
    "mb3d.attn": "MB3D attention core", "mb3d.proj": "MB3D projection + residual",
    "mb3d.mlp": "MB3D LayerNorm + MLP", "head": "head (norm, pool, classifier)",
}


def op_label(key: str) -> str:
    """A person's name for one op key, e.g. ``mb4d-r14-c368-mlp736`` -> ``MB4D 368 ch 14x14, MLP 736``."""
    kind, d = parse_key(key)
    g = d.get("r", 0)
    labels = {
        "stem": lambda: f"stem {d['i']}->{d['s']}->{d['c']} ch, {g} px",
        "ds": lambda: f"downsample {d['c']}->{d['o']} ch, {g}->{g // 2} px",
        "ds.tok": lambda: f"downsample (tokens) {d['c']}->{d['o']} ch, {g}->{g // 2} px",
        "mb4d": lambda: f"MB4D {d['c']} ch {g}x{g}, MLP {d['mlp']}",
        "flat": lambda: f"flatten {d['c']} ch -> {d['t']} tokens",
        "mb3d.qkv": lambda: f"MB3D LN + QKV {d['c']}->{d['o']}, {d['t']} tokens",
        "mb3d.attn": lambda: f"MB3D attention {d['h']} heads, qk {d['qk']} v {d['v']}, {d['t']} tokens",
        "mb3d.proj": lambda: f"MB3D projection {d['i']}->{d['c']}",
        "mb3d.mlp": lambda: f"MB3D LN + MLP {d['c']}->{d['mlp']}->{d['c']}",
        "head": lambda: f"head {d['c']} ch -> {d['k']} classes" + (" (+ distillation)" if d["d"] == 2 else ""),
    }
    if kind not in labels:  # another family's op: its kind and dims as written in the key
        return f"{kind} " + " ".join(f"{k}{v}" for k, v in d.items())
    return labels[kind]()


def prediction_parts(table: LatencyTable, cfg: ArchConfig) -> dict[str, float]:
    """The terms that add up to ``table.predict(cfg)``: ops, the per-call overhead, the correction."""
    ops = sum(ms for _, ms in table.breakdown(cfg))
    predicted = table.predict(cfg)
    return {"ops_ms": ops, "overhead_ms": table.overhead_ms,
            "correction_ms": predicted - ops - table.overhead_ms, "predicted_ms": predicted}


def has_correction(parts: dict[str, float]) -> bool:
    """Whether the correction is a term worth drawing (more than rounding noise of the sum)."""
    return abs(parts["correction_ms"]) > 1e-6 * max(parts["predicted_ms"], 1e-3)


def parts_text(parts: dict[str, float]) -> str:
    """``ops 0.80 + overhead 0.81 (+ correction 0.01) = 1.61 ms`` with every term the plot draws."""
    text = f"ops {parts['ops_ms']:.3f} + per-call overhead {parts['overhead_ms']:.3f}"
    c = parts["correction_ms"]
    if has_correction(parts):
        text += f" {'+' if c >= 0 else '-'} correction {abs(c):.3f}" if abs(c) >= 5e-4 else \
            f" {'+' if c >= 0 else '-'} correction {abs(c):.1g}"
    return text + f" = {parts['predicted_ms']:.3f} ms"


def by_kind(table: LatencyTable, cfg: ArchConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, key in arch_ops_by_stage(cfg):
        out[op_kind(key)] = out.get(op_kind(key), 0.0) + table.ms(key)
    return {k: out[k] for k in ALL_OP_KINDS if k in out}


def by_stage(table: LatencyTable, cfg: ArchConfig) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for part, key in arch_ops_by_stage(cfg):
        d = out.setdefault(part, {})
        d[op_kind(key)] = d.get(op_kind(key), 0.0) + table.ms(key)
    return out


def error_lines(table: LatencyTable) -> list[str]:
    e = table.error
    if table.kind == "estimated":
        head = (f"ESTIMATE: this table was not measured on {table.device}; its entries come from a cost "
                f"model fitted on published end-to-end latencies")
        if not e:
            return [head + " (no error figures stored)."]
        lines = [head + "."]
        if "median_abs_pct" in e:
            lines.append(f"  {e.get('method', 'error')}: median error {e['median_abs_pct']:.1f}%, worst "
                         f"{e.get('worst_abs_pct', float('nan')):.1f}% ({e.get('worst_model', '?')}), Spearman "
                         f"{e.get('spearman_rho', float('nan')):.3f} over {e.get('n_models', '?')} models")
        else:
            lines.append(f"  error: {_scalars(e)}")
        return lines
    from ._validate import format_figures

    v = table.meta.get("validation")
    val = []
    if isinstance(v, dict) and v.get("uncorrected"):
        val = [(f"last validation ({v.get('date', '?')}, {v.get('samples', '?')} random subnets not used in the fit, "
                f"faster of {v.get('rounds', 1)} round(s) each; {v.get('run_dir', '')}):"),
               f"  without correction: {format_figures(v['uncorrected'])}"]
        if v.get("corrected"):
            val.append(f"  with correction   : {format_figures(v['corrected'])}")
        if v.get("with_level"):
            val.append(f"  x machine level {v['level']['factor']:.4f} then: {format_figures(v['with_level'])}")
    if not e:
        return val or ["error figures: none stored (run `slimformer lut validate`)"]
    if "uncorrected" in e:
        lines = [f"fidelity at build time ({e.get('method', '')}, {e.get('samples', '?')} subnets):"]
        lines.append(f"  without correction: {format_figures(e['uncorrected'])}")
        if e.get("corrected"):
            lines.append(f"  with correction   : {format_figures(e['corrected'])}")
        return lines + val
    return [f"error: {_scalars(e)}"] + val


def _scalars(d: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items()
                     if isinstance(v, (int, float, str)))


_RUNTIME_SHOWN = ("onnxruntime", "torch", "onnx", "opset", "dynamic_axes", "python", "coremltools")


def describe(table: LatencyTable, cfg: ArchConfig | None = None) -> str:
    """The text of ``lut show``."""
    covered = space_ops(table.space)
    have = sum(k in table.entries for k in covered)
    lines = [f"latency table {table.name!r} ({table.kind})",
             f"  device   : {table.device}", f"  backend  : {table.backend}"
             + (f", {table.threads} thread(s), batch {table.batch}, {table.clock} clock" if table.threads else "")]
    if table.runtime:
        lines.append("  runtime  : " + ", ".join(f"{k} {v}" for k, v in table.runtime.items() if k in _RUNTIME_SHOWN))
    if table.cpu:
        lines.append(f"  cpu      : {table.cpu}")
    lines += [f"  date     : {table.date or '?'}",
              f"  space    : {table.space.name!r} (hash {table.space_hash}), {have}/{len(covered)} ops covered",
              f"  file     : {table.path or '(in memory)'}  (table hash {table.hash})",
              f"  overhead : {table.overhead_ms:.4f} ms per call"]
    c = table.correction
    lines.append(f"  correction: {correction_text(c)} (fitted on {c.get('samples', '?')} whole subnets)"
                 if c else "  correction: none")
    ref = (table.meta.get("build") or {}).get("reference") or table.meta.get("reference")
    if ref:
        lines.append(f"  reference: whole subnets timed in alternation with a reference subnet "
                     f"({ref['median_ms']:.3f} ms at build time); predictions are at the build's level")
    ref_op = (table.meta.get("build") or {}).get("reference_op") or table.meta.get("reference_op")
    if ref_op:
        retaken = (table.meta.get("build") or {}).get("retaken", ref_op.get("retaken"))
        lines.append(f"  reference op: every op timed in alternation with {ref_op['key']} "
                     f"({ref_op['median_ms']:.4f} ms at build time)"
                     + (f"; {retaken} op(s) whose reference moved measured again" if retaken is not None else "")
                     + (f"; its slowdown beside an op of the op's size taken out (slope {ref_op['beside']['slope']:+.4f})"
                        if ref_op.get("beside") else ""))
    if table.backend == "torch" and table.kind == "measured":  # eager torch's malloc policy (._alloc)
        alloc = (table.meta.get("build") or {}).get("allocator")
        lines.append(f"  allocator: {alloc or 'glibc defaults (built before the twenty-fourth session, or not glibc)'}")
    ctx = table.meta.get("context")
    if ctx:
        mape = {k: f"{v['mape_pct']:.2f} %" if v else "-" for k, v in ctx.get("in_sample", {}).items()}
        lines.append(f"  in context: {ctx['subnets']} calibration subnets profiled node by node; per-kind factors "
                     f"{'kept' if ctx['kept'] else 'not kept'} (in-sample MAPE {mape.get('alone', '-')} with the ops "
                     f"alone, {mape.get('in_context', '-')} in context)")
    lines += ["  " + x for x in error_lines(table)]
    faults = table.space.check(cfg) if cfg is not None else []
    if faults:
        lines.append(f"{cfg.name or 'architecture'} is not in the table's space ({faults[0]}); give --arch a "
                     f"config of space {table.space.name!r} for a breakdown")
    elif cfg is not None:
        kinds = by_kind(table, cfg)
        total = sum(kinds.values())
        raw = table.predict(cfg, corrected=False)
        lines.append(f"{cfg.name or 'architecture'} ({cfg.summary()}): predicted {table.predict(cfg):.3f} ms "
                     f"(sum of ops {total:.3f} + overhead {table.overhead_ms:.3f} = {raw:.3f} ms"
                     + (", then the correction)" if c else ")"))
        for k, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {KIND_LABELS.get(k, k):32s} {ms:9.3f} ms  {100 * ms / total:5.1f}%")
    return "\n".join(lines)


def profile(table: LatencyTable, cfg: ArchConfig, *, run_dir: str | Path | None = None,
            runs_root: str | Path | None = None) -> dict[str, Any]:
    """Bar charts of ``cfg``'s predicted latency by op kind and by stage; returns paths and figures."""
    faults = table.space.check(cfg)
    if faults:
        raise SlimformerError(f"{cfg.name or 'the architecture'} is not in the space of table {table.name!r} "
                              f"({table.space.name!r}): {faults[0]}")
    out = Path(run_dir) if run_dir is not None else make_run_dir(runs_root, f"lut-profile-{table.name}")
    out.mkdir(parents=True, exist_ok=True)
    kinds, stages, parts = by_kind(table, cfg), by_stage(table, cfg), prediction_parts(table, cfg)
    total = parts["ops_ms"]
    png = out / "profile.png"
    _draw_profile(png, kinds, stages, parts, f"{cfg.name or cfg.summary()} on {table.name} ({table.kind})")
    result = {"table": table.name, "table_kind": table.kind, "arch": cfg.to_dict(), "predicted_ms": table.predict(cfg),
              "sum_ms": total, "overhead_ms": table.overhead_ms, "correction_ms": parts["correction_ms"],
              "parts": parts, "by_kind_ms": kinds, "by_stage_ms": stages,
              "png": str(png), "run_dir": str(out)}
    atomic_write_json(out / "profile.json", result)
    return result


OVERHEAD_COLOR, CORRECTION_COLOR = "0.25", "0.85"  # tab10 uses mid grey for an op kind


def _draw_profile(png: Path, kinds: dict[str, float], stages: dict[str, dict[str, float]],
                  parts: dict[str, float], what: str) -> None:
    """Bars by op kind and stacked bars by stage; the per-call overhead and the correction are bars of their
    own in both, so each panel adds up to the predicted latency in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = parts["predicted_ms"]
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(ALL_OP_KINDS)}
    extra = [("per-call overhead", parts["overhead_ms"], OVERHEAD_COLOR, None)]
    if has_correction(parts):
        extra.append(("correction (fitted on whole subnets)", parts["correction_ms"], CORRECTION_COLOR, "//"))
    fig, (a, b) = plt.subplots(1, 2, figsize=(13.5, 4.8), dpi=110, gridspec_kw={"width_ratios": [1.2, 1]})
    order = sorted(kinds, key=lambda k: kinds[k])
    rows = extra[::-1] + [(KIND_LABELS.get(k, k), kinds[k], colors[k], None) for k in order]  # bottom to top
    for i, (label, ms, color, hatch) in enumerate(rows):
        a.barh(i, ms, color=color, hatch=hatch, edgecolor="0.3" if hatch else color)
        a.text(max(ms, 0), i, f" {ms:.3f} ms ({100 * ms / pred:.0f}%)", va="center", fontsize=8)
    a.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    a.axhline(len(extra) - 0.5, color="0.6", lw=0.8, ls=":")
    lo = min(0.0, *(r[1] for r in rows))
    a.set_xlim(lo * 1.3, max(r[1] for r in rows) * 1.4)
    a.set_xlabel("latency (ms), share of the predicted total")
    a.set_title(f"by op kind (ops sum to {parts['ops_ms']:.3f} ms)", fontsize=10)
    _stage_bars(b, stages, extra, colors)
    fig.suptitle(f"{what}: predicted {pred:.3f} ms = {parts_text(parts).rsplit(' = ', 1)[0]}", fontsize=11)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _stage_bars(ax, stages: dict[str, dict[str, float]], extra: list, colors: dict) -> None:
    names = list(stages) + [e[0].split(" (")[0].replace("per-call ", "") for e in extra]
    bottom = [0.0] * len(stages)
    for k in ALL_OP_KINDS:
        vals = [stages[p].get(k, 0.0) for p in stages]
        if any(vals):
            ax.bar(list(range(len(stages))), vals, bottom=bottom, color=colors[k], label=KIND_LABELS.get(k, k))
            bottom = [x + y for x, y in zip(bottom, vals)]
    for j, (label, ms, color, hatch) in enumerate(extra):
        ax.bar(len(stages) + j, ms, color=color, hatch=hatch, edgecolor="0.3" if hatch else color, label=label)
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30, ha="right")
    top = max(bottom + [e[1] for e in extra])
    ax.set_ylim(min(0.0, *(e[1] for e in extra)) * 1.2, top * 1.12)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_ylabel("latency (ms)")
    ax.set_title("by stage, then the per-call terms", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
