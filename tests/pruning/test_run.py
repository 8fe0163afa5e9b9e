from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from slimformer.cli import main
from slimformer.latency_lut import LatencyTable, parse_key, space_ops
from slimformer.pruning import Infeasible, prune_supernet
from slimformer.supernet import Supernet, get_space, save_supernet
from tests.conftest import randomize_
from tests.pruning.test_importance import _batches, _tiny_cfg


def tiny_table(space, *, name="tiny-fake"):
    entries = {}
    for k in space_ops(space):
        _kind, p = parse_key(k)
        size = 1.0
        for v in p.values():
            size *= max(v, 1)
        entries[k] = 0.002 + size * 1e-6
    return LatencyTable.from_entries(entries, name=name, kind="estimated", device=name, backend="none", space=space,
                                     overhead_ms=0.05, correction={"scale": 1.25, "offset_ms": 0.1})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune")
    space = get_space("tiny")
    torch.manual_seed(0)
    sn = randomize_(Supernet(space), seed=11)
    ck = save_supernet(d / "supernet.pt", sn, meta={"note": "test"})
    cfg = _tiny_cfg(space)
    (d / "arch.json").write_text(json.dumps({"arch": cfg.to_dict(), "predicted_ms": 1.0}))
    table = tiny_table(space)
    table.save(d / "tiny-fake.json")
    loaders = SimpleNamespace(train=_batches(3, seed=1), val=_batches(2, seed=2), num_classes=10)
    return d, space, ck, cfg, table, loaders


def test_prune_supernet_run_dir(setup, monkeypatch):
    d, space, ck, cfg, table, loaders = setup
    from slimformer.pruning import expand

    full = table.predict(expand(cfg, space))
    from slimformer.supernet import mb3d, mb4d

    smallest = cfg
    for si, pos, b in cfg.iter_blocks():
        small = mb4d(1.0) if b.kind == "mb4d" else mb3d(1, 8, 16, 1.0)
        smallest = smallest.with_block(si, pos, small)
    budget = round(0.5 * (table.predict(smallest) + full), 4)
    s = prune_supernet(supernet=ck, arch=d / "arch.json", device=table, budget_ms=budget, data=loaders, batches=2,
                       eval_batches=1, run_root=d / "runs", progress=False)
    run = d / "runs" / s["run_dir"].split("/")[-1]
    for f in ("arch.json", "subnet.pt", "supernet.pt", "importance.json", "allocations.json", "channels.csv",
              "channels.png", "report.md"):
        assert (run / f).is_file(), f
    from slimformer.supernet import EfficientFormerNet, get_arch, load_supernet

    new = get_arch(run / "arch.json")
    assert s["predicted_ms"] <= budget < full
    assert table.predict(new) == pytest.approx(s["predicted_ms"])
    space.validate(new)
    assert [b.kind for _, _, b in new.iter_blocks()] == [b.kind for _, _, b in cfg.iter_blocks()]
    assert new.widths == cfg.widths
    net = EfficientFormerNet(new)
    net.load_state_dict(torch.load(run / "subnet.pt", weights_only=True))
    # the reordered supernet, active on the new config, is the saved subnet (eval mode, same BN stats)
    sn = load_supernet(run / "supernet.pt").model
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 10)
    allocs = json.loads((run / "allocations.json").read_text())["allocations"]
    assert allocs["milp"]["importance"] >= allocs["greedy"]["importance"] - 1e-12
    assert all(a["predicted_ms"] <= budget for a in allocs.values())
    report = (run / "report.md").read_text()
    assert "channels.png" in report and "| s3.b1 | mb3d |" in report and "pattern" in report.lower()
    assert sn.space.hash == space.hash
    # resume: the scores are reused, not recomputed
    from slimformer._errors import SlimformerError

    empty = SimpleNamespace(train=[], val=loaders.val, num_classes=10)
    with pytest.raises(SlimformerError, match="no batches"):
        prune_supernet(supernet=ck, arch=d / "arch.json", device=table, budget_ms=budget, data=empty, batches=2,
                       eval_batches=0, run_root=d / "runs", progress=False)

    def boom(*a, **k):
        raise AssertionError("importance recomputed on resume")

    monkeypatch.setattr("slimformer.pruning._run.taylor_importance", boom)
    s2 = prune_supernet(supernet=ck, arch=d / "arch.json", device=table, budget_ms=budget,
                        data=SimpleNamespace(train=loaders.train, val=loaders.val, num_classes=10), batches=2,
                        eval_batches=0, run_dir=run, progress=False)
    assert s2["arch"] == s["arch"]


def test_infeasible_budget_is_one_clear_error(setup):
    d, _space, ck, _cfg, table, loaders = setup
    with pytest.raises(Infeasible, match=r"budget 0\.001 ms is infeasible: the smallest"):
        prune_supernet(supernet=ck, arch=d / "arch.json", device=table, budget_ms=0.001, data=loaders, batches=1,
                       eval_batches=0, run_root=d / "runs", progress=False)


def test_cli_mismatched_inputs(setup, capsys):
    d, _space, ck, _cfg, _table, _loaders = setup
    other = get_space("default")
    tiny_table(other, name="other").save(d / "other.json")
    rc = main(["prune", "--supernet", str(ck), "--arch", str(d / "arch.json"), "--device", str(d / "other.json"),
               "--budget-ms", "1", "--out", str(d / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "built for another search space" in err and len(err.strip().splitlines()) == 1
    rc = main(["prune", "--supernet", str(ck), "--arch", "l1", "--device", str(d / "tiny-fake.json"),
               "--budget-ms", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "not in the checkpoint's space 'tiny'" in err and len(err.strip().splitlines()) == 1
    rc = main(["prune", "--supernet", str(ck), "--budget-ms", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--arch" in err and "--device" in err
    rc = main(["prune", "--model", "timm:deit_tiny_patch16_224"])
    assert rc == 2 and "--budget-params" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_prune_end_to_end_builtin(setup, capsys):
    d, _space, ck, _cfg, _table, _loaders = setup
    base = ["prune", "--supernet", str(ck), "--arch", str(d / "arch.json"), "--device", str(d / "tiny-fake.json"),
            "--data", "builtin", "--batches", "2", "--batch-size", "8", "--eval-batches", "1", "--out", str(d / "cli")]
    rc = main([*base, "--budget-ms", "0.001"])
    err = capsys.readouterr().err
    assert rc == 2 and "infeasible" in err and len(err.strip().splitlines()) == 1
    rc = main([*base, "--budget-ms", "0.29"])
    out = capsys.readouterr().out
    assert rc == 0, out
    run = out.strip().splitlines()[-1].split("run directory: ")[1]
    summary = json.loads((d / "cli" / run.split("/")[-1] / "arch.json").read_text())
    assert summary["predicted_ms"] <= 0.29 and summary["strategy"] == "prune-milp"


def test_cli_prune_with_contract_loaders(setup, capsys, monkeypatch):
    """The CLI path through `build_loaders` (contract 2), with a stand-in that records its arguments."""
    import slimformer.pruning._run

    d, space, ck, _cfg, _table, loaders = setup
    calls = []

    def fake_build_loaders(data, *, img_size, batch_size, seed=0, **kw):
        calls.append((data, img_size, batch_size))
        return loaders

    monkeypatch.setattr(slimformer.pruning._run, "build_loaders", fake_build_loaders)
    base = ["prune", "--supernet", str(ck), "--arch", str(d / "arch.json"), "--device", str(d / "tiny-fake.json"),
            "--data", "builtin", "--batches", "2", "--batch-size", "8", "--eval-batches", "1", "--out", str(d / "cli2")]
    rc = main([*base, "--budget-ms", "0.001"])
    err = capsys.readouterr().err
    assert rc == 2 and "infeasible" in err and len(err.strip().splitlines()) == 1
    rc = main([*base, "--budget-ms", "0.29", "--strategy", "greedy"])
    out = capsys.readouterr().out
    assert rc == 0 and calls[-1] == ("builtin", space.img_size, 8)
    assert "pruned" in out and "pattern" in out.lower()
    run = d / "cli2" / out.strip().splitlines()[-1].split("run directory: ")[1].split("/")[-1]
    summary = json.loads((run / "arch.json").read_text())
    assert summary["predicted_ms"] <= 0.29 and summary["strategy"] == "prune-greedy"
    rc = main([*base, "--budget-ms", "0.29", "--resume", str(run)])
    assert rc == 0
    rc = main([*base, "--budget-ms", "0.29", "--resume", str(d / "nowhere")])
    assert rc == 2 and "not a prune run directory" in capsys.readouterr().err
