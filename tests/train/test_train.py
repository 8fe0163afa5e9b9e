from __future__ import annotations

import json

import pytest
import torch

from slimformer._errors import SlimformerError
from slimformer.data import BuiltinShapes, build_loaders
from slimformer.supernet import Supernet, get_space, load_supernet, save_supernet
from slimformer.train import (
    ArchParams,
    TrainConfig,
    sandwich_step,
    subnets_for_step,
    tau_at,
    train_supernet,
)
from slimformer.train._engine import Optim, Targets

FAST = {"space": "tiny", "batch_size": 8, "train_size": 32, "val_size": 16, "steps_per_epoch": 2, "eval_batches": 1,
            "warmup_epochs": 0.5, "quiet": True}


def _batch(n=8, seed=0):
    ds = BuiltinShapes(img_size=32, length=n, seed=seed)
    xs, ys = zip(*(ds[i] for i in range(n)))
    return torch.stack(xs), torch.tensor(ys)


def _setup(tiny_space, **kw):
    torch.manual_seed(0)
    model = Supernet(tiny_space).train()
    model.distilled_training = True
    cfg = TrainConfig(space="tiny", epochs=1, warmup_epochs=0, **kw)
    return model, Optim(model, cfg, updates_per_epoch=10, device=torch.device("cpu")), Targets(cfg, 10)


def test_sandwich_step_updates_shared_weights(tiny_space):
    model, optim, targets = _setup(tiny_space)
    x, t = targets(*_batch())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfgs = subnets_for_step(tiny_space, 0, 0, 2)
    assert cfgs[0] == tiny_space.largest() and cfgs[1] == tiny_space.smallest() and len(cfgs) == 4
    assert cfgs == subnets_for_step(tiny_space, 0, 0, 2) and cfgs[2:] != subnets_for_step(tiny_space, 0, 1, 2)[2:]
    out = sandwich_step(model, optim, x, t, cfgs, kd_weight=0.5)
    after = model.state_dict()
    assert out["loss_kd"] > 0 and out["loss_ce"] > 0 and out["loss_largest"] > 0
    changed = [k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])]
    assert any(k.startswith("stem") for k in changed) and any(k.startswith("stages.3") for k in changed)
    assert any(k.startswith("head.head_dist") for k in changed)  # the distillation head learns the teacher


def test_uniform_sampling_draws_every_subnet_and_each_learns_from_the_labels(tiny_space):
    """Single-path one-shot's rule (``--sampling uniform``): as many passes as the sandwich, none of them fixed,
    no teacher; both heads of every subnet learn from the labels."""
    cfgs = subnets_for_step(tiny_space, 0, 0, 2, "uniform")
    assert len(cfgs) == 4 and cfgs == subnets_for_step(tiny_space, 0, 0, 2, "uniform")
    draws = [c for step in range(20) for c in subnets_for_step(tiny_space, 0, step, 2, "uniform")]
    assert len({c.key() for c in draws}) > 60 and tiny_space.largest() not in draws[:8]
    x, y = _batch()

    def update(cfgs, **kw):
        model, optim, targets = _setup(tiny_space)
        _, t = targets(x, y)
        return model, sandwich_step(model, optim, x, t, cfgs, **kw)

    model, out = update(cfgs, kd_weight=0.5, distil=False)
    assert out["loss_kd"] == 0 and out["loss_ce"] > 0 and out["loss"] == out["loss_largest"] + out["loss_ce"]
    same, _ = update(cfgs, kd_weight=0.0, distil=False)  # no teacher: the KD weight is unused
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    kd, _ = update(cfgs, kd_weight=0.5)  # with a teacher it would differ
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), kd.state_dict().values()))
    with pytest.raises(SlimformerError, match="sampling"):
        TrainConfig(space="tiny", sampling="random").check()
    with pytest.raises(SlimformerError, match="gumbel"):
        TrainConfig(space="tiny", sampling="uniform", gumbel=True).check()


def test_inplace_kd_is_used(tiny_space):
    """The students' distillation loss changes the update; the teacher alone is unaffected by it."""
    x, y = _batch()

    def run(kd_weight, cfgs):
        model, optim, targets = _setup(tiny_space)
        _, t = targets(x, y)
        sandwich_step(model, optim, x, t, cfgs, kd_weight=kd_weight)
        return model.stem.conv1.weight.detach().clone() if hasattr(model.stem, "conv1") else \
            next(model.parameters()).detach().clone()

    cfgs = subnets_for_step(tiny_space, 0, 0, 1)
    assert not torch.allclose(run(0.0, cfgs), run(0.5, cfgs))
    assert torch.equal(run(0.0, cfgs[:1]), run(0.5, cfgs[:1]))


class _FakeTable:
    name, space_hash = "fake", None

    def block_ms(self, block, *, stage, width, corrected=False):
        assert corrected  # the Gumbel step weighs blocks as the corrected prediction does
        return {"mb4d": 1.0 + stage, "mb3d": 3.0, "skip": 0.0}[block.kind]


def test_gumbel_alpha_and_latency(tiny_space):
    model, optim, targets = _setup(tiny_space)
    arch = ArchParams(tiny_space)
    assert set(arch.logits()) == {f"s{s}.b{p}" for s in range(4) for p in range(tiny_space.depths[s])}
    table = _FakeTable()
    table.space_hash = tiny_space.hash
    arch.attach_latency(table, tiny_space.max_widths)
    uniform = arch.expected_latency().detach()
    assert float(uniform.detach()) == pytest.approx(2 * 0.5 * 1 + 2 * 0.5 * 2 + 3 * 0.5 * 3 + 3 * (4 + 3) / 3)
    aopt = torch.optim.Adam(arch.parameters(), lr=0.05)
    cfg = TrainConfig(space="tiny", epochs=1, warmup_epochs=0)
    optim = Optim(model, cfg, updates_per_epoch=10, device=torch.device("cpu"), extra=aopt)
    x, t = targets(*_batch())
    h0 = arch.entropy()
    for step in range(3):
        out = sandwich_step(model, optim, x, t, subnets_for_step(tiny_space, 0, step, 0), kd_weight=0.5, arch=arch,
                            tau=1.0, lat_weight=1.0, step=step)
    assert "loss_gumbel" in out and out["expected_ms"] < float(uniform)
    assert arch.entropy() < h0
    pr = arch.probs()
    assert pr["s3.b0"][2] > 1 / 3  # the latency term pushes towards skip
    assert "s3.b2" in arch.importance_table()
    table.space_hash = "other"
    with pytest.raises(SlimformerError, match="another search space"):
        arch.attach_latency(table, tiny_space.max_widths)


def test_tau_schedule():
    assert tau_at(0, 100, 5.0, 0.5) == pytest.approx(5.0)
    assert tau_at(99, 100, 5.0, 0.5) == pytest.approx(0.5)
    assert tau_at(50, 101, 5.0, 0.5) == pytest.approx((5.0 * 0.5) ** 0.5)


def test_resume_continues_the_same_schedule(tmp_path):
    full = train_supernet(TrainConfig(epochs=3, gumbel=True, **FAST), tmp_path / "full")
    part = tmp_path / "part"
    train_supernet(TrainConfig(epochs=3, gumbel=True, stop_after=1, **FAST), part)
    rows = [json.loads(r) for r in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    train_supernet(TrainConfig(resume=str(part), quiet=True, stop_after=1), None)
    train_supernet(TrainConfig(resume=str(part / "last.pt"), quiet=True), None)
    a = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(r) for r in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert ra["step"] == rb["step"] and ra["lr"] == pytest.approx(rb["lr"], rel=1e-9)
        assert ra["tau"] == pytest.approx(rb["tau"]) and ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    ca, cb = load_supernet(tmp_path / "full" / "last.pt"), load_supernet(part / "last.pt")
    for k, v in ca.model.state_dict().items():
        assert torch.allclose(v, cb.model.state_dict()[k], atol=1e-6), k
    for k, v in ca.arch_logits.items():
        assert torch.allclose(v, cb.arch_logits[k], atol=1e-6)
    assert full.name == "best.pt" and full.is_file() and (part / "curves.png").is_file()
    meta = ca.meta
    assert meta["class_names"][0] == "circle" and meta["epoch"] == 3 and 0 <= meta["top1_smallest"] <= 1


def test_foreign_checkpoint_and_bad_resume(tmp_path, tiny_space):
    other = get_space("tiny").to_dict()
    other["depths"] = [1, 1, 2, 2]
    (tmp_path / "other.json").write_text(json.dumps({**other, "name": "other"}))
    run = tmp_path / "run"
    train_supernet(TrainConfig(epochs=1, **FAST), run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "space": str(tmp_path / "other.json"), "epochs": 2}))
    with pytest.raises(SlimformerError, match="trained on search space 'tiny'"):
        train_supernet(TrainConfig(resume=str(run), quiet=True))
    with pytest.raises(SlimformerError, match="no config.json"):
        train_supernet(TrainConfig(resume=str(tmp_path), quiet=True))
    with pytest.raises(SlimformerError, match="ImageFolder"):
        train_supernet(TrainConfig(epochs=1, **{**FAST, "data": str(tmp_path / "missing")}), tmp_path / "x")
    with pytest.raises(SlimformerError, match="--gumbel"):
        train_supernet(TrainConfig(epochs=1, lut="iphone-lut", **FAST), tmp_path / "y")


def test_build_loaders_drop_in_for_search(tiny_space):
    """What search/pruning/export call: fixed-size subsets, the class list, and iteration."""
    ld = build_loaders("builtin", img_size=tiny_space.img_size, batch_size=4, workers=0, seed=0, train_size=8,
                       val_size=4)
    assert isinstance(ld.class_names, list) and ld.num_classes == tiny_space.num_classes
    assert len(list(ld.train)) == 2 and len(list(ld.val)) == 1


def test_checkpoint_weights_only(tmp_path):
    train_supernet(TrainConfig(epochs=1, gumbel=True, ema=True, mixup=0.8, cutmix=1.0, **FAST), tmp_path)
    raw = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    st = raw["train_state"]
    assert {"optimizer", "scheduler", "alpha_optimizer", "ema", "scaler", "rng", "epoch", "step", "model"} <= set(st)
    assert raw["arch_logits"] and raw["meta"]["ema"] is True
    ck = load_supernet(tmp_path / "best.pt")
    assert isinstance(ck.model, Supernet)
    save_supernet(tmp_path / "x.pt", ck.model)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from slimformer.cli import main

    rc = main(["train", "--space", "tiny", "--data", str(tmp_path / "none"), "--quiet", "--runs-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "ImageFolder" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "--space", "tiny", "--lat-weight", "1", "--quiet", "--runs-root", str(tmp_path)])
    assert rc == 2 and "--lut" in capsys.readouterr().err


def test_init_from_pretrained_file(tmp_path, tiny_space):
    """--init-from: the supernet starts from a local EfficientFormer-layout file (here the tiny largest arch)."""
    from slimformer.supernet import EfficientFormerNet

    arch = tiny_space.largest()
    (tmp_path / "arch.json").write_text(json.dumps(arch.to_dict()))
    torch.manual_seed(3)
    net = EfficientFormerNet(arch)
    torch.save(net.state_dict(), tmp_path / "pre.pth")
    tiny_lr = {"lr": 1e-12, "warmup_lr": 1e-12, "min_lr": 1e-12, "weight_decay": 0.0}
    train_supernet(TrainConfig(epochs=1, init_from=str(tmp_path / "pre.pth"), init_arch=str(tmp_path / "arch.json"),
                               **{**FAST, "steps_per_epoch": 1}, **tiny_lr), tmp_path / "run")
    got = load_supernet(tmp_path / "run" / "last.pt").model.extract_subnet(arch).state_dict()
    for k, v in net.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(got[k], v, atol=1e-6), k
    with pytest.raises(SlimformerError, match="not found"):
        train_supernet(TrainConfig(epochs=1, init_from=str(tmp_path / "nope.pth"), **FAST), tmp_path / "r2")


def test_image_folder_training_and_class_mismatch(tmp_path):
    from tests.data.test_data import _folder

    names = [f"c{i}" for i in range(10)]
    _folder(tmp_path / "ten", "train", names, n=2, size=36)
    _folder(tmp_path / "ten", "val", names, n=1, size=36)
    train_supernet(TrainConfig(epochs=1, **{**FAST, "data": str(tmp_path / "ten"), "train_size": None}), tmp_path / "r")
    assert load_supernet(tmp_path / "r" / "best.pt").meta["class_names"] == names
    _folder(tmp_path / "two", "train", ["a", "b"])
    _folder(tmp_path / "two", "val", ["a", "b"])
    with pytest.raises(SlimformerError, match="has 2 classes"):
        train_supernet(TrainConfig(epochs=1, **{**FAST, "data": str(tmp_path / "two")}), tmp_path / "r2")


def test_latency_penalty_with_a_real_table(tmp_path, tiny_space):
    """--lut NAME: a LatencyTable of the space (synthetic ms per op) found by name in --lut-dir."""
    from slimformer.latency_lut import LatencyTable, space_ops

    entries = {k: (2.0 if k.startswith("mb3d") else 0.5 if k.startswith("mb4d") else 0.05)
               for k in space_ops(tiny_space)}
    table = LatencyTable.from_entries(entries, name="tiny-test", kind="estimated", device="test", backend="none",
                                      space=tiny_space)
    table.save(tmp_path / "luts" / "tiny-test.json")
    run = tmp_path / "run"
    train_supernet(TrainConfig(epochs=1, gumbel=True, lut="tiny-test", lut_dir=str(tmp_path / "luts"), lat_weight=1.0,
                               alpha_lr=0.05, **FAST), run)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["expected_ms"] > 0
    logits = load_supernet(run / "last.pt").arch_logits
    assert float(logits["s3.b0"][1]) < 0 < float(logits["s3.b0"][2])  # costly mb3d down, free skip up
    with pytest.raises(SlimformerError, match="another search space"):
        train_supernet(TrainConfig(epochs=1, gumbel=True, lut="iphone-lut", lat_weight=0.1, **FAST), tmp_path / "x")


def test_training_stops_at_the_first_non_finite_loss(tmp_path):
    """A diverging run (absurd learning rate, no clipping) stops with one line and writes no checkpoint."""
    cfg = TrainConfig(epochs=2, lr=1e30, clip_grad=None, **{**FAST, "warmup_epochs": 0, "steps_per_epoch": 4})
    with pytest.raises(SlimformerError, match=r"training stopped at epoch 1, step \d: the loss is nan"):
        train_supernet(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "last.pt").exists()


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path, tiny_space):
    net = Supernet(tiny_space)
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(SlimformerError, match="non-finite"):
        save_supernet(tmp_path / "best.pt", net)
    assert not (tmp_path / "best.pt").exists()
    raw = {"format": "slimformer.supernet", "version": 1, "space": tiny_space.to_dict(), "space_hash": tiny_space.hash,
           "state_dict": net.state_dict(), "arch_logits": None, "meta": {}}
    torch.save(raw, tmp_path / "nan.pt")
    with pytest.raises(SlimformerError, match="non-finite"):
        load_supernet(tmp_path / "nan.pt")
    torch.save({**raw, "state_dict": "a string"}, tmp_path / "str.pt")
    with pytest.raises(SlimformerError, match="not a dict of tensors"):
        load_supernet(tmp_path / "str.pt")


@pytest.mark.parametrize("edit, message", [
    ({"lr": float("nan")}, "--lr must be a finite number"), ({"kd_temperature": 0.0}, "--kd-temperature must be positive"),
    ({"train_size": 0}, "--train-size must be at least 1"), ({"workers": -1}, "--workers must be at least 0"),
    ({"epochs": "3"}, "--epochs must be a whole number"),
])
def test_a_resumed_config_json_is_checked_like_the_cli(tmp_path, edit, message):
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(epochs=1, **FAST).to_dict()
    (run / "config.json").write_text(json.dumps({**cfg, **edit}))  # json writes NaN as the NaN literal
    with pytest.raises(SlimformerError, match=message):
        train_supernet(TrainConfig(resume=str(run), quiet=True))
