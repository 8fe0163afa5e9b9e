from __future__ import annotations

import json

import pytest
import torch

from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.supernet import EfficientFormerNet, Supernet, get_arch, get_space, save_supernet
from slimformer.train import FinetuneConfig, finetune

FAST = {"batch_size": 8, "train_size": 32, "val_size": 16, "steps_per_epoch": 2, "eval_batches": 1, "quiet": True}


@pytest.fixture
def supernet_and_arch(tmp_path):
    sp = get_space("tiny")
    torch.manual_seed(0)
    ck = save_supernet(tmp_path / "supernet.pt", Supernet(sp), meta={"class_names": ["c"] * 10})
    arch = sp.sample(5)
    (tmp_path / "arch.json").write_text(json.dumps({"arch": arch.to_dict(), "strategy": "test"}))
    return ck, tmp_path / "arch.json", arch


def test_finetune_runs_resumes_and_is_exportable(tmp_path, supernet_and_arch):
    ck, arch_json, arch = supernet_and_arch
    full = finetune(FinetuneConfig(arch=str(arch_json), supernet=str(ck), epochs=2, **FAST), tmp_path / "full")
    part = tmp_path / "part"
    finetune(FinetuneConfig(arch=str(arch_json), supernet=str(ck), epochs=2, stop_after=1, **FAST), part)
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 1
    finetune(FinetuneConfig(resume=str(part), quiet=True))
    a = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(r) for r in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        assert ra["step"] == rb["step"] and ra["lr"] == pytest.approx(rb["lr"])
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5) and ra["loss_kd"] > 0
    assert full.is_file() and (part / "curves.png").is_file()
    # what `slimformer export RUN_DIR` reads: arch.json + subnet.pt (+ metrics.json top1)
    assert get_arch(str(part / "arch.json")) == arch
    net = EfficientFormerNet(arch)
    net.load_state_dict(torch.load(part / "subnet.pt", weights_only=True))
    assert 0 <= json.loads((part / "metrics.json").read_text())["top1"] <= 1
    raw = torch.load(part / "last.pt", weights_only=True)
    assert raw["format"] == "slimformer.subnet" and raw["meta"]["origin"]["supernet"].endswith("supernet.pt")
    # a fine-tuning run dir is itself a source (subnet.pt), without a teacher unless --supernet is given
    again = finetune(FinetuneConfig(arch=str(part), epochs=1, **FAST), tmp_path / "again")
    assert "loss_kd" not in json.loads((again.parent / "metrics.jsonl").read_text().splitlines()[0])


def test_finetune_errors(tmp_path, supernet_and_arch, capsys):
    ck, arch_json, _ = supernet_and_arch
    big = get_space("tiny").largest().with_width(0, 256)
    (tmp_path / "big.json").write_text(json.dumps(big.to_dict()))
    with pytest.raises(SlimformerError, match="not a subnet"):
        finetune(FinetuneConfig(arch=str(tmp_path / "big.json"), supernet=str(ck), epochs=1, **FAST), tmp_path / "r1")
    with pytest.raises(SlimformerError, match="no weights"):
        finetune(FinetuneConfig(arch=str(arch_json), epochs=1, **FAST), tmp_path / "r2")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    rc = main(["finetune", "--arch", str(arch_json), "--supernet", str(tmp_path / "plain.pt"), "--quiet",
               "--out", str(tmp_path / "r3")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a slimformer supernet checkpoint" in err and len(err.strip().splitlines()) == 1
    rc = main(["finetune", "--resume", str(tmp_path / "nothing"), "--quiet"])
    assert rc == 2 and "no config.json" in capsys.readouterr().err
