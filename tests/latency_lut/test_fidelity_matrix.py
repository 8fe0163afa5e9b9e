"""The fidelity matrix's report (benchmarks/lut_fidelity_matrix.py): the repeat column and the re-scale note."""
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def matrix():
    return load_benchmark("lut_fidelity_matrix")


def test_markdown_says_what_the_level_re_scale_changed(matrix):
    figures = {"within_5pct": 0.69, "within_10pct": 0.93, "mape_pct": 4.27, "worst_pct": 22.4, "kendall_tau": 0.92}
    row = {**figures, "headline": "recalibrated", "corrected": {**figures, "within_5pct": 0.59}, "level": 0.96,
           "build_s": 295.0, "repeat_sd": 0.052, "repeat_within_5pct": 0.7, "loadavg_build": [0.5],
           "loadavg_validate": [1.9], "validate_s": 601.0, "build_timing": {"max_time_s": 1.0}}
    text = matrix.markdown({"2x4-onnxruntime": row}, "default")
    line = next(x for x in text.splitlines() if x.startswith("| 2x4, onnxruntime |"))
    assert "69 % (59 % before)" in line and "×0.960 (re-scaled)" in line and "5.2 % / 70 %" in line
    assert "295 s (+ 601 s validation), cap 1 s" in line
    assert "| 1x1, onnxruntime | not run |" in text


def test_cuda_cells_are_listed_only_once_they_ran(matrix):
    figures = {"within_5pct": 0.9, "within_10pct": 1.0, "mape_pct": 2.0, "worst_pct": 9.0, "kendall_tau": 0.97}
    row = {**figures, "headline": "corrected", "level": None, "build_s": 60.0, "loadavg_build": [0.1],
           "loadavg_validate": [0.1]}
    assert "torch-cuda" not in matrix.markdown({}, "default")
    text = matrix.markdown({"1x64-torch-cuda": row}, "default")
    assert "| 1x64, torch-cuda | 90 % | 100 % |" in text and "1x1, torch-cuda" not in text
    assert matrix.parse_cell("1x64-torch-cuda") == (1, 64, "torch-cuda")


def test_a_paired_row_keeps_its_figures_without_the_pairing(matrix):
    figures = {"within_5pct": 0.97, "within_10pct": 1.0, "mape_pct": 1.9, "worst_pct": 6.1, "kendall_tau": 0.98}
    row = {**figures, "headline": "paired", "level": 1.01, "build_s": 250.0, "repeat_sd": 0.045,
           "repeat_within_5pct": 0.75, "loadavg_build": [0.5], "loadavg_validate": [0.9],
           "unpaired": {**figures, "within_5pct": 0.71, "within_10pct": 0.96, "kendall_tau": 0.93},
           "paired_repeat_sd": 0.012}
    line = next(x for x in matrix.markdown({"1x1-onnxruntime": row}, "default").splitlines()
                if x.startswith("| 1x1, onnxruntime |"))
    assert line.startswith("| 1x1, onnxruntime | 97 % | 100 % |")
    assert line.endswith("| 71 % / 96 % / 0.930 | 1.2 % |") and "4.5 % / 75 %" in line
