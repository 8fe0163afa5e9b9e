"""Taylor pruning and MILP reallocation on the EfficientViT family."""
from __future__ import annotations

import json

import numpy as np
import torch

from slimformer.data import BuiltinShapes
from slimformer.latency_lut import LatencyTable, parse_key, space_ops
from slimformer.pruning import prune_supernet
from slimformer.pruning._evit import expand
from slimformer.pruning._importance import taylor_scores
from slimformer.pruning._realloc import allocate, build_problem
from slimformer.pruning._reorder import reorder_by_importance
from slimformer.supernet import get_space, save_supernet
from slimformer.supernet.efficientvit import EfficientViTSupernet
from tests.conftest import randomize_


def _table(space) -> LatencyTable:
    def ms(key):
        _, d = parse_key(key)
        return 0.002 + float(np.prod([max(v, 1) for v in d.values()])) / 5e8
    return LatencyTable.from_entries({k: ms(k) for k in space_ops(space)}, name="evit-fake", kind="measured",
                                     device="evit-fake", backend="analytic", space=space, overhead_ms=0.01)


def _batches(space, n=2, size=8):
    ds = BuiltinShapes(img_size=space.img_size, length=n * size, seed=0)
    out = []
    for b in range(n):
        xs, ys = zip(*(ds[b * size + i] for i in range(size)))
        out.append((torch.stack(xs), torch.tensor(ys)))
    return out


def test_importance_masks_reorder_is_exact_and_milp_beats_greedy():
    space = get_space("efficientvit-tiny")
    sup = randomize_(EfficientViTSupernet(space), seed=2).eval()
    cfg = space.sample(11)
    analysed = expand(cfg, space)
    imp = taylor_scores(sup, _batches(space), cfg=analysed)
    for si, pos, b in analysed.iter_blocks():
        bi = imp.blocks[f"s{si}.b{pos}"]
        assert np.isfinite(bi.qk[:b.heads, :b.qk_dim]).all() and np.isnan(bi.qk[b.heads:]).all()
        assert np.isfinite(bi.ffn0[:b.hidden(analysed.stages[si].width)]).all()
    x = torch.randn(2, 3, space.img_size, space.img_size)
    with torch.no_grad():
        before = [sup.set_active(space.sample(s))(x) for s in (1, 2)] + [sup.set_active(analysed)(x)]
        sorted_imp = reorder_by_importance(sup, imp)
        after = [sup.set_active(space.sample(s))(x) for s in (1, 2)] + [sup.set_active(analysed)(x)]
    assert (after[-1] - before[-1]).abs().max().item() <= 1e-5  # the analysed subnet computes the same
    for bi in sorted_imp.blocks.values():  # scores now descend
        f = bi.ffn0[np.isfinite(bi.ffn0)]
        assert (np.diff(f) <= 1e-12).all()
    table = _table(space)
    p = build_problem(cfg, space, table, sorted_imp)
    lo = table.predict(p.build([int(np.argmin(c)) for c in p.costs]))
    budget = lo + 0.5 * (table.predict(analysed) - lo)
    milp, greedy = (allocate(p, table, budget, strategy=s, space=space) for s in ("milp", "greedy"))
    assert milp.predicted_ms <= budget and greedy.predicted_ms <= budget
    assert milp.value >= greedy.value - 1e-9 and space.contains(milp.cfg)


def test_prune_run_writes_the_reallocated_subnet_and_the_pattern(tmp_path):
    space = get_space("efficientvit-tiny")
    torch.manual_seed(0)
    ck = save_supernet(tmp_path / "sup.pt", randomize_(EfficientViTSupernet(space), seed=3))
    table = _table(space)
    cfg = space.largest()
    from slimformer.pruning._realloc import smallest_predicted_ms

    lo = smallest_predicted_ms(cfg, space, table)
    budget = lo + 0.5 * (table.predict(cfg) - lo)
    s = prune_supernet(supernet=ck, arch=cfg, table=table, budget_ms=budget, data="builtin", batches=2,
                       batch_size=8, eval_batches=1, out=tmp_path / "prune", progress=False)
    assert s.predicted_ms <= budget and "Q/K" in s.verdict
    arch = json.loads((tmp_path / "prune" / "arch.json").read_text())["arch"]
    assert arch["family"] == "efficientvit"
    assert (tmp_path / "prune" / "channels.png").is_file() and (tmp_path / "prune" / "report.md").is_file()
