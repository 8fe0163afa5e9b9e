"""benchmarks/lut_noise_floor.py's out-of-sample ceiling: fitted on one half of the subnets, scored on the other."""
import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def nf():
    return load_benchmark("lut_noise_floor")


def ceiling(nf, capsys, measured, raw, n_ops, kinds):
    nf._oracle_out_of_sample(kinds, measured, raw, n_ops, splits=50)
    out = capsys.readouterr().out.splitlines()
    return [int(line.split("%")[0].split()[-1]) for line in out]


def test_a_composition_that_holds_reaches_every_subnet_and_one_that_does_not_only_its_share(nf, capsys):
    rng = np.random.default_rng(0)
    kinds = rng.uniform(0.5, 3.0, (100, 3))  # three kinds of op, ms per subnet
    n_ops = rng.integers(20, 70, 100).astype(float)
    raw = kinds.sum(axis=1)
    exact = 1.1 * raw + 0.2 + 0.01 * n_ops  # the correction's form, exactly
    assert ceiling(nf, capsys, exact, raw, n_ops, np.c_[kinds, np.ones(100), n_ops]) == [100, 100]
    own = exact * np.exp(rng.normal(0, 0.06, 100))  # each subnet off by its own 6 %: no fit on half removes it
    got = ceiling(nf, capsys, own, raw, n_ops, np.c_[kinds, np.ones(100), n_ops])
    assert all(45 <= g <= 75 for g in got)  # a normal error of sd 6 % stays within +-5 % for about 60 %
