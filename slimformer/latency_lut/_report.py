"""What ``lut show`` prints and ``lut profile`` draws: metadata, error figures, latency by op kind and stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._io import atomic_write_json, make_run_dir
from ..supernet import ArchConfig
from ._fidelity import correction_text
from ._keys import ALL_OP_KINDS, arch_ops_by_stage, op_kind, space_ops
from ._table import LatencyTable

KIND_LABELS = {
    "stem": "stem (2x Conv-BN-ReLU)", "ds": "downsample (Conv-BN)", "ds.tok": "downsample from tokens",
    "mb4d": "MB4D (pool + Conv MLP)", "flat": "flatten (map -> tokens)", "mb3d.qkv": "MB3D LayerNorm + QKV",
    "mb3d.attn": "MB3D attention core", "mb3d.proj": "MB3D projection + residual",
    "mb3d.mlp": "MB3D LayerNorm + MLP", "head": "head (norm, pool, classifier)",
}


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


def describe(table: LatencyTable, cfg: ArchConfig | None = None) -> str:
    """The text of ``lut show``."""
    covered = space_ops(table.space)
    have = sum(k in table.entries for k in covered)
    lines = [f"latency table {table.name!r} ({table.kind})",
             f"  device   : {table.device}", f"  backend  : {table.backend}"
             + (f", {table.threads} thread(s), batch {table.batch}, {table.clock} clock" if table.threads else "")]
    if table.runtime:
        lines.append("  runtime  : " + ", ".join(f"{k} {v}" for k, v in table.runtime.items()
                                                   if k in ("onnxruntime", "torch", "onnx", "python", "coremltools")))
    if table.cpu:
        lines.append(f"  cpu      : {table.cpu}")
    lines += [f"  date     : {table.date or '?'}",
              f"  space    : {table.space.name!r} (hash {table.space_hash}), {have}/{len(covered)} ops covered",
              f"  file     : {table.path or '(in memory)'}  (table hash {table.hash})",
              f"  overhead : {table.overhead_ms:.4f} ms per call"]
    c = table.correction
    lines.append(f"  correction: {correction_text(c)} (fitted on {c.get('samples', '?')} whole subnets)"
                 if c else "  correction: none")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(run_dir) if run_dir is not None else make_run_dir(runs_root, f"lut-profile-{table.name}")
    out.mkdir(parents=True, exist_ok=True)
    kinds, stages = by_kind(table, cfg), by_stage(table, cfg)
    total = sum(kinds.values())
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(ALL_OP_KINDS)}
    fig, (a, b) = plt.subplots(1, 2, figsize=(13.5, 4.6), dpi=120, gridspec_kw={"width_ratios": [1.2, 1]})
    order = sorted(kinds, key=lambda k: kinds[k])
    a.barh([KIND_LABELS.get(k, k) for k in order], [kinds[k] for k in order], color=[colors[k] for k in order])
    for i, k in enumerate(order):
        a.text(kinds[k], i, f" {kinds[k]:.2f} ms ({100 * kinds[k] / total:.0f}%)", va="center", fontsize=8)
    a.set_xlabel("latency (ms)")
    a.set_xlim(0, max(kinds.values()) * 1.45)
    a.set_title("by op kind", fontsize=10)
    parts = list(stages)
    bottom = [0.0] * len(parts)
    for k in ALL_OP_KINDS:
        vals = [stages[p].get(k, 0.0) for p in parts]
        if any(vals):
            b.bar(parts, vals, bottom=bottom, color=colors[k], label=KIND_LABELS.get(k, k))
            bottom = [x + y for x, y in zip(bottom, vals)]
    b.set_ylabel("latency (ms)")
    b.set_title("by stage", fontsize=10)
    b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{cfg.name or cfg.summary()} on {table.name} ({table.kind}): predicted {table.predict(cfg):.2f} ms",
                 fontsize=11)
    fig.tight_layout()
    png = out / "profile.png"
    fig.savefig(png)
    plt.close(fig)
    result = {"table": table.name, "table_kind": table.kind, "arch": cfg.to_dict(), "predicted_ms": table.predict(cfg),
              "sum_ms": total, "overhead_ms": table.overhead_ms, "by_kind_ms": kinds, "by_stage_ms": stages,
              "png": str(png), "run_dir": str(out)}
    atomic_write_json(out / "profile.json", result)
    return result
