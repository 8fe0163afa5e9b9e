"""``slimformer train``: the supernet, trained once with the sandwich rule, in-place distillation and
(optionally) Gumbel-softmax architecture weights.

Per update: the largest subnet learns from the (soft) labels and its detached predictions become the
teacher; the smallest and ``num_random`` random subnets learn from the labels (classifier head) and the
teacher (distillation head; ``kd_weight`` balances the two); in Gumbel mode one more pass of the largest
widths mixes the block kinds of every position with ``gumbel_softmax(alpha, tau)`` (plus the expected LUT
latency when a table is given). All gradients are accumulated, then one optimiser step (and one for alpha).
``sampling="uniform"`` (``--sampling uniform``) replaces the sandwich by as many uniformly drawn subnets, each
learning from the labels alone (single-path one-shot NAS; no teacher, no Gumbel).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import SlimformerError
from ..data import build_loaders, evaluate
from ..latency_lut import resolve_table
from ..supernet import (
    ArchConfig,
    Supernet,
    build_supernet,
    get_space,
    load_supernet,
    recalibrate_bn,
    save_supernet,
    supernet_from_pretrained,
)
from ._config import TrainConfig
from ._engine import (
    Optim,
    Targets,
    heads,
    kd_loss,
    open_run,
    record_epoch,
    run_epoch,
    say,
    soft_ce,
    updates_per_epoch,
    write_report,
)
from ._gumbel import ArchParams, tau_at
from ._state import (
    broadcast_params,
    init_distributed,
    is_main,
    pick_device,
    read_metrics,
    restore_rng,
    rng_states_of_all_ranks,
    seed_all,
)


def subnets_for_step(space, seed: int, step: int, num_random: int, sampling: str = "sandwich") -> list[ArchConfig]:
    """``"sandwich"``: the largest, the smallest and ``num_random`` random subnets; ``"uniform"``: ``2 + num_random``
    random subnets (as many passes, none fixed; single-path one-shot NAS's rule, no teacher). A function of
    (seed, step): the same on every rank and after a resume."""
    rng = random.Random(seed * 1_000_003 + step)
    if sampling == "uniform":
        return [space.sample(rng) for _ in range(2 + num_random)]
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(num_random))]


def sandwich_step(model: Supernet, optim: Optim, x: torch.Tensor, target: torch.Tensor, cfgs: list[ArchConfig], *,
                  kd_weight: float, temperature: float = 1.0, arch: ArchParams | None = None, tau: float = 1.0,
                  hard: bool = False, lat_weight: float = 0.0, step: int = 0, distil: bool = True) -> dict[str, float]:
    """One update (gradients accumulated over ``cfgs``, the first being the teacher); returns the losses.
    ``distil=False``: no teacher, every subnet learns from the labels with both heads (``kd_weight`` unused)."""
    optim.zero_grad()
    model.set_mixture(None)
    out: dict[str, float] = {}
    teacher = None
    ce_sum = kd_sum = 0.0
    for i, cfg in enumerate(cfgs):
        model.set_active(cfg)
        with optim.autocast():
            cls, dist = heads(model(x))
            if i == 0 or not distil:  # from the labels, both heads
                loss = 0.5 * (soft_ce(cls, target) + soft_ce(dist, target))
                if i == 0:
                    teacher = torch.softmax(((cls + dist) / 2).detach().float() / temperature, dim=-1)
                    out["loss_largest"] = float(loss.detach())
                else:
                    ce_sum += float(loss.detach())
            else:
                ce = soft_ce(cls, target)
                kd = kd_loss(dist, teacher, temperature)
                loss = (1 - kd_weight) * ce + kd_weight * kd
                ce_sum, kd_sum = ce_sum + float(ce.detach()), kd_sum + float(kd.detach())
        optim.backward(loss)
    n_students = max(len(cfgs) - 1, 1)
    out["loss_ce"], out["loss_kd"] = ce_sum / n_students, kd_sum / n_students
    kd_w = kd_weight if distil else 0.0
    total = out["loss_largest"] + (1 - kd_w) * out["loss_ce"] + kd_w * out["loss_kd"]
    if arch is not None:
        model.set_active(cfgs[0])
        model.set_mixture(arch.sample(tau, hard=hard))
        with optim.autocast():
            cls, dist = heads(model(x))
            g_loss = 0.5 * (soft_ce(cls, target) + soft_ce(dist, target))
            lat = arch.expected_latency()
            loss = g_loss + lat_weight * lat.to(g_loss.device)
        optim.backward(loss)
        model.set_mixture(None)
        out["loss_gumbel"], out["expected_ms"] = float(g_loss.detach()), float(lat.detach())
        total += float(loss.detach())
    optim.step(step + 1)
    out["loss"] = total
    return out


def _eval_subnet(model: Supernet, cfg: ArchConfig, loaders, recal_batches: int, max_batches) -> float:
    """Top-1 of ``cfg`` as a standalone copy with its own BatchNorm statistics (the shared ones are a blend)."""
    net = model.extract_subnet(cfg)
    recalibrate_bn(net, itertools.islice(iter(loaders.train), recal_batches))
    return evaluate(net, loaders.val, max_batches=max_batches)


def _build(cfg: TrainConfig, space, device, resuming: bool) -> tuple[Supernet, ArchParams | None, Any]:
    """The supernet (fresh, or from pretrained weights), and in Gumbel mode the architecture weights and
    their optimiser (with the latency table attached when one is given)."""
    if cfg.init_from and not resuming:
        model = supernet_from_pretrained(cfg.init_from, cfg.init_arch, space)
    else:
        torch.manual_seed(cfg.seed)
        model = build_supernet(space)
    model.distilled_training = True
    model.to(device).train()
    arch = ArchParams(space).to(device) if cfg.gumbel else None
    alpha_opt = (torch.optim.Adam(arch.parameters(), lr=cfg.alpha_lr, betas=(0.5, 0.999),
                                  weight_decay=cfg.alpha_weight_decay) if arch is not None else None)
    if arch is not None and cfg.lut:
        arch.attach_latency(resolve_table(cfg.lut, space=space, lut_dir=cfg.lut_dir), space.max_widths)
    return model, arch, alpha_opt


@dataclass
class _SupernetRun:
    """A supernet training in progress: what it trains with and where it stands."""
    cfg: TrainConfig
    run_dir: Path
    space: Any
    device: torch.device
    world: int
    loaders: Any
    model: Supernet
    arch: ArchParams | None  # Gumbel mode's architecture weights
    optim: Optim
    targets: Targets
    steps: int  # updates per epoch
    start: int = 0
    step: int = 0
    best: float = -1.0
    tau: float = 1.0  # the Gumbel temperature at the last step

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, architecture logits, optimiser, counters and random state."""
        ck = load_supernet(self.run_dir / "last.pt", space=self.space)
        st = ck.raw.get("train_state") or {}
        self.model.load_state_dict(st.get("model") or ck.raw["state_dict"])
        if self.arch is not None and ck.arch_logits:
            self.arch.load_logits(ck.arch_logits)
        self.start, self.step, self.best = int(st["epoch"]), int(st["step"]), float(st.get("best", -1.0))
        self.optim.load_state_dict(st, self.step)
        restore_rng(st)
        say(self.cfg, f"resuming {self.run_dir} at epoch {self.start + 1}/{self.cfg.epochs} (step {self.step})")

    def announce(self) -> None:
        cfg, space, world = self.cfg, self.space, self.world
        say(cfg, f"training the {space.name!r} supernet on {self.loaders.source} ({len(self.loaders.train.dataset)} "
                 f"images, {space.img_size}px) on {self.device}{f' x{world}' if world > 1 else ''}: {cfg.epochs} "
                 f"epochs x {self.steps} steps, {cfg.sampling} of {2 + cfg.num_random}{' + Gumbel' if self.arch else ''}; "
                 f"run directory: {self.run_dir}")

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of sandwich updates (and, on the main rank, its evaluation and metrics row)."""
        cfg, arch = self.cfg, self.arch
        self.loaders.set_epoch(epoch)
        total_steps = self.steps * cfg.epochs
        self.tau = tau_at(self.step, total_steps, cfg.tau0, cfg.tau_min)

        def one(x, y):
            self.tau = tau_at(self.step, total_steps, cfg.tau0, cfg.tau_min)
            x, t = self.targets(x, y)
            out = sandwich_step(self.model, self.optim, x, t,
                                subnets_for_step(self.space, cfg.seed, self.step, cfg.num_random, cfg.sampling),
                                kd_weight=cfg.kd_weight, temperature=cfg.kd_temperature, arch=arch, tau=self.tau,
                                hard=cfg.gumbel_hard, lat_weight=cfg.lat_weight, step=self.step,
                                distil=cfg.sampling == "sandwich")
            self.step += 1
            return out

        means = run_epoch(self.loaders.train, cfg, epoch=epoch, steps=self.steps, step_fn=one, device=self.device,
                          desc="train")
        row = {"epoch": epoch + 1, "step": self.step, **means, "lr": self.optim.lr}
        if arch is not None:
            row.update(tau=self.tau, alpha_entropy=arch.entropy())
        if is_main():
            self._evaluate(row)
        return row

    def _evaluate(self, row: dict[str, Any]) -> None:
        """Top-1 of the largest and the smallest subnet into ``row``, and the row into the metrics."""
        ev, loaders, space = self.optim.eval_model, self.loaders, self.space
        recal = max(1, min(20, len(loaders.train)))
        row["top1_largest"] = _eval_subnet(ev, space.largest(), loaders, recal, self.cfg.eval_batches)
        row["top1_smallest"] = _eval_subnet(ev, space.smallest(), loaders, recal, self.cfg.eval_batches)
        record_epoch(self.run_dir, row, title=f"supernet {space.name} on {loaders.source}")

    def save_epoch(self, epoch: int, row: dict[str, Any], rngs: list) -> None:
        """Main rank: ``last.pt`` after every epoch, ``best.pt`` when the largest subnet's top-1 improved."""
        cfg, arch = self.cfg, self.arch
        improved = row["top1_largest"] > self.best
        self.best = best = max(self.best, row["top1_largest"])
        meta = {"class_names": self.loaders.class_names, "epoch": epoch + 1, "step": self.step, "data": cfg.data,
                "top1_largest": row["top1_largest"], "top1_smallest": row["top1_smallest"], "best_top1": best,
                "ema": cfg.ema, "config": cfg.to_dict()}
        logits = arch.logits() if arch is not None else None
        train_state = {**self.optim.state_dict(), "rng": rngs[0], "rng_ranks": rngs, "epoch": epoch + 1,
                       "step": self.step, "best": best}
        if cfg.ema:
            train_state["model"] = self.model.state_dict()
        to_save = self.optim.eval_model
        if improved:
            save_supernet(self.run_dir / "best.pt", to_save, arch_logits=logits, meta=meta)
        save_supernet(self.run_dir / "last.pt", to_save, arch_logits=logits, meta=meta, train_state=train_state)
        say(cfg, f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.3f}, lr {row['lr']:.2e}, top-1 largest "
                 f"{100 * row['top1_largest']:.1f}%, smallest {100 * row['top1_smallest']:.1f}%"
                 + (f", tau {self.tau:.2f}, alpha entropy {row['alpha_entropy']:.3f}" if arch else "")
                 + f", {row['images_per_s']:.0f} img/s")

    def finish(self) -> None:
        """The report (main rank) and, in Gumbel mode, the block importances."""
        arch, cfg = self.arch, self.cfg
        table = ("block importances (softmax of alpha per position):\n" + arch.importance_table()) if arch else ""
        if is_main():
            keys = ["top1_largest", "top1_smallest"] + (["tau", "alpha_entropy"] if arch is not None else [])
            extra = f"```\n{table}\n```" if table else ""
            write_report(self.run_dir, f"Supernet training: space {self.space.name}, data {cfg.data}",
                         read_metrics(self.run_dir), keys, extra)
        if table:
            say(cfg, table)


def _prepare(config: TrainConfig, run_dir: str | Path | None) -> tuple[_SupernetRun, bool]:
    """Open the run (new or resumed) and build its data, supernet and optimiser; and whether it resumes."""
    rank, world = init_distributed(config.device)
    cfg, run_dir, resuming = open_run(config, run_dir, "train", TrainConfig)
    space = get_space(cfg.space)
    device = pick_device(cfg.device)
    seed_all(cfg.seed + rank)
    loaders = build_loaders(cfg.data, img_size=space.img_size, batch_size=cfg.batch_size, workers=cfg.workers,
                            seed=cfg.seed, train_size=cfg.train_size, val_size=cfg.val_size,
                            distributed=world > 1, pin_memory=device.type == "cuda")
    if loaders.num_classes != space.num_classes:
        raise SlimformerError(f"the data has {loaders.num_classes} classes but the space {space.name!r} has "
                              f"{space.num_classes}; use a space file with num_classes={loaders.num_classes}")
    model, arch, alpha_opt = _build(cfg, space, device, resuming)
    steps = updates_per_epoch(loaders.train, cfg)
    optim = Optim(model, cfg, updates_per_epoch=steps, device=device, extra=alpha_opt)
    run = _SupernetRun(cfg, run_dir, space, device, world, loaders, model, arch, optim,
                       Targets(cfg, loaders.num_classes), steps)
    return run, resuming


def train_supernet(config: TrainConfig, run_dir: str | Path | None = None) -> Path:
    """Train (or resume) a supernet; returns the path of the best checkpoint (``best.pt``)."""
    run, resuming = _prepare(config, run_dir)
    cfg, run_dir = run.cfg, run.run_dir
    if resuming:
        run.resume()
    broadcast_params(run.model)
    if run.arch is not None:
        broadcast_params(run.arch)
    run.announce()
    for epochs_run, epoch in enumerate(range(run.start, cfg.epochs), start=1):
        row = run.train_epoch(epoch)
        rngs = rng_states_of_all_ranks()  # after the evaluation (it draws loader seeds): what the next epoch sees
        if is_main():
            run.save_epoch(epoch, row, rngs)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        if cfg.stop_after and epochs_run >= cfg.stop_after and epoch + 1 < cfg.epochs:
            say(cfg, f"stopping after {epochs_run} epoch(s) as asked; continue with --resume {run_dir}")
            break
    run.finish()
    say(cfg, f"run directory: {run_dir}")
    return run_dir / "best.pt"
