"""A search's run directory: ``arch.json``, the trace, plots, the latency breakdown, a report, the weights.

``arch.json`` is contract 3 (``get_arch("run/arch.json")`` reads it); ``report.html`` embeds its plots
as base64 so it can be mailed or attached on its own.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .._io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text
from ._result import SearchResult


def predicted_text(r: SearchResult) -> str:
    """``1.584 ms`` plus, for an estimated table, its typical error (``± 7.9% typical error``)."""
    text = f"{r.predicted_ms:.3f} ms"
    if r.table_error and "pct" in r.table_error:
        how = f", {r.table_error['method']}" if r.table_error.get("method") else ""
        text += f" (± {r.table_error['pct']:.1f}% typical error: median absolute error of this {r.table_kind} table{how})"
    elif r.table_kind == "estimated":
        text += " (estimated table: no error figures recorded)"
    return text


def summary_rows(r: SearchResult) -> list[tuple[str, str]]:
    rows = [
        ("device", f"{r.device} (table {r.table_name}, {r.table_kind}, hash {r.table_hash[:12]})"),
        ("budget", f"{r.budget_ms:g} ms"),
        ("predicted", predicted_text(r)),
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


def format_table(rows: list[tuple[str, str]]) -> str:
    w = max(len(k) for k, _ in rows)
    line = "-" * (w + 3 + max(len(v) for _, v in rows))
    return "\n".join([line] + [f"{k.ljust(w)} | {v}" for k, v in rows] + [line])


def _plot_trace(r: SearchResult) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if r.strategy == "optuna" and r.trace and "trial" in r.trace[0]:
        ok = [t for t in r.trace if t.get("evaluated", True) and t["predicted_ms"] is not None]
        xs, ys = [t["predicted_ms"] for t in ok], [t["score"] for t in ok]
        feas = [t["feasible"] for t in ok]
        ax.scatter([x for x, f in zip(xs, feas) if f], [y for y, f in zip(ys, feas) if f], s=12, label="trials (fit)")
        ax.scatter([x for x, f in zip(xs, feas) if not f], [y for y, f in zip(ys, feas) if not f], s=12,
                   c="lightgray", label="trials (over budget)")
        skipped = [t["predicted_ms"] for t in r.trace if not t.get("evaluated", True) and t["predicted_ms"]]
        if skipped and ys:
            ax.scatter(skipped, [min(ys)] * len(skipped), marker="x", s=12, c="gray",
                       label="over budget (not evaluated)")
        if r.pareto:
            ax.plot([p["predicted_ms"] for p in r.pareto], [p["score"] for p in r.pareto], "g.-", label="Pareto front")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel(r.score_name)
        ax.axvline(r.budget_ms, color="r", ls="--", label=f"budget {r.budget_ms:g} ms")
        ax.plot([r.predicted_ms], [r.score], "r*", ms=14, label="chosen")
    else:
        steps = [t["step"] for t in r.trace]
        ax.plot(steps, [t["predicted_ms"] for t in r.trace], "b.-", label="predicted latency")
        ax.axhline(r.budget_ms, color="r", ls="--", label=f"budget {r.budget_ms:g} ms")
        ax.set_xlabel("slimming step")
        ax.set_ylabel("predicted latency (ms)", color="b")
        ax2 = ax.twinx()
        ax2.plot(steps, [t["score"] for t in r.trace], "g.-")
        ax2.set_ylabel(r.score_name, color="g", fontsize=8)
    ax.set_title(f"{r.strategy} search on table {r.table_name}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _plot_breakdown(r: SearchResult) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = r.breakdown
    fig, ax = plt.subplots(figsize=(6.4, max(2.5, 0.16 * len(ops) + 1)), dpi=100)
    ax.barh(range(len(ops)), [ms for _, ms in ops], color="tab:blue")
    ax.set_yticks(range(len(ops)), [k for k, _ in ops], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("predicted ms")
    ax.set_title(f"per-op latency on {r.table_name}: {sum(ms for _, ms in ops):.3f} ms in ops", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _report_md(r: SearchResult, plots: dict[str, bytes]) -> str:
    lines = [f"# slimformer search: {r.budget_ms:g} ms on {r.device}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(r)]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    lines += ["", "## Search", "", f"![search]({'search.png'})", "",
              "## Per-op latency", "", "![breakdown](breakdown.png)", "",
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
                                                   "ops": [{"op": k, "ms": ms} for k, ms in r.breakdown]})
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
