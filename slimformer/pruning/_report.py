"""Prune run artefacts: the channel table, the EfficientViT-style channel plot and a markdown report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes, atomic_write_text, figure_png
from ..supernet import ArchConfig, SearchSpace, arch_key

ATTENTION = ("mb3d", "evit")  # block kinds with attention (MetaBlock MB3D, EfficientViT's CGA block)


def channel_rows(cfg: ArchConfig, space: SearchSpace | None = None) -> list[dict[str, Any]]:
    """Per non-skip block: remaining Q, K, V and FFN channels and their ratio to the block's input width."""
    rows = []
    for si, pos, b in cfg.iter_blocks():
        if b.kind == "skip":
            continue
        c = cfg.stages[si].width
        q = b.heads * b.qk_dim if b.kind in ATTENTION else 0
        v = b.heads * b.v_dim if b.kind in ATTENTION else 0
        row = {"block": arch_key(si, pos), "kind": b.kind, "width": c, "heads": b.heads, "qk_dim": b.qk_dim,
               "v_dim": b.v_dim, "Q": q, "K": q, "V": v, "FFN": b.hidden(c),
               "Q/C": q / c, "K/C": q / c, "V/C": v / c, "FFN/C": b.hidden(c) / c}
        if space is not None and b.kind == "mb3d":
            row["qk_kept"] = q / (space.heads[-1] * space.qk_dims[-1])
            row["v_kept"] = v / (space.heads[-1] * space.v_dims[-1])
        elif space is not None and b.kind == "evit":  # heads stay as searched: shares of the block's own maxima
            row["qk_kept"] = b.qk_dim / space.qk_dims[-1]
            row["v_kept"] = b.v_dim / dict(space.attention_options(c))[b.heads][-1]
            row["ffn_kept"] = b.ffn_ratio / space.ffn_ratios[-1]
        rows.append(row)
    return rows


def rows_csv(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0]) if rows else []
    for r in rows:
        keys += [k for k in r if k not in keys]
    fmt = (lambda x: f"{x:.4f}" if isinstance(x, float) else str(x))
    return "\n".join([",".join(keys)] + [",".join(fmt(r.get(k, "")) for k in keys) for r in rows]) + "\n"


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| block | kind | C | heads | Q | K | V | FFN | Q/C | V/C | FFN/C |"
    out = [head, "|" + "---|" * 11]
    for r in rows:
        out.append(f"| {r['block']} | {r['kind']} | {r['width']} | {r['heads'] or '-'} | {r['Q'] or '-'} | "
                   f"{r['K'] or '-'} | {r['V'] or '-'} | {r['FFN']} | {_r(r, 'Q/C')} | {_r(r, 'V/C')} | "
                   f"{r['FFN/C']:.2f} |")
    return "\n".join(out)


def _r(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f}" if row["kind"] in ATTENTION or key == "FFN/C" else "-"


def pattern_verdict(rows: list[dict[str, Any]]) -> str:
    """Does the allocation trim Q/K and keep V (EfficientViT's finding)? Said plainly, either way."""
    att = [r for r in rows if r["kind"] in ATTENTION]
    if not att:
        return "The architecture has no MB3D (attention) block, so there is no Q/K versus V pattern to report."
    key = "qk_kept" if "qk_kept" in att[0] else "Q/C"
    vkey = "v_kept" if key == "qk_kept" else "V/C"
    trimmed = sum(r[key] < r[vkey] for r in att)
    what = "of the offered maximum" if key == "qk_kept" else "of the input width"
    mean_qk = sum(r[key] for r in att) / len(att)
    mean_v = sum(r[vkey] for r in att) / len(att)
    nums = f"mean Q/K kept {mean_qk:.0%} vs V kept {mean_v:.0%} {what}"
    if "ffn_kept" in att[0]:
        nums += f"; FFN kept {sum(r['ffn_kept'] for r in att) / len(att):.0%} of the largest ratio"
    if trimmed * 2 > len(att):
        return (f"The Q/K-trimmed, V-kept pattern shows: in {trimmed} of {len(att)} attention blocks Q/K keep a "
                f"smaller share than V ({nums}).")
    if trimmed:
        return (f"The Q/K-trimmed, V-kept pattern shows only partly: {trimmed} of {len(att)} attention blocks keep "
                f"a smaller share of Q/K than of V, the others do not ({nums}).")
    return (f"The Q/K-trimmed, V-kept pattern does NOT show in this model: no attention block keeps a smaller "
            f"share of Q/K than of V ({nums}).")


def channel_plot(rows: list[dict[str, Any]], title: str = "") -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows) + 2), 3.8), dpi=100)
    xs = list(range(len(rows)))
    att = [i for i, r in enumerate(rows) if r["kind"] in ATTENTION]
    ax.plot(xs, [r["FFN/C"] for r in rows], "s-", color="tab:green", label="FFN / C")
    if att:
        ax.plot(att, [rows[i]["Q/C"] for i in att], "o-", color="tab:blue", label="Q / C")
        ax.plot(att, [rows[i]["K/C"] for i in att], "x--", color="tab:orange", label="K / C")
        ax.plot(att, [rows[i]["V/C"] for i in att], "^-", color="tab:red", label="V / C")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(xs, [f"{r['block']}\n{r['kind']}" for r in rows], fontsize=7)
    ax.set_ylabel("remaining channels / input width C")
    ax.set_title(title or "channels kept per block")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def write_channel_artefacts(run_dir: Path, cfg: ArchConfig, space: SearchSpace | None, title: str = "") -> tuple[
        list[dict[str, Any]], str]:
    rows = channel_rows(cfg, space)
    atomic_write_text(run_dir / "channels.csv", rows_csv(rows))
    atomic_write_bytes(run_dir / "channels.png", channel_plot(rows, title))
    return rows, pattern_verdict(rows)
