from __future__ import annotations

import json
import random

import pytest

from slimformer._errors import ConfigError, SlimformerError
from slimformer.latency_lut import LatencyTable, arch_ops, block_keys, get_table, list_tables, space_ops
from slimformer.supernet import SKIP, get_arch, get_space, mb3d, mb4d


def fake_table(space, *, correction=None, name="fake", seed=0, **kw):
    rng = random.Random(seed)
    entries = {k: {"median_ms": rng.uniform(0.01, 1.0), "spread_ms": 0.001, "count": 5} for k in space_ops(space)}
    return LatencyTable.from_entries(entries, name=name, kind="measured", device=name, backend="onnxruntime",
                                     space=space, overhead_ms=0.05, correction=correction, threads=1, **kw)


@pytest.mark.parametrize("space_name", ["tiny", "default"])
def test_predict_is_the_sum_of_its_keys_plus_overhead_and_correction(space_name):
    sp = get_space(space_name)
    t = fake_table(sp, correction={"scale": 1.1, "offset_ms": -0.3, "per_op_ms": 0.07})
    old = fake_table(sp, correction={"scale": 1.1, "offset_ms": 0.3})  # tables written before the per-op term
    for seed in range(300):
        cfg = sp.sample(seed)
        raw = sum(t.entries[k]["median_ms"] for k in arch_ops(cfg)) + 0.05
        n = len(arch_ops(cfg))
        assert t.predict(cfg, corrected=False) == pytest.approx(raw, rel=1e-12)
        assert t.predict(cfg) == pytest.approx(1.1 * raw - 0.3 + 0.07 * n, rel=1e-12)
        assert t.predict(cfg) == pytest.approx(t.correct(raw, t.n_ops(cfg)), rel=1e-12)
        assert old.predict(cfg) == pytest.approx(1.1 * raw + 0.3, rel=1e-12)
        assert sum(ms for _, ms in t.breakdown(cfg)) + 0.05 == pytest.approx(raw, rel=1e-12)
    assert fake_table(sp).predict(cfg) == pytest.approx(raw)  # no correction: corrected == raw


def test_block_ms_matches_the_block_keys():
    sp = get_space("default")
    t = fake_table(sp)
    c = fake_table(sp, correction={"scale": 1.2, "offset_ms": 0.5, "per_op_ms": 0.1})
    for blk in (mb4d(3.0), mb3d(6, 16, 96, 2.0)):
        for stage, width in ((2, 224), (3, 448)):
            if blk.kind == "mb3d" and stage != 3:
                continue
            res = 224 // (4 * 2 ** stage)
            keys = block_keys(blk, res=res, width=width)
            want = sum(t.entries[k]["median_ms"] for k in keys)
            assert t.block_ms(blk, stage=stage, width=width) == pytest.approx(want)
            assert c.block_ms(blk, stage=stage, width=width, corrected=True) == pytest.approx(1.2 * want + 0.1 * len(keys))
    assert t.block_ms(SKIP, stage=0, width=32) == 0.0 == c.block_ms(SKIP, stage=0, width=32, corrected=True)


def test_corrected_block_costs_add_up_to_the_prediction():
    """Swapping one block changes predict() by exactly the difference of the blocks' corrected costs."""
    sp = get_space("default")
    t = fake_table(sp, correction={"scale": 1.05, "offset_ms": -0.8, "per_op_ms": 0.1})
    cfg = get_arch("l3")
    swaps = [(si, pos, b, other) for si, pos, b in cfg.iter_blocks()
             for other in (SKIP, mb4d(2.0), mb3d(4, 16, 64, 2.0)) if other != b]
    checked = 0
    for si, pos, b, other in swaps:
        try:
            new = cfg.with_block(si, pos, other)
        except ConfigError:
            continue  # MB3D not as the tail
        if sp.check(new) or t.n_ops(new) - t.n_ops(cfg) != len(block_keys(other, res=1, width=1)) - len(
                block_keys(b, res=1, width=1)):
            continue  # outside the space, or the swap moved the flatten
        w = cfg.stages[si].width
        want = t.block_ms(other, stage=si, width=w, corrected=True) - t.block_ms(b, stage=si, width=w, corrected=True)
        assert t.predict(new) - t.predict(cfg) == pytest.approx(want, abs=1e-9)
        checked += 1
    assert checked > 20


def test_missing_key_names_the_key_and_the_space():
    t = fake_table(get_space("tiny"), name="tiny-table")
    with pytest.raises(SlimformerError, match=r"no entry for op 'stem-r224-i3-s24-c48'.*'tiny'"):
        t.predict(get_arch("l1"))


def test_save_load_round_trip_keeps_predictions_and_hash(tmp_path):
    sp = get_space("tiny")
    t = fake_table(sp, correction={"scale": 0.9, "offset_ms": 0.1, "samples": 8}, error={"mape": 1.0},
                   meta={"source": "test"})
    p = t.save(tmp_path / "t.json")
    u = LatencyTable.load(p)
    assert u.hash == t.hash and u.space_hash == sp.hash and u.space == sp
    assert u.meta["source"] == "test" and u.error == {"mape": 1.0} and u.correction["samples"] == 8
    cfg = sp.sample(1)
    assert u.predict(cfg) == t.predict(cfg)
    assert json.loads(p.read_text())["schema"] == "slimformer.lut/2"
    assert fake_table(sp, seed=1).hash != t.hash


def _write(tmp_path, text):
    p = tmp_path / "bad.json"
    p.write_text(text)
    return p


def test_malformed_truncated_and_foreign_tables_give_one_clear_error(tmp_path):
    good = fake_table(get_space("tiny")).to_dict()
    text = json.dumps(good)
    cases = {
        "truncated": (text[: len(text) // 2], "not valid JSON"),
        "foreign": (json.dumps({"schema": "slimformer.arch/1", "stages": []}), "not a latency table"),
        "no schema": (json.dumps([1, 2, 3]), "not a slimformer latency table"),
        "other version": (json.dumps({**good, "schema": "slimformer.lut/9"}), "another version"),
        "no entries": (json.dumps({**good, "entries": {}}), "malformed: 'entries'"),
        "bad entry": (json.dumps({**good, "entries": {"flat-t1-c64": {"median_ms": "fast"}}}), "malformed: entry"),
        "bad kind": (json.dumps({**good, "kind": "guessed"}), "malformed: table kind"),
        "bad space": (json.dumps({**good, "space": {"depths": [1]}}), "malformed"),
        "wrong hash": (json.dumps({**good, "space_hash": "0" * 16}), "does not match"),
        "missing": (json.dumps({k: v for k, v in good.items() if k != "device"}), "missing device"),
    }
    for content, msg in cases.values():
        with pytest.raises(SlimformerError, match=msg):
            LatencyTable.load(_write(tmp_path, content))
    with pytest.raises(SlimformerError, match="not found"):
        LatencyTable.load(tmp_path / "nope.json")


def test_get_table_by_name_path_and_helpful_errors(tmp_path):
    lut_dir = tmp_path / "luts"
    t = fake_table(get_space("tiny"), name="mine")
    t.save(lut_dir / "mine.json")
    assert get_table("mine", lut_dir=lut_dir).hash == t.hash
    assert get_table(str(lut_dir / "mine.json")).hash == t.hash
    names = {x["name"]: x for x in list_tables(lut_dir)}
    assert names["mine"]["kind"] == "measured" and names["mine"]["source"] == "user"
    with pytest.raises(SlimformerError, match=r"unknown latency table 'nope': available: .*mine"):
        get_table("nope", lut_dir=lut_dir)
    with pytest.raises(SlimformerError, match=r"slimformer lut build --device cpu-ort"):
        get_table("cpu-ort", lut_dir=lut_dir)
    with pytest.raises(SlimformerError, match="invalid table name"):
        get_table("bad name!", lut_dir=lut_dir)
    with pytest.raises(SlimformerError, match="not found"):
        get_table(str(tmp_path / "missing.json"))


def test_constructor_rejects_bad_values():
    sp = get_space("tiny")
    with pytest.raises(ValueError):
        LatencyTable(name="x", kind="guess", device="d", backend="b", space=sp, entries={"flat-t1-c64": 1.0})
    with pytest.raises(ValueError):
        LatencyTable(name="x", kind="measured", device="d", backend="b", space=sp, entries={"flat-t1-c64": -1.0})
    t = LatencyTable(name="x", kind="estimated", device="d", backend="b", space=sp, entries={"flat-t1-c64": 0.5})
    assert t.entries["flat-t1-c64"] == {"median_ms": 0.5, "spread_ms": 0.0, "count": 0}
