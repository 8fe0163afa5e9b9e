"""Training and fine-tuning options (keyword-only dataclasses, saved as ``config.json`` in the run dir)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .._errors import SlimformerError


@dataclass(kw_only=True)
class _Common:
    data: str = "builtin"                 # "builtin" or an ImageFolder root with train/ and val/
    epochs: int = 10
    steps_per_epoch: int | None = None    # cap the updates per epoch (short CPU epochs); None: the whole set
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-5
    label_smoothing: float = 0.1
    clip_grad: float | None = 5.0
    ema: bool = False
    ema_decay: float = 0.999
    mixup: float = 0.0                    # Mixup alpha (0: off)
    cutmix: float = 0.0                   # CutMix alpha (0: off)
    kd_weight: float = 0.5                # share of the distillation loss for the students (0: no KD)
    kd_temperature: float = 1.0
    train_size: int | None = None         # subset sizes (builtin: images rendered; folder: random subset)
    val_size: int | None = None
    eval_batches: int | None = None       # cap validation batches per epoch
    workers: int = 0
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda
    amp: bool = True                      # mixed precision when on CUDA
    run_root: str | None = None           # parent of new run dirs (default runs/)
    resume: str | None = None             # run dir (or its last.pt) to continue
    stop_after: int | None = None         # end this invocation after N epochs (resumable), e.g. time-sliced jobs
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SlimformerError(f"unknown {cls.__name__} options in config.json: {', '.join(unknown)}")
        return cls(**d)

    def absolutize(self) -> None:
        """Make the paths among the options absolute, so that ``--resume`` works from any directory."""
        for name in ("data", "space", "lut", "lut_dir", "init_from", "init_arch", "arch", "supernet"):
            v = getattr(self, name, None)
            if isinstance(v, (str, Path)) and v != "builtin" and Path(v).expanduser().exists():
                setattr(self, name, str(Path(v).expanduser().resolve()))

    def check(self) -> None:
        f = []
        if self.epochs < 1:
            f.append("epochs must be at least 1")
        if self.batch_size < 1:
            f.append("batch size must be positive")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            f.append("steps per epoch must be at least 1")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            f.append("Mixup/CutMix needs an even batch size")
        if str(self.data) != "builtin" and not Path(self.data).expanduser().is_dir():
            f.append(f"data must be 'builtin' or an ImageFolder directory with train/ and val/; {str(self.data)!r} "
                     "is neither")
        if not 0.0 <= self.kd_weight <= 1.0:
            f.append("kd_weight must be in [0, 1]")
        if self.device not in ("auto", "cpu", "cuda"):
            f.append("device must be auto, cpu or cuda")
        if f:
            raise SlimformerError("; ".join(f))


@dataclass(kw_only=True)
class TrainConfig(_Common):
    """Options of ``slimformer train`` (the supernet)."""

    space: str = "default"                # space name or JSON file
    num_random: int = 2                   # random subnets per sandwich step (besides largest and smallest)
    gumbel: bool = False                  # learn architecture logits alpha per block position
    tau0: float = 5.0
    tau_min: float = 0.5
    gumbel_hard: bool = False
    alpha_lr: float = 5e-3
    alpha_weight_decay: float = 1e-3
    lut: str | None = None                # latency table for the expected-latency penalty
    lut_dir: str | None = None
    lat_weight: float = 0.0
    init_from: str | None = None          # local pretrained EfficientFormer weights
    init_arch: str = "l1"                 # which preset those weights are

    def check(self) -> None:
        super().check()
        if self.num_random < 0:
            raise SlimformerError("num_random must be >= 0")
        if self.gumbel and not 0 < self.tau_min <= self.tau0:
            raise SlimformerError("Gumbel temperatures need 0 < tau_min <= tau0")
        if self.lat_weight and not self.lut:
            raise SlimformerError("a latency weight needs a latency table (--lut NAME)")
        if self.lut and not self.gumbel:
            raise SlimformerError("the latency penalty acts on the Gumbel alpha: add --gumbel")


@dataclass(kw_only=True)
class FinetuneConfig(_Common):
    """Options of ``slimformer finetune`` (one extracted subnet, distilled from the supernet's largest)."""

    arch: str | None = None               # arch.json, a search/prune run dir, or a preset
    supernet: str | None = None           # supernet checkpoint (weights and teacher)
    epochs: int = 5
    lr: float = 5e-4
    warmup_epochs: float = 0.0
    teacher: bool = True                  # distil from the supernet's largest subnet

    def check(self) -> None:
        super().check()
        if not self.arch and not self.supernet:
            raise SlimformerError("fine-tuning needs --arch (arch.json or a run dir) and/or --supernet CKPT")
