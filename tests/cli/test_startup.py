"""The CLI starts without torch or timm: parsers register, ``--version``, ``--help``, ``lut list`` and
``space show`` run on plain Python. Not timed (the start-up figure is in docs/measured-figures.md, from its command);
this checks the cause of a slow start, which a timing on a shared machine could not."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "optuna", "onnxruntime", "matplotlib")

PROBE = """
import json, sys
from slimformer.cli import build_parser, main
argv = json.loads(sys.argv[1])
if argv == ["--parse-only"]:
    build_parser().parse_args(["search", "--budget-ms", "1.6"])
else:
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))))
"""

@pytest.mark.parametrize("argv", [["--parse-only"], ["--version"], ["--help"], ["search", "--help"],
                                  ["lut", "list"], ["space", "show"], ["arch", "show", "l1"]])
def test_cli_starts_without_torch(argv, tmp_path):
    env_cache = {"SLIMFORMER_CACHE": str(tmp_path)}

    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
                         capture_output=True, text=True, env={**os.environ, **env_cache}, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"slimformer {' '.join(argv)} imported {loaded}"

def test_lazy_names_still_resolve():
    import slimformer.latency_lut as lut
    import slimformer.supernet as sn
    import slimformer.train as tr

    for pkg in (sn, lut, tr):
        missing = [n for n in pkg.__all__ if not hasattr(pkg, n)]
        assert not missing, f"{pkg.__name__} lists {missing} but cannot load them"
