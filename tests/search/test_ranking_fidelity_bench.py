"""The ranking-fidelity benchmark's helpers (benchmarks/ranking_fidelity.py): shards and the reference ceiling."""
import argparse

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def rf():
    return load_benchmark("ranking_fidelity")


def test_shards_split_every_stand_alone_run_exactly_once(rf):
    runs = [r for i in range(3) for r in rf.shard_runs((i, 3), 12, 3)]
    assert sorted(runs) == [(s, j) for s in range(3) for j in range(12)]
    assert rf.shard_arg("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0", "-1/2"):
        with pytest.raises(argparse.ArgumentTypeError):
            rf.shard_arg(bad)


def rows(means, noise, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"standalone_seeds": {str(s): (m + rng.normal(0, noise)) / 100 for s in range(k)}} for m in means]


def test_ceiling_is_high_when_seeds_agree_and_falls_with_seed_noise(rf):
    means = np.linspace(80, 90, 12)
    quiet, noisy = rf.reference_ceiling(rows(means, 0.05), 3), rf.reference_ceiling(rows(means, 3.0), 3)
    assert quiet["median_tau"] > 0.95 and quiet["seed_sd_pts"] < 0.1
    assert noisy["median_tau"] < quiet["median_tau"] - 0.1 and 2.0 < noisy["seed_sd_pts"] < 4.0
    # subnets that do not differ at all: the estimate of their true spread is itself noisy, so the ceiling
    # lands anywhere from 0 to about 0.5, well below a set that does differ
    flat = [rf.reference_ceiling(rows(np.full(12, 85.0), 1.0, seed=s), 3, n_sim=500)["median_tau"] for s in range(10)]
    assert np.median(flat) < 0.35 and max(flat) < 0.6 and min(flat) == 0.0


def test_split_by_stem_gives_one_loadable_sub_space_per_stem_width(rf, tmp_path):
    from slimformer.supernet import get_space

    space = get_space("tiny")
    files = rf.split_by_stem(space, tmp_path)
    assert sorted(files) == list(space.stem_widths)
    for w, path in files.items():
        sub = get_space(path)
        assert sub.stem_widths == (w,) and sub.stage_widths == space.stage_widths and sub.depths == space.depths
        assert sub.smallest().stem_width == sub.largest().stem_width == w


def test_finetune_before_scoring_trains_a_copy_and_leaves_the_supernet_alone(rf):
    import types

    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from slimformer.supernet import Supernet, get_space
    from slimformer.train import TrainConfig

    space = get_space("tiny")
    torch.manual_seed(0)
    sn = Supernet(space).eval()
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    s = space.img_size
    ds = TensorDataset(torch.randn(32, 3, s, s), torch.randint(0, space.num_classes, (32,)))
    loader = DataLoader(ds, batch_size=8, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=0), drop_last=True)
    cfg = TrainConfig(space="tiny", epochs=5, steps_per_epoch=50, batch_size=8, lr=2e-3, warmup_epochs=1.0,
                      quiet=True, workers=0, device="cpu")
    ft = rf.finetune_recipe(cfg, 3, 5e-4, len(loader))
    assert (ft.epochs, ft.steps_per_epoch, ft.warmup_epochs, ft.lr) == (1, 3, 0.0, 5e-4)
    # more updates than one pass holds: several passes, not a silent cap at one (78 batches -> 100, 300)
    assert [rf.updates(rf.finetune_recipe(cfg, n, 5e-4, 78), range(78)) for n in (100, 300, 78, 79)] == [100, 300, 78, 80]

    arch = space.largest()
    plain, tuned = sn.extract_subnet(arch).state_dict(), rf.fit(sn.extract_subnet(arch), arch, ft, loader)
    moved = [k for k, v in tuned.state_dict().items() if v.is_floating_point() and not torch.equal(v, plain[k])]
    assert moved and not tuned.training
    assert all(torch.equal(v, before[k]) for k, v in sn.state_dict().items())

    ck, batches = types.SimpleNamespace(model=sn), [(x, y) for x, y in loader]
    accs = rf.inherited_top1(ck, [space.smallest(), arch], batches[:2], batches, tune=(ft, loader))
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert all(torch.equal(v, before[k]) for k, v in sn.state_dict().items())
