"""scripts/gpu_check.sh: its CPU fallback runs the same three checks (sandwich AMP path, single network, resume)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_fallback_passes_and_writes_its_figures(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out"), "--device", "cpu",
                        "--steps", "3"], capture_output=True, text=True, check=False, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all checks passed" in p.stdout and "not a GPU figure" in p.stdout
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert not res["cuda"] and res["resume"]["ok"] and res["resume"]["max_abs_weight_diff"] == 0.0
    assert res["sandwich"]["finite"] and res["sandwich"]["images_per_s"] > 0 and res["single"]["images_per_s"] > 0


@pytest.mark.slow
def test_gpu_session_without_a_gpu_runs_the_fallback_and_says_what_it_skipped(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "session"
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), str(out)], capture_output=True, text=True,
                       check=False, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = (out / "summary.txt").read_text()
    assert "== train: exit 0" in summary and "torch-cuda latency cells were skipped" in summary
    assert json.loads((out / "gpu-check_gpu_check.json").read_text())["resume"]["ok"]
    assert (out / "gpu_runs.tgz").stat().st_size > 0 and (out / "env.txt").read_text()
