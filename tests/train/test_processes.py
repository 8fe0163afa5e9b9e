"""Training as separate processes: a kill -9 mid-run then --resume, and a two-process DDP (gloo) run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slimformer.supernet import load_supernet

ARGS = ["--space", "tiny", "--batch-size", "8", "--train-size", "64", "--val-size", "16", "--eval-batches", "1",
        "--quiet", "--torch-device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _rows(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    return [json.loads(r) for r in p.read_text().splitlines()] if p.is_file() else []


@pytest.mark.slow
def test_killed_training_resumes(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, torch; torch.set_num_threads(1); from slimformer.train import TrainConfig, train_supernet; "
            "train_supernet(TrainConfig(space='tiny', batch_size=8, train_size=64, val_size=16, eval_batches=1, "
            "epochs=6, steps_per_epoch=3, gumbel=True, quiet=True), sys.argv[1])")
    cmd = [sys.executable, "-c", code, str(run)]
    proc = subprocess.Popen(cmd, env=ENV)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(_rows(run)) < 2:
            time.sleep(0.05)
        assert len(_rows(run)) >= 2, "training made no progress"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = load_supernet(run / "last.pt").meta["epoch"]
    assert 1 <= done < 6  # at most the epoch in flight is lost
    r = subprocess.run([sys.executable, "-m", "slimformer", "train", "--resume", str(run), "--quiet"], env=ENV,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(run)
    assert [x["epoch"] for x in rows] == [1, 2, 3, 4, 5, 6] and [x["step"] for x in rows] == [3, 6, 9, 12, 15, 18]
    ck = load_supernet(run / "last.pt")
    assert ck.meta["epoch"] == 6 and ck.arch_logits


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "slimformer", "train", *ARGS,
           "--epochs", "2", "--steps-per-epoch", "2", "--gumbel", "--runs-root", str(tmp_path)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1  # one run dir, written by rank 0 only
    assert r.stdout.count("checkpoint:") == 1
    rows = _rows(runs[0])
    assert [x["epoch"] for x in rows] == [1, 2] and rows[-1]["step"] == 4
    ck = load_supernet(runs[0] / "last.pt")
    assert len(ck.arch_logits) == 10
    rngs = ck.raw["train_state"]["rng_ranks"]  # each rank resumes its own random streams
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
