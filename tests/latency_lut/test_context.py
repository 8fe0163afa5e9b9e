"""Ops timed in context, the level check, setting mismatches and the table format version."""
from __future__ import annotations

import argparse
import json
import random

import pytest

from slimformer.cli import main as cli_main
from slimformer.latency_lut import LatencyTable, arch_ops, build_table, validate_table
from slimformer.latency_lut._context import attribute, context_factors, node_key, profile_arch, stage_modules
from slimformer.latency_lut._fidelity import fit_level
from slimformer.supernet import get_space

from .conftest import FAST, micro_space


def test_every_node_of_a_profiled_subnet_lands_on_an_op_of_that_subnet():
    sp = get_space("tiny")
    for seed in range(3):
        cfg = sp.sample(random.Random(seed))
        p = profile_arch(cfg, runs=3, warmup=1)
        assert set(p["keys"]) == set(arch_ops(cfg))
        assert p["runs"] == 3 and p["wall_ms"] > 0


def test_efficientvit_nodes_land_on_its_own_ops_heads_apart():
    """The other family profiles the same way: its module paths name its keys, each cascaded head its own."""
    from slimformer.latency_lut._evit_keys import node_key as evit_node_key

    sp = get_space("efficientvit-tiny")
    cfg = sp.sample(random.Random(0))
    p = profile_arch(cfg, runs=2, warmup=1)
    assert set(p["keys"]) == set(arch_ops(cfg))
    key = node_key(cfg)
    assert key is not None and key("/patch_embed/conv1/conv/Conv") == arch_ops(cfg)[0]
    si = next(si for si, st in enumerate(cfg.stages) if st.blocks[0].heads > 1)
    base = f"/stages/stages.{si}/blocks/blocks.0"
    k = evit_node_key(cfg)
    first, mixer = k(f"{base}/dw0/m/conv/Conv"), k(f"{base}/mixer/m/Reshape")
    assert first.startswith("evit.dwffn") and k(f"{base}/ffn1/m/pw1/conv/Conv") == first
    assert mixer.startswith("evit.mix") and k(f"{base}/mixer/m/attn/proj/proj.1/conv/Conv") == mixer
    h0, h1 = k(f"{base}/mixer/m/attn/qkvs.0/conv/Conv"), k(f"{base}/mixer/m/attn/dws.1/conv/Conv")
    assert h0.startswith("evit.head") and h1.startswith("evit.head")
    assert k(f"{base}/mixer/m/attn/Softmax_1") is None  # the running head's softmax: the op before it
    assert k("/head/linear/Gemm").startswith("evit.cls") and k("Constant_12") is None


def test_in_context_attribution_sums_to_the_whole_network_within_its_noise(monkeypatch):
    """Every profiled run's node time is shared out over the network's ops without loss, never exceeds the
    whole run, and the sum of the ops' in-context medians stays below the largest run total (how far below is a
    timing figure, measured in benchmarks: interference lands on whole runs, see docs/lut-fidelity.md)."""
    import slimformer.latency_lut._context as C

    sp = get_space("tiny")
    big = type(sp)(**{**{f: getattr(sp, f) for f in sp.__dataclass_fields__}, "img_size": 96, "name": "tiny96"})
    cfg = big.largest()
    seen = []
    real = C.attribute
    monkeypatch.setattr(C, "attribute", lambda ev, c: seen.append((ev, real(ev, c))) or seen[-1][1])
    p = profile_arch(cfg, runs=5, warmup=1)
    (events, runs), = seen
    nodes = sum(e["dur"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")) / 1e3
    assert sum(r["nodes_ms"] for r in runs) == pytest.approx(nodes)  # every node attributed, none twice
    for r in runs:
        assert sum(r["keys"].values()) == pytest.approx(r["nodes_ms"]) and r["nodes_ms"] <= r["run_ms"] * 1.001
        assert set(r["keys"]) == set(arch_ops(cfg))
    totals = [r["nodes_ms"] for r in runs[1:]]
    assert min(p["keys"].values()) >= 0 and sum(p["keys"].values()) <= max(totals) * 1.001


def test_attribute_follows_the_module_path_and_gives_made_up_nodes_to_the_op_before():
    cfg = micro_space().largest()
    mods = stage_modules(cfg)
    mb3d = next(k for si in mods for _, k in si if len(k) == 4)
    key = node_key(cfg)
    s = next(si for si, m in enumerate(mods) if any(len(k) == 4 for _, k in m))
    j = next(name for name, k in mods[s] if len(k) == 4)
    base = f"/stages/stages.{s}/blocks/{j}"
    assert key(f"{base}/norm1/LayerNormalization") == mb3d[0]
    assert key(f"{base}/token_mixer/Softmax") == mb3d[1]
    assert key(f"{base}/token_mixer/proj/MatMul") == mb3d[2] == key(f"{base}/Add")
    assert key(f"{base}/mlp/fc1/MatMul") == mb3d[3] == key(f"{base}/Add_1")
    assert key("/stem/conv1/Conv") == arch_ops(cfg)[0] and key("/norm/LayerNormalization") == arch_ops(cfg)[-1]
    assert key("ReorderInput_token_3") is None
    ev = [{"name": "model_run", "ts": 0, "dur": 100},
          {"cat": "Node", "name": "/stem/conv1/Conv_kernel_time", "ts": 1, "dur": 10},
          {"cat": "Node", "name": "ReorderOutput_token_1_kernel_time", "ts": 20, "dur": 5},
          {"cat": "Node", "name": f"{base}/mlp/fc1/MatMul_kernel_time", "ts": 30, "dur": 40}]
    (run,) = attribute(ev, cfg)
    assert run["keys"] == {arch_ops(cfg)[0]: 0.015, mb3d[3]: 0.04} and run["run_ms"] == 0.1


def test_context_factors_are_per_kind_ratios_clipped():
    prof = [{"keys": {"mb4d-r8-c16-mlp16": 2.0, "stem-r32-i3-s8-c16": 1.0}},
            {"keys": {"mb4d-r8-c16-mlp32": 4.0}}]
    alone = {"mb4d-r8-c16-mlp16": 1.0, "mb4d-r8-c16-mlp32": 2.0, "stem-r32-i3-s8-c16": 0.1}
    f = context_factors(prof, alone)["factors"]
    assert f["mb4d"] == pytest.approx(2.0) and f["stem"] == 3.0


def test_a_build_profiles_in_context_and_keeps_what_fits_better(tmp_path):
    t = build_table(name="ctx", space=micro_space(), lut_dir=tmp_path, progress=False, context=2, **FAST)
    ctx = t.meta["context"]
    assert ctx["subnets"] == 2 and set(ctx["in_sample"]) == {"alone", "in_context"}
    assert all(0.5 <= v <= 3.0 for v in ctx["factors"].values())
    if ctx["kept"]:
        assert all(e["median_ms"] == pytest.approx(e["alone_ms"] * ctx["factors"].get(k.split("-")[0], 1.0))
                   for k, e in t.entries.items())
    else:
        assert all("alone_ms" not in e for e in t.entries.values())
    assert LatencyTable.load(t.path).hash == t.hash and t.meta["build"]["seconds"] > 0
    from slimformer.latency_lut._report import describe

    line = next(x for x in describe(t).splitlines() if x.strip().startswith("in context:"))
    assert "2 calibration subnets" in line and ("not kept" in line) == (not ctx["kept"])


def test_a_build_killed_while_profiling_resumes_there(tmp_path, monkeypatch):
    import slimformer.latency_lut._build as B

    real, calls = B.profile_arch, []

    def flaky(cfg, **kw):
        calls.append(cfg.summary())
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(B, "profile_arch", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_table(name="ctxr", space=micro_space(), lut_dir=tmp_path, progress=False, context=2, **FAST)
    lines = (tmp_path / "ctxr.partial.jsonl").read_text().splitlines()
    assert sum('"context"' in x for x in lines) == 1
    measured = []
    monkeypatch.setattr(B, "measure_module", lambda *a, **k: measured.append(1))
    monkeypatch.setattr(B, "profile_arch", real)
    t = build_table(name="ctxr", space=micro_space(), lut_dir=tmp_path, progress=False, context=2, **FAST)
    assert not measured and t.meta["context"]["subnets"] == 2  # nothing measured twice, one profile left


def test_mismatch_is_one_line_naming_each_setting(micro_table):
    assert micro_table.mismatch() is None
    assert micro_table.mismatch(threads=1, batch=1, backend="onnxruntime") is None
    line = micro_table.mismatch(threads=2, batch=4)
    assert "\n" not in line and "threads 2 (table: 1)" in line and "batch 4 (table: 1)" in line
    assert "backend torch" in micro_table.mismatch(backend="torch")


def test_lut_validate_at_another_setting_says_so_once(capsys, micro_table, tmp_path):
    code = cli_main(["lut", "validate", "--table", str(micro_table.path), "--samples", "2", "--rounds", "1",
                     "--threads", "2", "--quiet", "--run-dir", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert code == 0 and err.count("warning: table") == 1 and "threads 2 (table: 1)" in err
    again = LatencyTable.load(micro_table.path)
    assert (again.meta.get("validation") or {}).get("run_dir") != str(tmp_path / "v")  # not the table's figures


def test_search_at_another_setting_says_so_once(capsys, micro_table, tmp_path):
    code = cli_main(["search", "--budget-ms", "10", "--table", str(micro_table.path), "--batch", "4",
                     "--quiet", "--runs-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and err.count("warning: table") == 1 and "batch 4 (table: 1)" in err
    cli_main(["search", "--budget-ms", "10", "--table", str(micro_table.path), "--quiet",
              "--runs-root", str(tmp_path)])
    assert "warning" not in capsys.readouterr().err


def test_prune_at_another_setting_says_so_once(capsys, micro_table):
    from slimformer.cli._prune import _warn_setting

    args = argparse.Namespace(table=str(micro_table.path), lut_dir=None, threads=2, batch=None, backend="torch")
    _warn_setting(args)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "threads 2 (table: 1)" in err and "backend torch" in err
    _warn_setting(argparse.Namespace(table=str(micro_table.path), lut_dir=None, threads=None, batch=None,
                                     backend=None))
    assert capsys.readouterr().err == ""


def test_the_level_check_is_on_by_default_and_rescales_only_beyond_the_noise(micro_table, tmp_path):
    r = validate_table(micro_table, samples=2, rounds=1, run_dir=tmp_path / "v", progress=False, repeats=3,
                       min_time_s=0.0, calibration=3)
    lv = r["level"]
    assert lv["samples"] == 3 and lv["noise"] >= 0 and isinstance(lv["moved"], bool)
    # the table pairs its subnets with a reference, so that is the headline; the level-checked figures stay
    assert r["headline"] == "paired" and r["recalibrated"]["n"] == 2
    assert fit_level([10.0, 10.0, 10.0], [11.5, 11.5, 11.6])["noise"] < 0.15  # a clear move is beyond the noise


def test_format_1_tables_still_load_and_unknown_formats_are_one_line(micro_table, tmp_path):
    d = micro_table.to_dict()
    d["schema"] = "slimformer.lut/1"
    d.pop("context", None)
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    old = LatencyTable.load(p)
    cfg = micro_space().largest()
    assert old.predict(cfg) == pytest.approx(micro_table.predict(cfg))
    d["schema"] = "slimformer.lut/3"
    p.write_text(json.dumps(d))
    with pytest.raises(Exception, match="another version"):
        LatencyTable.load(p)
