"""``slimformer finetune``: train one extracted subnet on the data, distilled from the supernet's largest.

The student starts from its supernet slices (``--supernet``) or a search run's ``subnet.pt``; the teacher
is the supernet's largest subnet (frozen, BatchNorm recalibrated). A student with a distillation head
learns the labels with its classifier and the teacher with its distillation head (``kd_weight`` balances
them), as DeiT / EfficientFormer do. The run dir has the training layout (config.json, metrics.jsonl,
curves.png, last.pt, best.pt) plus what ``slimformer export RUN_DIR`` reads: ``arch.json``, ``subnet.pt``
(best weights) and ``metrics.json`` (``top1``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._errors import SlimformerError
from .._io import atomic_torch_save, atomic_write_json
from .._validate import finite_tensors
from ..data import build_loaders, evaluate
from ..supernet import ArchConfig, arch_from_dict, build_model, load_supernet, read_arch, recalibrate_bn
from ..supernet._timm import read_state_dict
from ._config import FinetuneConfig
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

FORMAT = "slimformer.subnet"
VERSION = 1


def _arch_source(arch: str | None) -> tuple[ArchConfig | None, dict[str, Any], Path | None]:
    """(config, arch.json contents, run dir) of ``--arch``: an arch JSON, a run dir holding one, or a preset."""
    return read_arch(arch) if arch else (None, {}, None)


def _student_and_teacher(cfg: FinetuneConfig, loaders, device):
    arch, info, src_dir = _arch_source(cfg.arch)
    supernet = cfg.supernet or (info.get("supernet") if isinstance(info.get("supernet"), str)
                                and Path(info["supernet"]).is_file() else None)
    ck = load_supernet(supernet) if supernet else None
    if ck is not None:
        arch = arch or ck.space.largest()
        faults = ck.space.check(arch)
        if faults:
            raise SlimformerError(f"{cfg.arch} is not a subnet of the supernet's space {ck.space.name!r}: {faults[0]}")
    if arch.num_classes != loaders.num_classes:
        raise SlimformerError(f"the data has {loaders.num_classes} classes but the subnet classifies {arch.num_classes}")
    recal = list(itertools.islice(iter(loaders.train), min(20, len(loaders.train))))
    if ck is not None and not (src_dir is not None and (src_dir / "subnet.pt").is_file() and not cfg.supernet):
        student = ck.model.extract_subnet(arch)
        recalibrate_bn(student, recal)
        origin = {"supernet": str(ck.path)}
    elif src_dir is not None and (src_dir / "subnet.pt").is_file():
        student = build_model(arch)
        sd = read_state_dict(src_dir / "subnet.pt")
        sd = sd.get("state_dict", sd) if isinstance(sd.get("state_dict"), dict) else sd
        try:
            student.load_state_dict(sd)
        except RuntimeError:
            raise SlimformerError(f"{src_dir / 'subnet.pt'} does not fit the architecture in its arch.json") from None
        origin = {"weights": str(src_dir / "subnet.pt")}
    else:
        raise SlimformerError("no weights to fine-tune: give --supernet CKPT (or a run dir holding subnet.pt)")
    teacher = None
    if cfg.teacher and cfg.kd_weight > 0 and ck is not None:
        teacher = ck.model.extract_subnet(ck.space.largest())
        recalibrate_bn(teacher, recal)
        teacher.to(device).eval().requires_grad_(False)
        origin["teacher"] = f"largest subnet of {ck.path}"
    return student, teacher, info, origin


def finetune_step(student, teacher, optim: Optim, x, target, *, kd_weight: float, temperature: float = 1.0,
                  step: int = 0) -> dict[str, float]:
    optim.zero_grad()
    with optim.autocast():
        cls, dist = heads(student(x))
        ce = soft_ce(cls, target)
        if teacher is not None:
            with torch.no_grad():
                t_cls, t_dist = heads(teacher(x))
                probs = torch.softmax(((t_cls + t_dist) / 2).float() / temperature, dim=-1)
            kd = kd_loss(dist, probs, temperature)
            loss = (1 - kd_weight) * ce + kd_weight * kd
        else:
            kd = None
            loss = 0.5 * (ce + soft_ce(dist, target))
    optim.backward(loss)
    optim.step(step + 1)
    out = {"loss": float(loss.detach()), "loss_ce": float(ce.detach())}
    if kd is not None:
        out["loss_kd"] = float(kd.detach())
    return out


def _save(path: Path, net, meta: dict, **extra) -> Path:
    state = net.state_dict()
    finite_tensors(state, f"the model to save as {path.name}")  # a diverged model is never written
    return atomic_torch_save(path, {"format": FORMAT, "version": VERSION, "arch": net.arch.to_dict(),
                                    "state_dict": state, "meta": meta, **extra})


def _load_last(path: Path, arch: ArchConfig) -> dict:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a torn or foreign file
        raise SlimformerError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise SlimformerError(f"{path} is not a slimformer fine-tuning checkpoint")
    if arch_from_dict(raw["arch"]) != arch:
        raise SlimformerError(f"{path} holds another architecture than this run's")
    return raw


@dataclass
class _FinetuneRun:
    """A fine-tuning run in progress: what it trains with and where it stands."""
    cfg: FinetuneConfig
    run_dir: Path
    device: torch.device
    loaders: Any
    student: Any
    teacher: Any
    info: dict[str, Any]  # the arch.json the student came from
    origin: dict[str, Any]  # where its weights (and the teacher) came from
    optim: Optim
    targets: Targets
    steps: int  # updates per epoch
    start: int = 0
    step: int = 0
    best: float = -1.0
    before: float | None = None  # top-1 before fine-tuning

    def resume(self) -> None:
        """Continue from ``last.pt``: weights, optimiser, counters and random state."""
        raw = _load_last(self.run_dir / "last.pt", self.student.arch)
        st = raw["train_state"]
        self.student.load_state_dict(st.get("model") or raw["state_dict"])
        self.start, self.step, self.best = int(st["epoch"]), int(st["step"]), float(st["best"])
        self.before = st.get("top1_before")
        self.optim.load_state_dict(st, self.step)
        restore_rng(st)
        say(self.cfg, f"resuming {self.run_dir} at epoch {self.start + 1}/{self.cfg.epochs} (step {self.step})")

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of updates (and, on the main rank, its evaluation and metrics row)."""
        cfg = self.cfg
        self.loaders.set_epoch(epoch)

        def one(x, y):
            x, t = self.targets(x, y)
            out = finetune_step(self.student, self.teacher, self.optim, x, t, kd_weight=cfg.kd_weight,
                                temperature=cfg.kd_temperature, step=self.step)
            self.step += 1
            return out

        means = run_epoch(self.loaders.train, cfg, epoch=epoch, steps=self.steps, step_fn=one, device=self.device,
                          desc="finetune")
        row = {"epoch": epoch + 1, "step": self.step, **means, "lr": self.optim.lr}
        if is_main():
            row["top1"] = evaluate(self.optim.eval_model, self.loaders.val, max_batches=cfg.eval_batches)
            record_epoch(self.run_dir, row, title=f"fine-tuning {self.student.arch.summary()}")
        return row

    def save_epoch(self, epoch: int, row: dict[str, Any], rngs: list) -> None:
        """Main rank: ``last.pt`` after every epoch; ``best.pt``, ``subnet.pt``, ``arch.json`` and
        ``metrics.json`` when top-1 improved."""
        cfg, run_dir, before = self.cfg, self.run_dir, self.before
        improved = row["top1"] > self.best
        self.best = best = max(self.best, row["top1"])
        ev = self.optim.eval_model
        meta = {"class_names": self.loaders.class_names, "epoch": epoch + 1, "top1": row["top1"], "best_top1": best,
                "top1_before": before, "origin": self.origin, "data": cfg.data, "config": cfg.to_dict()}
        st = {**self.optim.state_dict(), "rng": rngs[0], "rng_ranks": rngs, "epoch": epoch + 1, "step": self.step,
              "best": best, "top1_before": before}
        if cfg.ema:
            st["model"] = self.student.state_dict()
        if improved:
            _save(run_dir / "best.pt", ev, meta)
            atomic_torch_save(run_dir / "subnet.pt", ev.state_dict())
            atomic_write_json(run_dir / "arch.json", {**self.info, "arch": ev.arch.to_dict(), "top1": best,
                                                      "class_names": self.loaders.class_names,
                                                      "finetuned": {"epoch": epoch + 1, **self.origin}})
            atomic_write_json(run_dir / "metrics.json", {"top1": best, "top1_before": before,
                                                         "epoch": epoch + 1, "data": cfg.data})
        _save(run_dir / "last.pt", ev, meta, train_state=st)
        say(cfg, f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.3f}, lr {row['lr']:.2e}, top-1 "
                 f"{100 * row['top1']:.1f}% (before fine-tuning {100 * (before or 0):.1f}%), "
                 f"{row['images_per_s']:.0f} img/s")

    def report(self) -> None:
        write_report(self.run_dir, f"Fine-tuning {self.student.arch.summary()} on {self.cfg.data}",
                     read_metrics(self.run_dir), ["top1"],
                     f"Top-1 before fine-tuning (inherited weights, BN recalibrated): "
                     f"{100 * (self.before or 0):.1f}%; best after: {100 * max(self.best, 0):.1f}%. Teacher: "
                     f"{self.origin.get('teacher', 'none')}.")


def _prepare(config: FinetuneConfig, run_dir: str | Path | None) -> tuple[_FinetuneRun, bool]:
    """Open the run (new or resumed) and build its data, student, teacher and optimiser; and whether it resumes."""
    rank, world = init_distributed(config.device)
    cfg, run_dir, resuming = open_run(config, run_dir, "finetune", FinetuneConfig)
    device = pick_device(cfg.device)
    seed_all(cfg.seed + rank)
    probe = _arch_source(cfg.arch)[0]
    img = probe.img_size if probe is not None else load_supernet(cfg.supernet).space.img_size
    loaders = build_loaders(cfg.data, img_size=img, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
                            train_size=cfg.train_size, val_size=cfg.val_size, distributed=world > 1,
                            pin_memory=device.type == "cuda")
    student, teacher, info, origin = _student_and_teacher(cfg, loaders, device)
    student.set_distilled_training(True)
    student.to(device).train()
    steps = updates_per_epoch(loaders.train, cfg)
    optim = Optim(student, cfg, updates_per_epoch=steps, device=device)
    run = _FinetuneRun(cfg, run_dir, device, loaders, student, teacher, info, origin, optim,
                       Targets(cfg, loaders.num_classes), steps)
    return run, resuming


def finetune(config: FinetuneConfig, run_dir: str | Path | None = None) -> Path:
    """Fine-tune (or resume) one subnet; returns the path of ``best.pt``."""
    run, resuming = _prepare(config, run_dir)
    cfg, run_dir = run.cfg, run.run_dir
    if resuming:
        run.resume()
    elif is_main():
        run.before = evaluate(run.student, run.loaders.val, max_batches=cfg.eval_batches)
    broadcast_params(run.student)
    say(cfg, f"fine-tuning {run.student.arch.summary()} on {run.loaders.source} on {run.device}"
             f"{' with KD from the largest subnet' if run.teacher is not None else ''}; run directory: {run_dir}")
    for epoch in range(run.start, cfg.epochs):
        row = run.train_epoch(epoch)
        rngs = rng_states_of_all_ranks()  # after the evaluation (it draws loader seeds): what the next epoch sees
        if is_main():
            run.save_epoch(epoch, row, rngs)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        if cfg.stop_after and epoch + 1 - run.start >= cfg.stop_after and epoch + 1 < cfg.epochs:
            say(cfg, f"stopping after {cfg.stop_after} epoch(s) as asked; continue with --resume {run_dir}")
            break
    if is_main():
        run.report()
    say(cfg, f"run directory: {run_dir}")
    return run_dir / "best.pt"
