"""Supernet training (sandwich rule, in-place distillation) on the EfficientViT family."""
from __future__ import annotations

import torch

from slimformer.data import BuiltinShapes
from slimformer.supernet import get_space, load_supernet
from slimformer.supernet.efficientvit import EfficientViTSupernet
from slimformer.train import TrainConfig, sandwich_step, subnets_for_step, train_supernet
from slimformer.train._engine import Optim, Targets

FAST = {"space": "efficientvit-tiny", "batch_size": 8, "train_size": 32, "val_size": 16, "steps_per_epoch": 2,
        "eval_batches": 1, "warmup_epochs": 0.5, "quiet": True}


def test_sandwich_step_trains_the_shared_weights_with_distillation():
    space = get_space("efficientvit-tiny")
    torch.manual_seed(0)
    model = EfficientViTSupernet(space).train()
    model.distilled_training = True
    cfg = TrainConfig(space=space.name, epochs=1, warmup_epochs=0)
    optim, targets = Optim(model, cfg, updates_per_epoch=10, device=torch.device("cpu")), Targets(cfg, 10)
    ds = BuiltinShapes(img_size=space.img_size, length=8, seed=0)
    xs, ys = zip(*(ds[i] for i in range(8)))
    x, t = targets(torch.stack(xs), torch.tensor(ys))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfgs = subnets_for_step(space, 0, 0, 2)
    out = sandwich_step(model, optim, x, t, cfgs, kd_weight=0.5)
    assert out["loss_kd"] > 0 and out["loss_ce"] > 0 and out["loss_largest"] > 0
    after = model.state_dict()
    changed = {k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])}
    assert any("qkvs" in k for k in changed) and any("patch_embed" in k for k in changed)


def test_train_writes_a_checkpoint_that_loads_as_an_efficientvit_supernet(tmp_path):
    best = train_supernet(TrainConfig(epochs=1, **FAST), tmp_path / "run")
    ck = load_supernet(best)
    assert isinstance(ck.model, EfficientViTSupernet) and ck.space == get_space("efficientvit-tiny")
    assert 0.0 <= ck.meta["top1_largest"] <= 1.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert ck.model.set_active(ck.space.smallest())(x).shape == (2, 10)


def test_finetune_an_efficientvit_subnet_with_kd(tmp_path):
    from slimformer.supernet import save_supernet
    from slimformer.train import FinetuneConfig, finetune

    space = get_space("efficientvit-tiny")
    torch.manual_seed(0)
    ck = save_supernet(tmp_path / "sup.pt", EfficientViTSupernet(space))
    arch = tmp_path / "arch.json"
    arch.write_text(space.sample(3).to_json())
    best = finetune(FinetuneConfig(arch=str(arch), supernet=str(ck), epochs=1, batch_size=8, train_size=32,
                                   val_size=16, steps_per_epoch=2, eval_batches=1, quiet=True), tmp_path / "ft")
    assert best.is_file()
