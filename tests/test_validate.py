"""The bottom layer: number checks, strict JSON, run directories of failed commands, the build lock."""
from __future__ import annotations

import argparse
import math

import pytest

from slimformer._errors import SlimformerError, one_line
from slimformer._io import (
    atomic_write_json,
    check_out_dir,
    discard_new_run_dirs,
    exclusive_lock,
    make_run_dir,
    run_dirs_made,
)
from slimformer._validate import POSITIVE_FLOAT, POSITIVE_INT, check_float, check_int


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1.0", None, True, [1.0]])
def test_check_float_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(SlimformerError, match="^lr must be"):
        check_float(value, "lr")


@pytest.mark.parametrize("value", [2.5, "3", math.nan, True, None])
def test_check_int_refuses_fractions_strings_nan_bools(value):
    with pytest.raises(SlimformerError, match="^width must be a whole number"):
        check_int(value, "width")


def test_ranges_and_accepted_values():
    assert check_int(64.0, "w", lo=1) == 64 and check_float(3, "r", lo=0, lo_open=True) == 3.0
    with pytest.raises(SlimformerError, match="between 1 and 10, got 11"):
        check_int(11, "n", lo=1, hi=10)
    with pytest.raises(SlimformerError, match="must be positive, got 0"):
        check_float(0, "b", lo=0, lo_open=True)


def test_argparse_types_say_why():
    for text in ("nan", "inf", "-1", "0", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            POSITIVE_FLOAT(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number, got '1.5'"):
        POSITIVE_INT("1.5")
    assert POSITIVE_INT("3") == 3 and POSITIVE_FLOAT("1.6") == 1.6


def test_json_output_is_strict(tmp_path):
    with pytest.raises(SlimformerError, match=r"budget_ms = nan"):
        atomic_write_json(tmp_path / "a.json", {"arch": {}, "budget_ms": math.nan})
    with pytest.raises(SlimformerError, match=r"xs.1 = inf"):
        atomic_write_json(tmp_path / "a.json", {"xs": [1.0, math.inf]})
    assert not (tmp_path / "a.json").exists() and list(tmp_path.iterdir()) == []


def test_run_dirs_of_a_failed_command_are_removed(tmp_path):
    mark = run_dirs_made()
    empty = make_run_dir(tmp_path / "runs", "train")
    setup_only = make_run_dir(tmp_path / "runs", "train")
    (setup_only / "config.json").write_text("{}")
    with_result = make_run_dir(tmp_path / "runs", "train")
    (with_result / "metrics.jsonl").write_text("{}\n")
    assert set(discard_new_run_dirs(mark)) == {empty, setup_only}
    assert with_result.is_dir() and not empty.exists() and not setup_only.exists()
    mark = run_dirs_made()
    make_run_dir(tmp_path / "new" / "runs", "bench")
    discard_new_run_dirs(mark)
    assert not (tmp_path / "new").exists()  # the folders made for it go too


def test_check_out_dir(tmp_path):
    assert check_out_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.onnx").write_text("")
    check_out_dir(tmp_path / "d", allow=("model.onnx",))
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(SlimformerError, match="notes.txt"):
        check_out_dir(tmp_path / "d", allow=("model.onnx",))


def test_exclusive_lock_refuses_a_second_holder_and_tidies_up(tmp_path):
    lock = tmp_path / "luts" / "t.lock"
    with exclusive_lock(lock, "busy (pid {pid})"), pytest.raises(SlimformerError, match=r"busy \(pid \d+\)"), \
            exclusive_lock(lock, "busy (pid {pid})"):
        pass
    assert not lock.exists() and not (tmp_path / "luts").exists()
    with exclusive_lock(lock, "busy"):  # free again
        pass


def test_one_line_of_a_dataloader_worker_error():
    e = SlimformerError("Caught SlimformerError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                        "call last):\n  File \"x.py\", line 1\nslimformer._errors.SlimformerError: cannot read x.png")
    assert one_line(e) == "cannot read x.png"
    assert one_line(SlimformerError("a\nb")) == "a; b"
