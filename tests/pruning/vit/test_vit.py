from __future__ import annotations

import copy

import pytest
import torch

from slimformer._errors import SlimformerError
from slimformer.pruning.vit import (
    PrunedAttention,
    create_vit,
    mask_vit,
    prune_vit,
    vit_allocate,
    vit_importance,
)


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    model = create_vit("timm:deit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)]
    return model, vit_importance(model, batches)


@pytest.mark.parametrize("frac", [0.5, 0.8])
def test_deit_tiny_pruned_to_parameter_budget(deit, frac):
    model, imp = deit
    n0 = sum(p.numel() for p in model.parameters())
    choices, info = vit_allocate(model, imp, budget_params=frac)
    assert info["params_before"] == n0
    pruned = prune_vit(copy.deepcopy(model), imp, choices)
    n1 = sum(p.numel() for p in pruned.parameters())
    assert n1 == info["params_after"] <= frac * n0
    assert n1 > 0.9 * frac * n0  # it uses the budget rather than pruning everything
    assert all(isinstance(b.attn, PrunedAttention) for b in pruned.blocks)
    x = torch.randn(2, 3, 32, 32)
    masked = mask_vit(copy.deepcopy(model), imp, choices)
    with torch.no_grad():
        out = pruned(x)
        assert out.shape == (2, 10)
        torch.testing.assert_close(out, masked(x), rtol=1e-4, atol=1e-5)
        for b in pruned.blocks:
            b.attn.fused_attn = False
        torch.testing.assert_close(pruned(x), out, rtol=1e-4, atol=1e-5)


def test_deit_budget_errors(deit):
    model, imp = deit
    with pytest.raises(SlimformerError, match="infeasible"):
        vit_allocate(model, imp, budget_params=1000)
    with pytest.raises(SlimformerError, match="cannot build"):
        create_vit("timm:no_such_model_xyz")
    with pytest.raises(SlimformerError, match="not a plain timm ViT|not a timm ViT"):
        create_vit("timm:resnet18")


def test_deit_weights_file_round_trip(deit, tmp_path):
    model, _ = deit
    p = tmp_path / "w.pth"
    torch.save(model.state_dict(), p)
    again = create_vit("timm:deit_tiny_patch16_224", weights=p, img_size=32, patch_size=8, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    (tmp_path / "bad.pth").write_bytes(b"junk")
    with pytest.raises(SlimformerError, match="not a readable"):
        create_vit("timm:deit_tiny_patch16_224", weights=tmp_path / "bad.pth")


def test_prune_timm_run_dir_and_reload(tmp_path):
    from types import SimpleNamespace

    from slimformer.pruning.vit import load_pruned_vit, prune_timm

    g = torch.Generator().manual_seed(1)
    data = SimpleNamespace(train=[(torch.randn(2, 3, 32, 32, generator=g), torch.zeros(2, dtype=torch.long))] * 2,
                           num_classes=5)  # 5 classes != 1000: the model's own predictions are the targets
    s = prune_timm(model="timm:deit_tiny_patch16_224", budget_params=0.6, data=data, batches=2, img_size=32,
                   run_root=tmp_path, progress=False)
    assert s["params_after"] <= 0.6 * s["params_before"]
    run = tmp_path / s["run_dir"].split("/")[-1]
    for f in ("pruned.pt", "importance.json", "choices.json", "channels.csv", "channels.png", "report.md"):
        assert (run / f).is_file(), f
    assert "own predictions" in (run / "report.md").read_text()
    import csv

    for r in csv.DictReader((run / "channels.csv").open()):
        assert 0 < float(r["qk_kept"]) <= 1 and 0 < float(r["v_kept"]) <= 1
    model = load_pruned_vit(run / "pruned.pt")
    assert sum(p.numel() for p in model.parameters()) == s["params_after"]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_deit_latency_budget(deit, tmp_path):
    from types import SimpleNamespace

    from slimformer.pruning.vit import VitLatency, measure_vit_latency, prune_timm
    from slimformer.pruning.vit._prune import attn_params, ffn_params, vit_options

    model, _ = deit
    # the measured table has every option (timings on a shared machine are noisy: only the shape is checked)
    lat = measure_vit_latency(model, img_size=32, steps=2, backend="torch", repeats=3, progress=False)
    assert len(lat.attn_ms) == 3 * 2 * 2 and len(lat.ffn_ms) == 4 and lat.fixed_ms >= 0
    assert all(v > 0 for v in lat.attn_ms.values()) and VitLatency.from_dict(lat.to_dict()) == lat
    # a deterministic table (cost ~ parameters) checks the budget logic
    att, ffn = vit_options(3, 64, 768, 2)
    fake = VitLatency(2, {o: 1e-5 * attn_params(192, *o, True) for o in att},
                      {m: 1e-5 * ffn_params(192, m) for m in ffn}, 0.7, {"heads": 3, "head_dim": 64, "hidden": 768})
    g = torch.Generator().manual_seed(2)
    data = SimpleNamespace(train=[(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g))],
                           num_classes=10)
    kw = {"model": "timm:deit_tiny_patch16_224", "data": data, "batches": 1, "img_size": 32, "run_root": tmp_path,
              "progress": False, "backend": "torch", "steps": 2, "repeats": 3, "latency": fake}
    with pytest.raises(SlimformerError, match="latency budget 0.001 ms is infeasible"):
        prune_timm(budget_ms=0.001, **kw)
    full = fake.predict_full(12)
    s = prune_timm(budget_ms=0.6 * full, **kw)
    assert s["predicted_ms"] <= 0.6 * full and s["params_after"] < 0.7 * s["params_before"]
    assert s["measured_ms"] > 0
