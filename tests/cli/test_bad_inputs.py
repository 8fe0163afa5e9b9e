"""A hostile new user: a table of bad inputs across every command.

Each must end with a non-zero exit, no traceback, exactly one line on stderr, and nothing written (no
file in the working folder, the input folder or the cache). Most run in-process (``main(argv)``, fast);
a few run as real subprocesses (pipes, DataLoader workers, a second table builder).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimformer.cli import main

NAN_ARCH = "nan_arch.json"


def _arch(**edit) -> dict:
    from slimformer.supernet import get_arch

    d = get_arch("l1").to_dict()
    for path, value in edit.items():
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return d


def _checkpoint(state) -> dict:
    from slimformer.supernet import get_space

    sp = get_space("tiny")
    return {"format": "slimformer.supernet", "version": 1, "space": sp.to_dict(), "space_hash": sp.hash,
            "state_dict": state, "arch_logits": None, "meta": {}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad input files, made once; the tests check that none of them changes."""
    from PIL import Image

    from slimformer.supernet import Supernet, get_space

    d = tmp_path_factory.mktemp("inputs")
    (d / "text.txt").write_text("hello, not what you think\n")
    (d / "bad.json").write_text("{not json")
    (d / NAN_ARCH).write_text(json.dumps(_arch(**{"stages.0.blocks.0.mlp_ratio": math.nan})))  # NaN literal
    (d / "str_widths.json").write_text(json.dumps(_arch(**{"stages.0.width": "a", "stages.1.width": "b"})))
    (d / "huge_width.json").write_text(json.dumps(_arch(**{"stages.3.width": 100_000})))
    (d / "img100k.json").write_text(json.dumps(_arch(img_size=100_000)))
    (d / "neg_width.json").write_text(json.dumps(_arch(**{"stages.1.width": -96})))
    (d / "float_heads.json").write_text(json.dumps(_arch(**{"stages.3.blocks.3.heads": 7.5})))
    (d / "inf_ratio.json").write_text(json.dumps(_arch(**{"stages.2.blocks.0.mlp_ratio": math.inf})))
    (d / "many_blocks.json").write_text(json.dumps(_arch(**{"stages.0.blocks": [{"kind": "mb4d"}] * 500})))
    tiny = get_space("tiny").to_dict()
    (d / "space_nan.json").write_text(json.dumps({**tiny, "mlp_ratios": [1.0, math.nan]}))
    (d / "space_strs.json").write_text(json.dumps({**tiny, "stage_widths": [["a", "b"], [32], [48], [64]]}))
    (d / "space_img.json").write_text(json.dumps({**tiny, "img_size": 100_000}))
    (d / "space_depth.json").write_text(json.dumps({**tiny, "depths": [2, 2, 3, 10_000]}))
    (d / "space_step0.json").write_text(json.dumps({**tiny, "width_step": 0}))
    (d / "space_bool.json").write_text(json.dumps({**tiny, "heads": [True, 2]}))
    (d / "fake.onnx").write_text("this is a text file named .onnx\n")
    (d / "fake.pt").write_text("not a checkpoint\n")
    (d / "names3.txt").write_text("cat\ndog\nbird\n")
    torch.save(_checkpoint("a string, not a state dict"), d / "str_state.pt")
    net = Supernet(get_space("tiny"))
    sd = net.state_dict()
    next(v for v in sd.values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(_checkpoint(sd), d / "nan_ckpt.pt")
    (d / "f").write_text("an existing file\n")
    (d / "user").mkdir()
    (d / "user" / "arch.json").write_text('{"mine": true}\n')
    (d / "user" / "report.md").write_text("my notes\n")
    for split in ("train", "val"):  # an ImageFolder with one unreadable image
        for c in ("a", "b"):
            (d / "imgs" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), (40 * i, 90, 200)).save(d / "imgs" / split / c / f"{i}.png")
    (d / "imgs" / "train" / "a" / "broken.png").write_bytes(b"not a png")
    (d / "space2.json").write_text(json.dumps({**tiny, "num_classes": 2}))
    return d


# argv with {in} for the input folder. Grouped by command; every command of the CLI appears.
CASES = [
    # space / arch
    "space show --space nope",
    "space show --space {in}/bad.json",
    "space show --space {in}/space_nan.json",
    "space show --space {in}/space_strs.json",
    "space show --space {in}/space_img.json",
    "space show --space {in}/space_depth.json",
    "space show --space {in}/missing.json",
    "space show --space {in}/space_step0.json",
    "space show --space {in}/space_bool.json",
    "arch show l9",
    "arch show {in}/nan_arch.json",
    "arch show {in}/str_widths.json",
    "arch show {in}/huge_width.json",
    "arch show {in}/img100k.json",
    "arch show {in}/neg_width.json",
    "arch show {in}/float_heads.json",
    "arch show {in}/inf_ratio.json",
    "arch show {in}/many_blocks.json",
    "arch show {in}/bad.json",
    "arch show l1 --space nope",
    "arch show",
    # latency tables
    "lut build",
    "lut build --table cpu-x --calibration -1",
    "lut build --table cpu-x --repeats 0",
    "lut build --table cpu-x --repeats -3",
    "lut build --table cpu-x --op-repeats 0",
    "lut build --table cpu-x --threads 0",
    "lut build --table cpu-x --batch nan",
    "lut build --table cpu-x --rounds 0",
    "lut build --table bad/name!",
    "lut build --table cpu-x --space nope",
    "lut build --table cpu-x --space {in}/space_nan.json",
    "lut validate --table nope",
    "lut validate --table iphone-lut --samples 0",
    "lut show nope",
    "lut show iphone-lut --arch {in}/nan_arch.json",
    "lut profile iphone-lut --arch l9",
    "lut bundle -o {in}/../bundle --calibration -2",
    "lut bundle -o {in}/../bundle --space nope",
    "lut import {in}/text.txt --name x",
    "lut import {in}/bad.json --name x",
    "lut import {in}/missing.json --name x",
    # train / finetune
    "train --lr nan",
    "train --lr -1",
    "train --lr inf",
    "train --workers -1",
    "train --train-size -5",
    "train --train-size 0",
    "train --val-size 0",
    "train --kd-temperature 0",
    "train --kd-weight 2",
    "train --epochs 0",
    "train --batch-size 0",
    "train --label-smoothing 1.5",
    "train --seed -1",
    "train --tau0 nan",
    "train --space {in}/space_nan.json --epochs 1",
    "train --data {in}/no-such-folder",
    "train --resume {in}/text.txt",
    "train --space {in}/space2.json --data {in}/imgs --epochs 1 --batch-size 4 --quiet",
    "finetune --lr nan",
    "finetune --workers -1",
    "finetune --train-size -5",
    "finetune",
    "finetune --arch l1 --supernet {in}/nan_ckpt.pt",
    "finetune --arch {in}/str_widths.json",
    # search
    "search --budget-ms nan",
    "search --budget-ms inf",
    "search --budget-ms -1",
    "search --budget-ms 0",
    "search --budget-ms abc",
    "search --budget-ms 1.6 --out {in}/f",
    "search --budget-ms 1.6 --out {in}/user",
    "search --budget-ms 1.6 --strategy optuna --storage bogus://x --trials 2",
    "search --budget-ms 1.6 --trials 0",
    "search --budget-ms 1.6 --supernet {in}/str_state.pt",
    "search --budget-ms 1.6 --supernet {in}/nan_ckpt.pt",
    "search --budget-ms 1.6 --supernet {in}/text.txt",
    "search --budget-ms 1.6 --table nope",
    "search --budget-ms 0.0001",
    # prune
    "prune --budget-ms nan",
    "prune",
    "prune --batches 0",
    "prune --supernet {in}/nan_ckpt.pt --arch l1 --table iphone-lut --budget-ms 1",
    "prune --model timm:deit_tiny_patch16_224 --budget-params -5",
    # export / bench / serve
    "export l1 --random-init -o {in}/f --no-measure",
    "export l1 --random-init -o {in}/user --no-measure",
    "export {in}/str_widths.json --random-init -o {in}/../out --no-measure",
    "export {in}/img100k.json --random-init -o {in}/../out --no-measure",
    "export {in}/huge_width.json --random-init -o {in}/../out --no-measure",
    "export l1 --random-init -o {in}/../out --repeats 0",
    "export l1 --random-init -o {in}/../out --no-measure --class-names {in}/names3.txt",
    "export l1 -o {in}/../out",
    "export l1 --supernet {in}/str_state.pt -o {in}/../out",
    "export l1 --weights {in}/fake.pt -o {in}/../out",
    "bench {in}/fake.onnx",
    "bench --batch 0",
    "bench --repeats -3",
    "bench l9",
    "serve --model {in}/fake.onnx --port 99999",
    "serve --model {in}/fake.onnx --max-mb -1",
    "serve --model {in}/fake.onnx",
    "serve --model {in}/text.txt",
    "serve --model {in}/missing.onnx",
    # the command line itself
    "nosuchcommand",
    "train --nosuchoption 3",
]
if not torch.cuda.is_available():  # a CUDA table asked for on a machine without a GPU
    CASES += ["lut build --table cuda-x --backend torch-cuda --space tiny"]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        if root.exists():
            for p in root.rglob("*"):
                out[str(p)] = (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line(case, inputs, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("SLIMFORMER_CACHE", str(cache))
    monkeypatch.chdir(work)
    argv = case.format(**{"in": inputs}).split()
    before = _snapshot(tmp_path, inputs)
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2, f"exit {rc}: {out[-300:]}"
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], err
    assert _snapshot(tmp_path, inputs) == before, "the command wrote or changed files"


def test_the_table_is_large_and_covers_every_command():
    from slimformer.cli import build_parser

    assert len(CASES) >= 60
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    covered = {c.split()[0] for c in CASES}
    assert commands <= covered, commands - covered


def test_negative_width_is_one_fault_not_six(inputs, capsys):
    rc, _, err = run_cli(["arch", "show", str(inputs / "neg_width.json")], capsys)
    assert rc == 2 and "stage 2: width must be between 1 and" in err and "mlp_ratio" not in err


def test_messages_name_the_field(inputs, capsys):
    for argv, field in ((["train", "--lr", "nan"], "--lr"), (["arch", "show", str(inputs / NAN_ARCH)], "mlp_ratio"),
                        (["serve", "--model", "m.onnx", "--port", "99999"], "--port"),
                        (["space", "show", "--space", str(inputs / "space_strs.json")], "stage_widths"),
                        (["search", "--budget-ms", "1.6", "--supernet", str(inputs / "nan_ckpt.pt")], "non-finite")):
        _, _, err = run_cli(argv, capsys)
        assert field in err, (argv, err)


# ----------------------------------------------------------------- as real processes


def _env(tmp_path: Path) -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "SLIMFORMER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _cli(args: list[str], tmp_path: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimformer", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300, check=False, **kw)


def test_unreadable_image_in_a_dataloader_worker(inputs, tmp_path):
    r = _cli(["train", "--space", str(inputs / "space2.json"), "--data", str(inputs / "imgs"), "--epochs", "1",
              "--batch-size", "4", "--quiet", "--workers", "1"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    want = (f"slimformer: error: cannot read the image {inputs / 'imgs/train/a/broken.png'} "
            "(UnidentifiedImageError): remove or replace it")
    assert r.stderr.strip().splitlines() == [want]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] or not (tmp_path / "runs").exists()


def test_closed_pipe_is_quiet(tmp_path):
    """`slimformer space show | head -1`: the reader is gone when the output is written; no BrokenPipeError
    traceback. The pipe's read end is closed before the process starts, so every write meets EPIPE."""
    r, w = os.pipe()
    os.close(r)
    p = subprocess.Popen([sys.executable, "-m", "slimformer", "space", "show"], cwd=tmp_path, env=_env(tmp_path),
                         stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    err = p.communicate(timeout=120)[1].decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode == 141 and err == ""


def test_closed_pipe_in_process(monkeypatch, capsys):
    class Closed:
        def write(self, _):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["space", "show", "--space", "tiny"]) == 141
    assert capsys.readouterr().err == ""


def test_second_table_builder_gets_one_line(tmp_path):
    from slimformer._io import exclusive_lock
    from slimformer.latency_lut._registry import partial_path

    lut_dir = tmp_path / "luts"
    lock = partial_path("cpu-lock", lut_dir).with_suffix(".lock")
    with exclusive_lock(lock, "held"):  # a first builder
        r = _cli(["lut", "build", "--table", "cpu-lock", "--lut-dir", str(lut_dir), "--space", "tiny",
                  "--quiet"], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    want = (f"slimformer: error: latency table 'cpu-lock' is being built by another process (pid {os.getpid()}); "
            "wait for it to finish (it resumes where a killed build stopped) or build under another name")
    assert r.stderr.strip().splitlines() == [want]
    assert not lock.exists() and not lut_dir.exists()  # released and tidied: nothing left behind
