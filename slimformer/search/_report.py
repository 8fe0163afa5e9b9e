"""A search's run directory: ``arch.json``, the trace, plots, the latency breakdown, a report, the weights.

``arch.json`` is contract 3 (``get_arch("run/arch.json")`` reads it); ``report.html`` embeds its plots
as base64 so it can be mailed or attached on its own.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .._io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, figure_png
from ..latency_lut import arch_ops_by_stage
from ..latency_lut._report import CORRECTION_COLOR, OVERHEAD_COLOR, has_correction, op_label, parts_text
from ._result import SearchResult


def predicted_text(r: SearchResult) -> str:
    """``1.584 ms`` plus, for an estimated table, its typical error (``± 7.9% typical error``)."""
    text = f"{r.predicted_ms:.3f} ms"
    if r.table_error and "pct" in r.table_error:
        how = f", {r.table_error['method']}" if r.table_error.get("method") else ""
        what = r.table_error.get("metric", "median absolute error")
        text += f" (± {r.table_error['pct']:.1f}% typical error: {what} of this {r.table_kind} table{how})"
    elif r.table_kind == "estimated":
        text += " (estimated table: no error figures recorded)"
    return text


def summary_rows(r: SearchResult) -> list[tuple[str, str]]:
    rows = [
        ("device", f"{r.device} (table {r.table_name}, {r.table_kind}, hash {r.table_hash[:12]})"),
        ("budget", f"{r.budget_ms:g} ms"),
        ("predicted", predicted_text(r)),
        *([("measured here", _measured_text(r))] if r.measured else []),
        ("space", f"{r.space_name} ({r.space_hash})"),
        ("strategy", r.strategy + "".join(f", {k}={v}" for k, v in r.options.items()
                                            if k in ("fast", "sampler", "mode", "trials", "proxy"))),
        ("score", f"{r.score_text or r.score:} -- {r.score_name}"),
        ("accuracy-driven", "yes" if r.accuracy_driven else "NO (training-free proxy)" if r.supernet is None
         else "no (alpha importance)"),
        ("arch", r.arch.summary()),
        ("size", f"{r.params / 1e6:.2f} M params, {r.macs / 1e6:.1f} M MACs"),
        ("seed", str(r.seed)),
    ]
    if r.run_dir is not None:
        rows.append(("run dir", str(r.run_dir)))
    return rows


def _measured_text(r: SearchResult) -> str:
    c = next(c for c in r.measured if c["chosen"])
    return (f"{c['measured_ms']:.3f} ms ({c['ratio']:.3f} of the budget; {len(r.measured)} subnet(s) timed on this "
            "machine)")


def format_table(rows: list[tuple[str, str]]) -> str:
    w = max(len(k) for k, _ in rows)
    line = "-" * (w + 3 + max(len(v) for _, v in rows))
    return "\n".join([line] + [f"{k.ljust(w)} | {v}" for k, v in rows] + [line])


def _score_axis(r: SearchResult) -> tuple[float, str]:
    """(factor, label) to plot scores with: accuracy in %, proxies in their unit."""
    if "accuracy" in r.score_name:
        return 100.0, "top-1 accuracy (%)"
    if r.score_name.startswith("MACs"):
        return 1.0, "M MACs (training-free capacity proxy)"
    if r.score_name.startswith("parameters"):
        return 1.0, "M params (training-free capacity proxy)"
    return 1.0, r.score_name


def _honest_limits(ax, values: list[float], r: SearchResult, axis: str = "y") -> None:
    """Accuracy axes span at least 10 points (a window of 1 point would make one validation image look like
    a trend); other scores start at 0."""
    if not values:
        return
    lo, hi = min(values), max(values)
    if "accuracy" in r.score_name:
        mid, half = (lo + hi) / 2, max(5.0, (hi - lo) * 0.55)
        lim = (max(0.0, mid - half), min(100.0, mid + half))
    else:
        lim = (0.0, hi * 1.08 if hi > 0 else 1.0)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*lim)


def _plot_trace(r: SearchResult) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if r.strategy == "optuna" and r.trace and "trial" in r.trace[0]:
        _draw_trials(ax, r)
    else:
        _draw_slimming(ax, r)
    ax.set_title(f"{r.strategy} search on table {r.table_name}", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def _draw_trials(ax, r: SearchResult) -> None:
    """One point per evaluated trial (fit / over budget), a rug for trials pruned unevaluated, the front."""
    k, label = _score_axis(r)
    scored = [t for t in r.trace if t.get("score") is not None and t["predicted_ms"] is not None]
    groups = [([t for t in scored if t["feasible"]], {"s": 14, "c": "tab:blue"}, "trials within the budget"),
              ([t for t in scored if not t["feasible"]], {"s": 14, "c": "0.7"}, "trials over the budget (pruned)")]
    for rows, style, name in groups:
        if rows:
            ax.scatter([t["predicted_ms"] for t in rows], [k * t["score"] for t in rows], label=name, **style)
    blind = [t["predicted_ms"] for t in r.trace if t.get("score") is None and t["predicted_ms"] is not None]
    if blind:  # no score: drawn on the x axis, not at a made-up value
        ax.plot(blind, [0.01] * len(blind), "|", color="0.45", ms=10, transform=ax.get_xaxis_transform(),
                label="over the budget, pruned unevaluated (latency only)")
    if r.pareto:
        ax.plot([p["predicted_ms"] for p in r.pareto], [k * p["score"] for p in r.pareto], "g.-", label="Pareto front")
    ax.axvline(r.budget_ms, color="r", ls="--", label=f"budget {r.budget_ms:g} ms")
    ax.plot([r.predicted_ms], [k * r.score], "r*", ms=14, ls="none", label="chosen")
    _honest_limits(ax, [k * t["score"] for t in scored] + [k * r.score], r)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(label, fontsize=9)
    ax.legend(fontsize=7, loc="best")


def _draw_slimming(ax, r: SearchResult) -> None:
    """Predicted latency (left axis) and score (right axis) per slimming step; the legend names both lines."""
    from matplotlib.ticker import MaxNLocator

    k, label = _score_axis(r)
    steps = [t["step"] for t in r.trace]
    h1 = ax.plot(steps, [t["predicted_ms"] for t in r.trace], "b.-", ms=4, label="predicted latency (left)")
    h2 = [ax.axhline(r.budget_ms, color="r", ls="--", label=f"budget {r.budget_ms:g} ms")]
    ax.set_xlabel("slimming step")
    ax.set_ylabel("predicted latency (ms)", color="b")
    ax.set_ylim(0, max(t["predicted_ms"] for t in r.trace) * 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax.twinx()
    scores = [k * t["score"] for t in r.trace]
    h3 = ax2.plot(steps, scores, "g.-", ms=4, label=f"{label.split(' (')[0]} (right)")
    _honest_limits(ax2, scores, r)
    ax2.set_ylabel(label, color="g", fontsize=8)
    handles = h1 + h2 + h3
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper center", ncol=3,
              bbox_to_anchor=(0.5, -0.16), frameon=False)


def _op_groups(r: SearchResult) -> list[tuple[str, str, float, int]]:
    """(stage, readable label, total ms, count) per run of identical consecutive ops, in network order."""
    parts = [p for p, _ in arch_ops_by_stage(r.arch)]
    if len(parts) != len(r.breakdown):
        parts = [""] * len(r.breakdown)
    groups: list[list] = []
    for part, (key, ms) in zip(parts, r.breakdown):
        if groups and groups[-1][0] == part and groups[-1][4] == key:
            groups[-1][2] += ms
            groups[-1][3] += 1
        else:
            groups.append([part, op_label(key), ms, 1, key])
    return [(g[0], g[1], g[2], g[3]) for g in groups]


def _plot_breakdown(r: SearchResult) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _op_groups(r)
    parts = r.latency_parts or {"ops_ms": sum(ms for _, ms in r.breakdown), "overhead_ms": 0.0,
                                "correction_ms": r.predicted_ms - sum(ms for _, ms in r.breakdown),
                                "predicted_ms": r.predicted_ms}
    rows = [(("" if stage in ("stem", "head", "") else f"{stage}: ") + (f"{n}x " if n > 1 else "") + label, ms,
             "tab:blue", None) for stage, label, ms, n in groups]
    rows.append(("per-call overhead", parts["overhead_ms"], OVERHEAD_COLOR, None))
    if has_correction(parts):
        rows.append(("correction (fitted on whole subnets)", parts["correction_ms"], CORRECTION_COLOR, "//"))
    fig, ax = plt.subplots(figsize=(8.0, max(2.5, 0.24 * len(rows) + 1.2)), dpi=100)
    for i, (_, ms, color, hatch) in enumerate(rows):
        ax.barh(i, ms, color=color, hatch=hatch, edgecolor="0.3" if hatch else color)
        ax.text(max(ms, 0), i, f" {ms:.3f}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [x[0] for x in rows], fontsize=8)
    ax.axhline(len(groups) - 0.5, color="0.6", lw=0.8, ls=":")
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, *(x[1] for x in rows)) * 1.3, max(x[1] for x in rows) * 1.15)
    ax.set_xlabel("predicted ms (a run of identical ops is one bar: their sum)")
    ax.set_title(f"latency on {r.table_name}: {parts_text(parts)}", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def _parts_line(r: SearchResult) -> str:
    return parts_text(r.latency_parts)


def _report_md(r: SearchResult, plots: dict[str, bytes]) -> str:
    lines = [f"# slimformer search: {r.budget_ms:g} ms on {r.device}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(r)]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    lines += ["", "## Search", "", f"![search]({'search.png'})", "",
              "## Per-op latency", "", "![breakdown](breakdown.png)", "",
              *([f"Predicted: {_parts_line(r)}.", ""] if r.latency_parts else []),
              "| op | ms |", "|---|---|"] + [f"| `{k}` | {ms:.4f} |" for k, ms in r.breakdown]
    if r.pareto:
        lines += ["", "## Pareto front", "", "| trial | predicted ms | score |", "|---|---|---|"]
        lines += [f"| {p['trial']} | {p['predicted_ms']:.3f} | {p['score']:.4g} |" for p in r.pareto]
    lines += ["", "Files: `arch.json` (use it with `slimformer export` / `get_arch`), `trace.jsonl`, "
              "`breakdown.json`" + (", `subnet.pt` (state dict of the extracted subnet)" if r.subnet_state else "")
              + ".", ""]
    return "\n".join(lines)


def _report_html(md: str, plots: dict[str, bytes]) -> str:
    """A self-contained HTML page: the markdown as simple HTML, images inlined as base64."""
    out, in_table = ["<!doctype html><meta charset='utf-8'><title>slimformer search</title>",
                     ("<style>body{font-family:sans-serif;max-width:900px;margin:auto}td,th{border:1px solid #ccc;"
                     "padding:2px 6px}table{border-collapse:collapse}code{font-size:90%}</style>")], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1:line.index(")")]
            data = base64.b64encode(plots[name]).decode()
            out.append(f"<p><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'></p>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def write_run(r: SearchResult, run_dir: Path) -> Path:
    """Write every artefact of ``r`` into ``run_dir`` (atomically, file by file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    r.run_dir = run_dir
    atomic_write_json(run_dir / "arch.json", r.arch_json())
    atomic_write_text(run_dir / "trace.jsonl", "".join(json.dumps(t, sort_keys=True) + "\n" for t in r.trace))
    atomic_write_json(run_dir / "breakdown.json", {"device": r.device, "table_hash": r.table_hash,
                                                   "predicted_ms": r.predicted_ms,
                                                   "ops": [{"op": k, "ms": ms} for k, ms in r.breakdown],
                                                   "parts": r.latency_parts})
    if r.pareto is not None:
        atomic_write_json(run_dir / "pareto.json", r.pareto)
    plots = {"search.png": _plot_trace(r), "breakdown.png": _plot_breakdown(r)}
    for name, data in plots.items():
        atomic_write_bytes(run_dir / name, data)
    md = _report_md(r, plots)
    atomic_write_text(run_dir / "report.md", md)
    atomic_write_text(run_dir / "report.html", _report_html(md, plots))
    if r.subnet_state is not None:
        atomic_torch_save(run_dir / "subnet.pt", r.subnet_state)
    return run_dir
