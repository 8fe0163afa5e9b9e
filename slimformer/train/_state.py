"""Run-directory plumbing shared by training and fine-tuning: RNG states, metrics, curves, devices, DDP."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .._errors import SlimformerError
from .._io import atomic_write_text

# ----------------------------------------------------------------- RNG states as weights_only-safe values


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors/lists (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
           "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def rng_states_of_all_ranks() -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state` (a collective call under torch.distributed; one element otherwise)."""
    mine = rng_state()
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def restore_rng(train_state: dict[str, Any]) -> None:
    """Restore this rank's RNG states from a ``train_state`` (rank 0's when the run had fewer ranks)."""
    ranks = train_state.get("rng_ranks") or [train_state["rng"]]
    rank = dist.get_rank() if dist.is_initialized() else 0
    set_rng_state(ranks[rank] if rank < len(ranks) else train_state["rng"])


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------- metrics and curves


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line after a kill
            break
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def plot_curves(run_dir: Path, rows: list[dict[str, Any]], *, title: str = "") -> Path | None:
    """``curves.png``: training loss, learning rate and validation top-1 per epoch."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(ep, [r["loss"] for r in rows], marker="o", label="total")
    for key, lab in (("loss_ce", "cross-entropy"), ("loss_kd", "distillation")):
        if any(r.get(key) is not None for r in rows):
            ax[0].plot(ep, [r.get(key) for r in rows], marker=".", label=lab)
    ax[0].set_title("training loss")
    ax[1].plot(ep, [r["lr"] for r in rows], marker="o")
    ax[1].set_title("learning rate (end of epoch)")
    ax[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for key in [k for k in rows[-1] if k.startswith("top1")]:
        ax[2].plot(ep, [100 * r[key] if r.get(key) is not None else None for r in rows], marker="o",
                   label=key.removeprefix("top1_") or "top-1")
    ax[2].set_title("validation top-1 (%)")
    tops = [y for line in ax[2].get_lines() for y in line.get_ydata() if y is not None]
    if tops:  # at least a 10-point window: a narrower one makes one or two validation images look like a trend
        mid, half = (min(tops) + max(tops)) / 2, max(5.0, (max(tops) - min(tops)) * 0.55)
        ax[2].set_ylim(max(0.0, mid - half), min(100.0, mid + half))
    from matplotlib.ticker import MaxNLocator

    for a in ax:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(run_dir) / "curves.png"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------- device and distributed


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SlimformerError("--device cuda was asked for but this machine has no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def init_distributed(device_name: str) -> tuple[int, int]:
    """(rank, world size). Under ``torchrun`` (``WORLD_SIZE`` > 1) joins the process group from env vars."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and device_name != "cpu"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def broadcast_params(module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks in one coalesced all-reduce (missing gradients count as zero).

    Weight-sharing steps run several subnets (different parameters each) per update, so instead of
    DistributedDataParallel's per-backward reducer the accumulated gradients are averaged once per step.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    i = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[i:i + n].view_as(p.grad))
        i += n


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()
