"""The loop shared by supernet training and fine-tuning: optimiser, schedule, AMP, EMA, epochs, resume."""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._errors import SlimformerError
from .._io import atomic_write_json, atomic_write_text, make_run_dir, read_json
from ._state import all_reduce_grads, is_main, mean_over_ranks, plot_curves, read_metrics, write_metrics


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (label-smoothed one-hot or Mixup/CutMix mixtures)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def kd_loss(student: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy of the student against the teacher's (detached) softened predictions, times T^2."""
    t = temperature
    return soft_ce(student / t, teacher_probs.detach()) * (t * t)


def heads(out) -> tuple[torch.Tensor, torch.Tensor]:
    """(classifier logits, distillation-head logits); the same tensor twice for a model with one head."""
    return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, out)


class Targets:
    """Soft training targets: timm ``Mixup`` (Mixup/CutMix + label smoothing) or smoothed one-hot."""

    def __init__(self, cfg, num_classes: int):
        self.num_classes, self.smoothing = num_classes, cfg.label_smoothing
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                               num_classes=num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is not None and len(x) % 2 == 0:
            return self.mixup(x, y)
        off = self.smoothing / self.num_classes
        t = torch.full((len(y), self.num_classes), off, device=y.device)
        return x, t.scatter_(1, y.view(-1, 1), 1.0 - self.smoothing + off)


class Optim:
    """AdamW without decay on norms/biases/attention biases, cosine schedule with warm-up stepped per update,
    gradient scaling (AMP), clipping and optional EMA. ``extra`` is an optional second optimiser (alpha)."""

    def __init__(self, model: torch.nn.Module, cfg, *, updates_per_epoch: int, device: torch.device,
                 extra: torch.optim.Optimizer | None = None):
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        self.model, self.cfg, self.extra = model, cfg, extra
        self.opt = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched, _ = create_scheduler_v2(self.opt, "cosine", num_epochs=cfg.epochs, min_lr=cfg.min_lr,
                                            warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr,
                                            updates_per_epoch=updates_per_epoch, step_on_epochs=False)
        self.sched.step_update(0)
        self.amp = bool(cfg.amp and device.type == "cuda")
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.ema = None
        if cfg.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.extra_params = [p for g in extra.param_groups for p in g["params"]] if extra else []

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.extra:
            self.extra.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, global_step: int) -> None:
        """Average gradients over ranks, unscale, clip, step both optimisers, update EMA and the schedule.
        ``global_step`` is the number of updates done after this one."""
        all_reduce_grads(self.params + self.extra_params)
        self.scaler.unscale_(self.opt)
        if self.cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad)
        self.scaler.step(self.opt)
        if self.extra:
            self.scaler.unscale_(self.extra)
            self.scaler.step(self.extra)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=global_step)
        self.sched.step_update(global_step)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        sched = {k: v for k, v in self.sched.state_dict().items() if isinstance(v, (int, float, str, bool, list))}
        out = {"optimizer": self.opt.state_dict(), "scheduler": sched, "scaler": self.scaler.state_dict()}
        if self.extra:
            out["alpha_optimizer"] = self.extra.state_dict()
        if self.ema is not None:
            out["ema"] = self.ema.module.state_dict()
        return out

    def load_state_dict(self, st: dict[str, Any], global_step: int) -> None:
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict({**self.sched.state_dict(), **st.get("scheduler", {})})
        self.sched.step_update(global_step)
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if self.extra and "alpha_optimizer" in st:
            self.extra.load_state_dict(st["alpha_optimizer"])
        if self.ema is not None and "ema" in st:
            self.ema.module.load_state_dict(st["ema"])

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model


# ----------------------------------------------------------------- run dirs


def open_run(cfg, run_dir: str | Path | None, prefix: str, cls) -> tuple[Any, Path, bool]:
    """(config, run dir, resuming?). ``cfg.resume`` names a run dir (or a file in it) whose ``config.json``
    is reused; this invocation's ``quiet`` and ``stop_after`` still apply."""
    if cfg.resume:
        rd = Path(cfg.resume)
        rd = rd.parent if rd.is_file() else rd
        if not (rd / "config.json").is_file():
            raise SlimformerError(f"cannot resume {cfg.resume}: no config.json there (not a training run dir)")
        saved = cls.from_dict(read_json(rd / "config.json", "training config"))
        saved.quiet, saved.stop_after, saved.resume = cfg.quiet, cfg.stop_after, str(rd)
        saved.check()
        return saved, rd, (rd / "last.pt").is_file()
    cfg.check()
    cfg.absolutize()
    if run_dir is None:
        rd = make_run_dir(cfg.run_root, prefix) if is_main() else None
        if torch.distributed.is_initialized():
            box = [str(rd) if rd else None]
            torch.distributed.broadcast_object_list(box, 0)
            rd = Path(box[0])
    else:
        rd = Path(run_dir)
        rd.mkdir(parents=True, exist_ok=True)
    if is_main():
        atomic_write_json(rd / "config.json", cfg.to_dict())
    return cfg, rd, False


def updates_per_epoch(loader, cfg) -> int:
    n = len(loader)
    if n == 0:
        raise SlimformerError("the training set is smaller than one batch: lower --batch-size")
    return min(n, cfg.steps_per_epoch) if cfg.steps_per_epoch else n


MAX_SKIPPED_AMP_STEPS = 8  # consecutive non-finite losses tolerated under AMP (the scaler backs off meanwhile)


def run_epoch(loader, cfg, *, epoch: int, steps: int, step_fn: Callable[[torch.Tensor, torch.Tensor], dict],
              device: torch.device, desc: str) -> dict[str, float]:
    """One epoch of ``steps`` updates; returns the mean of what ``step_fn`` reported, and images/s."""
    from tqdm.auto import tqdm

    sums: dict[str, float] = {}
    n_img, t0 = 0, time.perf_counter()
    bar = tqdm(total=steps, desc=f"{desc} {epoch + 1}/{cfg.epochs}", unit="step", leave=False, dynamic_ncols=True,
               disable=cfg.quiet or not is_main())
    it = iter(loader)
    amp = bool(cfg.amp and device.type == "cuda")
    bad_run = 0
    for k in range(steps):
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = step_fn(x, y)
        bad_run = 0 if math.isfinite(out["loss"]) else bad_run + 1
        if bad_run > (MAX_SKIPPED_AMP_STEPS if amp else 0):  # AMP's scaler skips a few overflowing steps itself
            bar.close()
            raise SlimformerError(
                f"training stopped at epoch {epoch + 1}, step {k + 1}: the loss is {out['loss']} (not a finite "
                "number); nothing of this epoch was saved. Lower --lr, raise --kd-temperature or use --clip-grad")
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_img += len(x)
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.3f}", img_s=f"{n_img / (time.perf_counter() - t0):.0f}")
    bar.close()
    keys = sorted(sums)
    means = dict(zip(keys, mean_over_ranks([sums[k] / steps for k in keys], device), strict=True))
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    means["images_per_s"] = n_img * world / max(time.perf_counter() - t0, 1e-9)
    return means


def record_epoch(run_dir: Path, row: dict[str, Any], *, title: str) -> list[dict[str, Any]]:
    """Append ``row`` to metrics.jsonl (dropping rows of this or later epochs left by a killed run), plot."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch", math.inf) < row["epoch"]] + [row]
    write_metrics(run_dir, rows)
    plot_curves(run_dir, rows, title=title)
    return rows


def write_report(run_dir: Path, title: str, rows: list[dict[str, Any]], keys: list[str], extra: str = "") -> None:
    """``report.md``: what ran, per-epoch figures and anything ``extra`` (e.g. block importances)."""
    lines = [f"# {title}", "", "Options: `config.json`; per-epoch metrics: `metrics.jsonl`; plots: `curves.png`.", "",
             "| epoch | step | loss | lr | " + " | ".join(keys) + " | images/s |",
             "|---" * (len(keys) + 5) + "|"]
    for r in rows:
        cells = [f"{100 * r[k]:.1f}%" if k.startswith("top1") and r.get(k) is not None else
                 (f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")))
                 for k in keys]
        lines.append(f"| {r['epoch']} | {r['step']} | {r['loss']:.3f} | {r['lr']:.2e} | " + " | ".join(cells)
                     + f" | {r.get('images_per_s', 0):.0f} |")
    if extra:
        lines += ["", extra]
    atomic_write_text(Path(run_dir) / "report.md", "\n".join(lines) + "\n")


def say(cfg, msg: str) -> None:
    if not cfg.quiet and is_main():
        print(msg, flush=True)
