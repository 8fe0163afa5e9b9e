"""Latency-driven slimming: actions, constraint, importance, evaluation, fill, determinism."""
from __future__ import annotations

import json

import pytest
import torch

from slimformer.search import (
    AlphaScorer,
    CachedPredictor,
    MacsProxy,
    all_grows,
    all_shrinks,
    block_importance,
    importance_shrinks,
    search,
    slim,
)
from slimformer.supernet import arch_key, load_supernet, mb3d

from .conftest import budgets


def test_shrinks_and_grows_stay_in_space(tiny_space):
    cfg = tiny_space.largest()
    shrinks = all_shrinks(tiny_space, cfg)
    kinds = {a.kind for a in shrinks}
    assert {"skip", "mb3d", "width", "mlp", "stem"} <= kinds
    for a in shrinks + all_grows(tiny_space, tiny_space.smallest()):
        assert tiny_space.check(a.cfg) == [], a.describe()
    # removing the first MB3D turns it into an MB4D: the tail starts one block later
    a = next(a for a in shrinks if a.kind == "mb3d")
    assert a.cfg.num_mb3d == cfg.num_mb3d - 1 and a.cfg.block(a.stage, a.pos).kind == "mb4d"
    assert a.cfg.first_mb3d() == (a.stage, a.pos + 1)
    # a stage never loses its last block
    small = tiny_space.smallest()
    assert not [a for a in all_shrinks(tiny_space, small) if a.kind == "skip"]


def test_importance_from_alpha_follows_the_paper(tiny_space):
    logits = {arch_key(0, 0): torch.tensor([2.0, 0.0]), arch_key(3, 1): torch.tensor([0.0, 1.0, 0.0])}
    info = block_importance(tiny_space, logits)
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    assert info[(0, 0)]["importance"] == pytest.approx(float(p[0] / p[1]))            # a_mb4d / a_skip
    q = torch.softmax(torch.tensor([0.0, 1.0, 0.0]), 0)
    assert info[(3, 1)]["importance"] == pytest.approx(float((q[0] + q[1]) / q[2]))  # (a_mb3d + a_mb4d) / a_skip
    assert info[(1, 0)]["importance"] == pytest.approx(1.0)                          # no alpha: uniform


def test_importance_actions_pick_the_least_important(tiny_space):
    cfg = tiny_space.largest()
    imp = {(s, p): 10.0 for s in range(4) for p in range(tiny_space.depths[s])}
    imp[(2, 1)] = 0.1                     # least important block, and stage 3 is the least important stage
    imp[(2, 0)] = imp[(2, 2)] = 0.1
    acts = {a.kind: a for a in importance_shrinks(tiny_space, cfg, lambda s, p: imp[(s, p)])}
    assert (acts["skip"].stage, acts["skip"].pos) == (2, 2)  # ties go to the deeper block
    assert acts["width"].stage == 2 and acts["width"].cfg.stages[2].width == 48
    assert acts["mlp"].stage == 2 and acts["mlp"].cfg.block(2, 2).mlp_ratio == 2.0
    assert (acts["mb3d"].stage, acts["mb3d"].pos) == cfg.first_mb3d()


def test_proxy_slimming_meets_every_budget_and_uses_it(tiny_space, tiny_table):
    predict = CachedPredictor(tiny_table)
    for b in budgets(tiny_table):
        cfg, trace = slim(space=tiny_space, predict=predict, scorer=MacsProxy(), budget_ms=b)
        assert tiny_space.check(cfg) == []
        assert predict(cfg) <= b
        assert trace[0]["phase"] == "start" and trace[-1]["predicted_ms"] == pytest.approx(predict(cfg))
        # after the fill phase no single growth fits the budget and adds MACs
        better = [g for g in all_grows(tiny_space, cfg) if predict(g.cfg) <= b and MacsProxy()(g.cfg) > MacsProxy()(cfg)]
        assert better == []


def test_fast_slim_uses_alpha_and_is_deterministic(tmp_path, tiny_table, tiny_ckpt, tiny_loaders):
    b = budgets(tiny_table)[1]
    r1 = search(budget_ms=b, table=tiny_table, supernet=tiny_ckpt, fast=True, loaders=tiny_loaders,
                out=tmp_path / "a")
    search(budget_ms=b, table=tiny_table, supernet=tiny_ckpt, fast=True, loaders=tiny_loaders,
                out=tmp_path / "b")
    assert r1.strategy == "slim" and r1.predicted_ms <= b and not r1.accuracy_driven
    assert "alpha" in r1.score_name
    assert (tmp_path / "a" / "arch.json").read_bytes() == (tmp_path / "b" / "arch.json").read_bytes()
    # the slimming steps follow alpha: the skip logits grow with depth, so blocks go deepest-first
    ck = load_supernet(tiny_ckpt)
    imp = AlphaScorer(ck.space, ck.arch_logits)
    skipped = [t for t in r1.trace if "-> skip" in t["action"]]
    assert skipped, r1.trace
    assert imp.importance(3, 2) < imp.importance(3, 0)
    # subnet weights are those of the extracted subnet
    sd = torch.load(tmp_path / "a" / "subnet.pt", weights_only=True)
    net = ck.model.extract_subnet(r1.arch)
    assert set(sd) == set(net.state_dict())


def test_evaluated_slim_is_accuracy_driven(tmp_path, tiny_table, tiny_ckpt, tiny_loaders):
    b = budgets(tiny_table)[1]
    r = search(budget_ms=b, table=tiny_table, supernet=tiny_ckpt, loaders=tiny_loaders, out=tmp_path / "r",
               strategy="slim")
    assert r.accuracy_driven and r.strategy == "slim" and 0.0 <= r.score <= 1.0
    assert r.predicted_ms <= b
    data = json.loads((tmp_path / "r" / "arch.json").read_text())
    for k in ("arch", "predicted_ms", "device", "table_hash", "table_kind", "strategy", "seed", "score"):
        assert k in data
    assert data["table_hash"] == tiny_table.hash and data["score"] == r.score
    # the score is the top-1 of the chosen subnet with recalibrated BN, reproducible from subnet.pt
    from slimformer.data import evaluate
    from slimformer.supernet import EfficientFormerNet

    net = EfficientFormerNet(r.arch)
    net.load_state_dict(torch.load(tmp_path / "r" / "subnet.pt", weights_only=True))
    assert evaluate(net, tiny_loaders.val) == pytest.approx(r.score, abs=1e-6)


def test_slim_handles_mb3d_tail_blocks(tiny_space, tiny_table):
    cfg = tiny_space.largest().with_block(3, 0, mb3d(1, 8, 16, 1.0))
    predict = CachedPredictor(tiny_table)
    out, _ = slim(space=tiny_space, predict=predict, scorer=MacsProxy(), budget_ms=predict(cfg) * 0.8, start=cfg)
    assert predict(out) <= predict(cfg) * 0.8
