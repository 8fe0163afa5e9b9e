"""benchmarks/search_quality.py's goal check: each strategy against the best of as many random subnets as it used."""
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def sq():
    return load_benchmark("search_quality")


def seed(s, slim, tpe, random_by_n):
    """One seed, one budget: held-out top-1 of two strategies; slim used 30 evaluations, tpe 10, fast none."""
    return {"seed": s, "rows": [{"budget_ms": 0.1, "fraction": 0.5,
                                 "heldout_top1": {"slim": slim, "fast": 0.5, "tpe": tpe, "uniform": 0.4},
                                 "evaluations": {"slim": 30, "fast": 0, "tpe": 10},
                                 "random_by_evaluations": {str(n): a for n, a in random_by_n.items()}}]}


def test_each_strategy_meets_random_at_its_own_number_of_evaluations(sq):
    # random's best of 30 is better than its best of 10: slim (30) loses to it, tpe (10) beats its own
    seeds = [seed(s, 0.60 + 0.001 * s, 0.66 + 0.001 * s, {10: 0.62, 30: 0.65}) for s in range(3)]
    each = sq.each_against_random(seeds)
    assert set(each) == {"slim", "tpe"}  # fast evaluated nothing: no random of equal N to hold it to
    assert each["slim"]["met"] == 0 and each["slim"]["diffs"][0][0] == pytest.approx(-5.0 + 0.1)
    assert each["tpe"]["met"] == 1 and each["tpe"]["diffs"][0][0] == pytest.approx(4.0 + 0.1)
    s = sq.summarize(seeds, "tpe")  # the summary's default column uses the same rule
    assert s["budgets"][0]["random_n"] == [10, 10, 10] and s["budgets"][0]["beats_uniform"]
