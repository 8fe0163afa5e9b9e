"""Training and fine-tuning options (keyword-only dataclasses, saved as ``config.json`` in the run dir)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._validate import check_float, check_int

# (option, check, bounds): every number of a training config, checked the same from the CLI and from a
# resumed run's config.json (whose JSON may hold NaN). ``None`` is allowed where the option is optional.
_NUMBERS = (
    ("epochs", check_int, {"lo": 1}), ("steps_per_epoch", check_int, {"lo": 1}), ("batch_size", check_int, {"lo": 1}),
    ("lr", check_float, {"lo": 0, "lo_open": True}), ("min_lr", check_float, {"lo": 0}),
    ("weight_decay", check_float, {"lo": 0}), ("warmup_epochs", check_float, {"lo": 0}),
    ("warmup_lr", check_float, {"lo": 0}), ("label_smoothing", check_float, {"lo": 0, "hi": 0.99}),
    ("clip_grad", check_float, {"lo": 0}), ("ema_decay", check_float, {"lo": 0, "hi": 1}),
    ("mixup", check_float, {"lo": 0}), ("cutmix", check_float, {"lo": 0}), ("kd_weight", check_float, {"lo": 0, "hi": 1}),
    ("kd_temperature", check_float, {"lo": 0, "lo_open": True}), ("train_size", check_int, {"lo": 1}),
    ("val_size", check_int, {"lo": 1}), ("eval_batches", check_int, {"lo": 1}), ("workers", check_int, {"lo": 0}),
    ("seed", check_int, {"lo": 0}), ("stop_after", check_int, {"lo": 1}),
    # supernet training
    ("num_random", check_int, {"lo": 0, "hi": 64}), ("tau0", check_float, {"lo": 0, "lo_open": True}),
    ("tau_min", check_float, {"lo": 0, "lo_open": True}), ("alpha_lr", check_float, {"lo": 0}),
    ("alpha_weight_decay", check_float, {"lo": 0}), ("lat_weight", check_float, {"lo": 0}),
)


def number_faults(cfg) -> list[str]:
    """One sentence per option of ``cfg`` that is not a finite number in its range."""
    f = []
    for name, check, bounds in _NUMBERS:
        v = getattr(cfg, name, None)
        if v is None:
            continue
        try:
            check(v, "--" + name.replace("_", "-"), **bounds)
        except SlimformerError as e:
            f.append(str(e))
    return f


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
        f = number_faults(self)
        if f:  # the other checks compare these numbers
            raise SlimformerError("; ".join(f))
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            f.append("Mixup/CutMix needs an even batch size")
        if str(self.data) != "builtin" and not Path(self.data).expanduser().is_dir():
            f.append(f"data must be 'builtin' or an ImageFolder directory with train/ and val/; {str(self.data)!r} "
                     "is neither")
        if self.device not in ("auto", "cpu", "cuda"):
            f.append("device must be auto, cpu or cuda")
        if f:
            raise SlimformerError("; ".join(f))


@dataclass(kw_only=True)
class TrainConfig(_Common):
    """Options of ``slimformer train`` (the supernet)."""

    space: str = "default"                # space name or JSON file
    num_random: int = 2                   # random subnets per sandwich step (besides largest and smallest)
    sampling: str = "sandwich"            # or "uniform": 2 + num_random random subnets, no teacher (SPOS)
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
        if self.sampling not in ("sandwich", "uniform"):
            raise SlimformerError(f"--sampling must be sandwich or uniform, got {self.sampling!r}")
        if self.sampling == "uniform" and self.gumbel:
            raise SlimformerError("--gumbel trains alpha on the largest subnet, which --sampling uniform does not "
                                  "fix: use the sandwich rule")
        if self.gumbel and not 0 < self.tau_min <= self.tau0:
            raise SlimformerError("Gumbel temperatures need 0 < tau_min <= tau0")
        if self.lat_weight and not self.lut:
            raise SlimformerError("a latency weight needs a latency table (--table NAME, formerly --lut)")
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
