"""``slimformer train`` (the supernet) and ``slimformer finetune`` (one subnet): parse and call slimformer.train."""
from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

from .._validate import FRACTION, NONNEG_FLOAT, NONNEG_INT, POSITIVE_FLOAT, POSITIVE_INT, SEED
from ._options import add_json, add_quiet, add_run_folder, add_table, add_torch_device, print_json


def _common(p: argparse.ArgumentParser, defaults) -> None:
    d = {f.name: f.default for f in fields(defaults)}
    p.add_argument("--data", default="builtin",
                   help="'builtin' (procedural 10-class toy images, no download) or an ImageFolder root with "
                        "train/ and val/")
    p.add_argument("--epochs", type=POSITIVE_INT, default=d["epochs"], help="training epochs")
    p.add_argument("--steps-per-epoch", type=POSITIVE_INT, default=None, help="cap updates per epoch (short CPU epochs)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=d["batch_size"], help="images per batch (per process)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=d["lr"], help="peak AdamW learning rate (cosine, warm-up)")
    p.add_argument("--min-lr", type=NONNEG_FLOAT, default=d["min_lr"], help="final learning rate of the cosine schedule")
    p.add_argument("--weight-decay", type=NONNEG_FLOAT, default=d["weight_decay"], help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=NONNEG_FLOAT, default=d["warmup_epochs"], help="epochs of linear learning-rate warm-up")
    p.add_argument("--label-smoothing", type=FRACTION, default=d["label_smoothing"], help="label smoothing of the cross-entropy")
    p.add_argument("--clip-grad", type=NONNEG_FLOAT, default=d["clip_grad"], help="max gradient norm (0: off)")
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights (timm ModelEmaV3); "
                                                      "evaluated and saved instead of the raw weights")
    p.add_argument("--ema-decay", type=FRACTION, default=d["ema_decay"], help="decay of the weight EMA (with --ema)")
    p.add_argument("--mixup", type=NONNEG_FLOAT, default=0.0, help="Mixup alpha (0: off)")
    p.add_argument("--cutmix", type=NONNEG_FLOAT, default=0.0, help="CutMix alpha (0: off)")
    p.add_argument("--kd-weight", type=FRACTION, default=d["kd_weight"],
                   help="weight of the distillation loss against the label loss for the students (0: no KD)")
    p.add_argument("--kd-temperature", type=POSITIVE_FLOAT, default=d["kd_temperature"], help="softmax temperature of the distillation loss")
    p.add_argument("--train-size", type=POSITIVE_INT, default=None, help="training images (builtin: how many to render)")
    p.add_argument("--val-size", type=POSITIVE_INT, default=None, help="validation images (builtin: how many to render)")
    p.add_argument("--eval-batches", type=POSITIVE_INT, default=None, help="cap validation batches per epoch")
    p.add_argument("--workers", type=NONNEG_INT, default=0, help="data loader worker processes")
    p.add_argument("--seed", type=SEED, default=0, help="random seed")
    add_torch_device(p)
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    add_run_folder(p, "run", help="exactly the run folder to write into (created if missing)")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run in this directory with its saved options")
    p.add_argument("--stop-after", type=POSITIVE_INT, default=None, help="stop this invocation after N epochs (resumable)")
    add_quiet(p)
    add_json(p)


def register(sub) -> None:
    from ..train import FinetuneConfig, TrainConfig

    p = sub.add_parser("train", help="train the supernet once (sandwich rule, in-place KD, optional Gumbel alpha)",
                       description="Train a weight-sharing supernet: every step the largest, the smallest and N "
                                   "random subnets; the largest teaches the others. Multi-GPU: torchrun "
                                   "--nproc-per-node N -m slimformer train ...")
    p.add_argument("--space", default="default", help="search space (default, tiny) or a space JSON file")
    _common(p, TrainConfig)
    p.add_argument("--num-random", type=NONNEG_INT, default=2, help="random subnets per step besides largest/smallest")
    p.add_argument("--sampling", choices=("sandwich", "uniform"), default="sandwich",
                   help="subnets per step: the sandwich rule with in-place KD (default), or 2 + --num-random random "
                        "subnets from the labels alone (single-path one-shot)")
    p.add_argument("--gumbel", action="store_true", help="learn per-position architecture logits (Gumbel-softmax)")
    p.add_argument("--tau0", type=POSITIVE_FLOAT, default=5.0, help="initial Gumbel temperature")
    p.add_argument("--tau-min", type=POSITIVE_FLOAT, default=0.5, help="final Gumbel temperature")
    p.add_argument("--gumbel-hard", action="store_true", help="straight-through one-hot Gumbel samples")
    p.add_argument("--alpha-lr", type=NONNEG_FLOAT, default=TrainConfig.alpha_lr, help="learning rate of the architecture logits (with --gumbel)")
    add_table(p, device_alias="--lut", help="latency table for the expected-latency penalty (with --gumbel)")
    p.add_argument("--lut-dir", default=None, help="folder of user latency tables")
    p.add_argument("--lat-weight", type=NONNEG_FLOAT, default=0.0, help="weight of the expected latency (per ms)")
    p.add_argument("--init-from", default=None, help="local pretrained EfficientFormer weights to start from")
    p.add_argument("--init-arch", default="l1", help="which preset --init-from holds (l1, l3, l7; m0..m5 for --space efficientvit)")
    p.set_defaults(func=_train)

    p = sub.add_parser("finetune", help="fine-tune an extracted subnet with KD from the supernet's largest",
                       description="Train one subnet (a search result) on the data, distilled from the supernet's "
                                   "largest subnet. The run dir can be exported with `slimformer export RUN`.")
    p.add_argument("--arch", default=None, help="arch.json, a search/prune run dir (with subnet.pt), or a preset")
    p.add_argument("--supernet", default=None, help="supernet checkpoint: initial weights and the teacher")
    _common(p, FinetuneConfig)
    p.add_argument("--no-teacher", dest="teacher", action="store_false", help="labels only, no distillation")
    p.set_defaults(func=_finetune)


def _options(args, cls) -> dict:
    names = {f.name for f in fields(cls)}
    out = {k: v for k, v in vars(args).items() if k in names}
    out["device"] = args.torch_device
    if "lut" in names:
        out["lut"] = args.table
    out["run_root"] = args.runs_root
    if out.get("clip_grad") == 0:
        out["clip_grad"] = None
    return out


def _train(args) -> int:
    from ..train import TrainConfig, train_supernet

    path = train_supernet(TrainConfig(**_options(args, TrainConfig)), args.out)
    _done(args, path)
    return 0


def _finetune(args) -> int:
    from ..train import FinetuneConfig, finetune

    path = finetune(FinetuneConfig(**_options(args, FinetuneConfig)), args.out)
    _done(args, path)
    return 0


def _done(args, path) -> None:
    if os.environ.get("RANK", "0") != "0":
        return
    if args.json:
        print_json({"checkpoint": str(path), "run_dir": str(Path(path).parent)})
    else:
        print(f"checkpoint: {path}")
