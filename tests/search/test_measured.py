"""The answer measured where the table was built, and searched again at a re-scaled budget (search._measured)."""
from __future__ import annotations

import json

import pytest

from slimformer._errors import SlimformerError
from slimformer.cli import main
from slimformer.search import _api, search
from slimformer.search._measured import AIM, BAND, ROUNDS, fit_measured

from .conftest import make_table


class _Fake:
    """A machine on which every subnet runs ``slow`` times its prediction (the table prices it too cheap)."""

    def __init__(self, table, slow: float):
        self.table, self.slow, self.calls = table, slow, []

    def __call__(self, cfg):
        self.calls.append(cfg.key())
        return self.slow * self.table.predict(cfg)


@pytest.fixture
def fake_here(monkeypatch):
    """``search`` believes the table was measured here and times subnets on a :class:`_Fake` machine."""
    made = {}

    def meter(table, **_):
        made["m"] = _Fake(table, made.get("slow", 1.06))
        return made["m"]

    monkeypatch.setattr(_api, "not_measurable", lambda table, **_: None)
    monkeypatch.setattr(_api, "Meter", meter)
    return made


def _mid(table):
    lo, hi = table.predict(table.space.smallest()), table.predict(table.space.largest())
    return round(lo + 0.6 * (hi - lo), 4)


def test_an_answer_over_its_budget_is_searched_again_until_it_measures_within(tiny_space, fake_here):
    table = make_table(tiny_space)
    budget = _mid(table)
    plain = search(budget_ms=budget, table=table, measure=False)
    assert plain.measured is None and plain.predicted_ms <= budget
    slow = fake_here["slow"] = 1.06 * budget / plain.predicted_ms  # the table's answer runs 6 % over its budget
    r = search(budget_ms=budget, table=table)
    checks = r.measured
    assert 2 <= len(checks) <= ROUNDS and sum(c["chosen"] for c in checks) == 1
    assert checks[0]["searched_at_ms"] == budget and checks[0]["summary"] == plain.arch.summary()
    # the second search aims where the first answer, priced as wrongly, would measure AIM of the budget
    first = checks[0]
    assert checks[1]["searched_at_ms"] == pytest.approx(first["predicted_ms"] * AIM * budget / first["measured_ms"],
                                                        rel=1e-4)
    chosen = next(c for c in checks if c["chosen"])
    assert chosen["summary"] == r.arch.summary() and chosen["measured_ms"] <= budget
    assert chosen["measured_ms"] == pytest.approx(slow * r.predicted_ms, rel=1e-5)
    assert any(n.startswith("measured here:") for n in r.notes)
    assert r.arch_json()["measured"] == checks and len(set(fake_here["m"].calls)) == len(checks)


def test_an_answer_within_the_band_is_measured_once(tiny_space, fake_here):
    table = make_table(tiny_space)
    budget = _mid(table)
    plain = search(budget_ms=budget, table=table, measure=False)
    fake_here["slow"] = 0.985 * budget / plain.predicted_ms  # lands in the middle of the band
    r = search(budget_ms=budget, table=table)
    assert len(r.measured) == 1 and r.measured[0]["chosen"] and r.arch.key() == plain.arch.key()
    assert BAND[0] <= r.measured[0]["ratio"] <= BAND[1]


def test_fit_measured_returns_the_fastest_when_nothing_fits_and_never_times_a_subnet_twice(tiny_space):
    table = make_table(tiny_space)
    small, big = tiny_space.smallest(), tiny_space.largest()
    timed = []

    def measure(cfg):
        timed.append(cfg.key())
        return 10.0 if cfg.key() == small.key() else 20.0

    chosen, checks = fit_measured(big, budget_ms=5.0, search_at=lambda ms: small, measure=measure,
                                  predict=table.predict, score=lambda c: 0.0, lowest_ms=0.1)
    assert chosen.key() == small.key() and len(timed) == len(set(timed)) == 2
    assert [c["chosen"] for c in checks] == [False, True]


def test_of_two_subnets_within_the_budget_the_better_scoring_one_is_kept(tiny_space):
    small, big = tiny_space.smallest(), tiny_space.largest()
    ms = {small.key(): 0.90, big.key(): 0.95}  # both fit a 1 ms budget, both under the band

    chosen, checks = fit_measured(small, budget_ms=1.0, search_at=lambda _: big, measure=lambda c: ms[c.key()],
                                  predict=lambda c: ms[c.key()], score=lambda c: ms[c.key()], lowest_ms=0.1)
    assert chosen.key() == big.key() and len(checks) == 2
    assert checks[1]["searched_at_ms"] == pytest.approx(0.90 * AIM * 1.0 / 0.90)


def test_measure_asked_for_where_it_cannot_be_is_one_clear_error(tiny_space, tmp_path, capsys):
    table = make_table(tiny_space)
    assert search(budget_ms=_mid(table), table=table).measured is None  # not built here: not measured, no error
    with pytest.raises(SlimformerError, match="cannot time the answer here: .*not built on this machine"):
        search(budget_ms=_mid(table), table=table, measure=True)
    path = table.save(tmp_path / "t.json")
    assert main(["search", "--budget-ms", str(_mid(table)), "--table", str(path), "--measure", "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot time the answer here" in err[0]


def test_a_table_built_here_has_its_answer_measured_by_default(tmp_path, capsys):
    """End to end on a measured micro table: the answer is timed here, recorded in arch.json and printed."""
    from slimformer.latency_lut import build_table

    from ..latency_lut.conftest import FAST, micro_space

    table = build_table(name="micro-ort", space=micro_space(), lut_dir=tmp_path / "luts", progress=False, **FAST)
    from slimformer.latency_lut._fidelity import table_reference

    assert table_reference(table)[1] == table.meta["build"]["reference"]["median_ms"]  # timed at the build's level
    lo, hi = table.predict(table.space.smallest()), table.predict(table.space.largest())
    # a micro table built in seconds (FAST) can price its largest subnet below its smallest: the budget stays above it
    budget = f"{lo * 1.02 if hi <= lo else lo + 0.5 * (hi - lo):.6f}"
    argv = ["search", "--budget-ms", budget, "--table", "micro-ort", "--lut-dir", str(tmp_path / "luts"), "--out",
            str(tmp_path / "run"), "--quiet"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "measured here" in capsys.readouterr().out
    data = json.loads((tmp_path / "run" / "arch.json").read_text())
    checks = data["measured"]
    assert 1 <= len(checks) <= ROUNDS and sum(c["chosen"] for c in checks) == 1
    assert all(c["measured_ms"] > 0 and c["predicted_ms"] > 0 for c in checks)
    from slimformer.supernet import arch_from_dict

    assert next(c for c in checks if c["chosen"])["summary"] == arch_from_dict(data["arch"]).summary()


def test_a_search_again_that_finds_nothing_keeps_what_was_measured(tiny_space):
    big = tiny_space.largest()

    def nothing(ms):
        raise SlimformerError("slimming is stuck")

    chosen, checks = fit_measured(big, budget_ms=1.0, search_at=nothing, measure=lambda c: 1.2, predict=lambda c: 1.0,
                                  score=lambda c: 0.0, lowest_ms=0.1)
    assert chosen.key() == big.key() and len(checks) == 1 and checks[0]["chosen"] and checks[0]["ratio"] == 1.2
