"""``slimformer train``: the supernet, trained once with the sandwich rule, in-place distillation and
(optionally) Gumbel-softmax architecture weights.

Per update: the largest subnet learns from the (soft) labels and its detached predictions become the
teacher; the smallest and ``num_random`` random subnets learn from the labels (classifier head) and the
teacher (distillation head; ``kd_weight`` balances the two); in Gumbel mode one more pass of the largest
widths mixes the block kinds of every position with ``gumbel_softmax(alpha, tau)`` (plus the expected LUT
latency when a table is given). All gradients are accumulated, then one optimiser step (and one for alpha).
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch

from .._errors import SlimformerError
from ..data import build_loaders, evaluate
from ..latency_lut import resolve_table
from ..supernet import (
    ArchConfig,
    Supernet,
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


def subnets_for_step(space, seed: int, step: int, num_random: int) -> list[ArchConfig]:
    """Largest, smallest and ``num_random`` random subnets; a function of (seed, step): same on every rank
    and after a resume."""
    rng = random.Random(seed * 1_000_003 + step)
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(num_random))]


def sandwich_step(model: Supernet, optim: Optim, x: torch.Tensor, target: torch.Tensor, cfgs: list[ArchConfig], *,
                  kd_weight: float, temperature: float = 1.0, arch: ArchParams | None = None, tau: float = 1.0,
                  hard: bool = False, lat_weight: float = 0.0, step: int = 0) -> dict[str, float]:
    """One update (gradients accumulated over ``cfgs``, the first being the teacher); returns the losses."""
    optim.zero_grad()
    model.set_mixture(None)
    out: dict[str, float] = {}
    teacher = None
    ce_sum = kd_sum = 0.0
    for i, cfg in enumerate(cfgs):
        model.set_active(cfg)
        with optim.autocast():
            cls, dist = heads(model(x))
            if i == 0:
                loss = 0.5 * (soft_ce(cls, target) + soft_ce(dist, target))
                teacher = torch.softmax(((cls + dist) / 2).detach().float() / temperature, dim=-1)
                out["loss_largest"] = float(loss.detach())
            else:
                ce = soft_ce(cls, target)
                kd = kd_loss(dist, teacher, temperature)
                loss = (1 - kd_weight) * ce + kd_weight * kd
                ce_sum, kd_sum = ce_sum + float(ce.detach()), kd_sum + float(kd.detach())
        optim.backward(loss)
    n_students = max(len(cfgs) - 1, 1)
    out["loss_ce"], out["loss_kd"] = ce_sum / n_students, kd_sum / n_students
    total = out["loss_largest"] + (1 - kd_weight) * out["loss_ce"] + kd_weight * out["loss_kd"]
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


def train_supernet(config: TrainConfig, run_dir: str | Path | None = None) -> Path:
    """Train (or resume) a supernet; returns the path of the best checkpoint (``best.pt``)."""
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
    if cfg.init_from and not resuming:
        model = supernet_from_pretrained(cfg.init_from, cfg.init_arch, space)
    else:
        torch.manual_seed(cfg.seed)
        model = Supernet(space)
    model.distilled_training = True
    model.to(device).train()
    arch = ArchParams(space).to(device) if cfg.gumbel else None
    alpha_opt = (torch.optim.Adam(arch.parameters(), lr=cfg.alpha_lr, betas=(0.5, 0.999),
                                  weight_decay=cfg.alpha_weight_decay) if arch is not None else None)
    if arch is not None and cfg.lut:
        arch.attach_latency(resolve_table(cfg.lut, space=space, lut_dir=cfg.lut_dir), space.max_widths)
    steps = updates_per_epoch(loaders.train, cfg)
    optim = Optim(model, cfg, updates_per_epoch=steps, device=device, extra=alpha_opt)
    targets = Targets(cfg, loaders.num_classes)
    start, step, best = 0, 0, -1.0
    if resuming:
        ck = load_supernet(run_dir / "last.pt", space=space)
        st = ck.raw.get("train_state") or {}
        model.load_state_dict(st.get("model") or ck.raw["state_dict"])
        if arch is not None and ck.arch_logits:
            arch.load_logits(ck.arch_logits)
        start, step, best = int(st["epoch"]), int(st["step"]), float(st.get("best", -1.0))
        optim.load_state_dict(st, step)
        restore_rng(st)
        say(cfg, f"resuming {run_dir} at epoch {start + 1}/{cfg.epochs} (step {step})")
    broadcast_params(model)
    if arch is not None:
        broadcast_params(arch)
    total_steps = steps * cfg.epochs
    say(cfg, f"training the {space.name!r} supernet on {loaders.source} ({len(loaders.train.dataset)} images, "
             f"{space.img_size}px) on {device}{f' x{world}' if world > 1 else ''}: {cfg.epochs} epochs x {steps} "
             f"steps, sandwich of {2 + cfg.num_random}{' + Gumbel' if arch else ''}; run directory: {run_dir}")
    for epochs_run, epoch in enumerate(range(start, cfg.epochs), start=1):
        loaders.set_epoch(epoch)
        tau = tau_at(step, total_steps, cfg.tau0, cfg.tau_min)

        def one(x, y):
            nonlocal step, tau
            tau = tau_at(step, total_steps, cfg.tau0, cfg.tau_min)
            x, t = targets(x, y)
            out = sandwich_step(model, optim, x, t, subnets_for_step(space, cfg.seed, step, cfg.num_random),
                                kd_weight=cfg.kd_weight, temperature=cfg.kd_temperature, arch=arch, tau=tau,
                                hard=cfg.gumbel_hard, lat_weight=cfg.lat_weight, step=step)
            step += 1
            return out

        means = run_epoch(loaders.train, cfg, epoch=epoch, steps=steps, step_fn=one, device=device, desc="train")
        row = {"epoch": epoch + 1, "step": step, **means, "lr": optim.lr}
        if arch is not None:
            row.update(tau=tau, alpha_entropy=arch.entropy())
        if is_main():
            ev = optim.eval_model
            recal = max(1, min(20, len(loaders.train)))
            row["top1_largest"] = _eval_subnet(ev, space.largest(), loaders, recal, cfg.eval_batches)
            row["top1_smallest"] = _eval_subnet(ev, space.smallest(), loaders, recal, cfg.eval_batches)
            record_epoch(run_dir, row, title=f"supernet {space.name} on {loaders.source}")
        rngs = rng_states_of_all_ranks()  # after the evaluation (it draws loader seeds): what the next epoch sees
        if is_main():
            improved = row["top1_largest"] > best
            best = max(best, row["top1_largest"])
            meta = {"class_names": loaders.class_names, "epoch": epoch + 1, "step": step, "data": cfg.data,
                    "top1_largest": row["top1_largest"], "top1_smallest": row["top1_smallest"], "best_top1": best,
                    "ema": cfg.ema, "config": cfg.to_dict()}
            logits = arch.logits() if arch is not None else None
            train_state = {**optim.state_dict(), "rng": rngs[0], "rng_ranks": rngs, "epoch": epoch + 1,
                           "step": step, "best": best}
            if cfg.ema:
                train_state["model"] = model.state_dict()
            to_save = optim.eval_model
            if improved:
                save_supernet(run_dir / "best.pt", to_save, arch_logits=logits, meta=meta)
            save_supernet(run_dir / "last.pt", to_save, arch_logits=logits, meta=meta, train_state=train_state)
            say(cfg, f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.3f}, lr {row['lr']:.2e}, top-1 largest "
                     f"{100 * row['top1_largest']:.1f}%, smallest {100 * row['top1_smallest']:.1f}%"
                     + (f", tau {tau:.2f}, alpha entropy {row['alpha_entropy']:.3f}" if arch else "")
                     + f", {row['images_per_s']:.0f} img/s")
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        if cfg.stop_after and epochs_run >= cfg.stop_after and epoch + 1 < cfg.epochs:
            say(cfg, f"stopping after {epochs_run} epoch(s) as asked; continue with --resume {run_dir}")
            break
    table = ("block importances (softmax of alpha per position):\n" + arch.importance_table()) if arch else ""
    if is_main():
        keys = ["top1_largest", "top1_smallest"] + (["tau", "alpha_entropy"] if arch is not None else [])
        extra = f"```\n{table}\n```" if table else ""
        write_report(run_dir, f"Supernet training: space {space.name}, data {cfg.data}", read_metrics(run_dir),
                     keys, extra)
    if table:
        say(cfg, table)
    say(cfg, f"run directory: {run_dir}")
    return run_dir / "best.pt"

