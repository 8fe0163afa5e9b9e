from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimformer.pruning import expand, permutations, permute_scores, reorder_supernet, taylor_scores
from slimformer.supernet import ArchConfig, StageConfig, Supernet, mb3d, mb4d
from tests.conftest import randomize_


def _batches(n, *, seed=0, classes=10, size=32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, size, size, generator=g), torch.randint(0, classes, (4,), generator=g))
            for _ in range(n)]


def _tiny_cfg(space):
    stages = (StageConfig(16, (mb4d(2.0),)), StageConfig(32, (mb4d(1.0),)), StageConfig(48, (mb4d(4.0),)),
              StageConfig(64, (mb4d(2.0), mb3d(2, 8, 16, 2.0))))
    return ArchConfig(stem_width=8, stages=stages, img_size=32, num_classes=10, distillation=True)


def test_taylor_scores_equal_hand_computation(tiny_space):
    sn = randomize_(Supernet(tiny_space), seed=3)
    net = sn.extract_subnet(_tiny_cfg(tiny_space)).eval()
    batches = _batches(2)
    imp = taylor_scores(net, batches)
    assert imp.batches == 2
    assert all(p.grad is None for p in net.parameters())  # gradients cleared, weights untouched
    blk = net.stages[3].blocks[2]  # Flat at index 1; the MB3D
    att, mlp = blk.token_mixer, blk.mlp
    H, D, E = 2, 8, 16
    head = np.zeros(H); qk = np.zeros((H, D)); v = np.zeros((H, E)); ffn = np.zeros(mlp.fc1.out_features)
    ffn4 = np.zeros(net.stages[3].blocks[0].mlp.fc1.out_channels)
    for x, y in batches:
        net.zero_grad()
        out = net(x)
        F.cross_entropy(out, y).backward()
        W, B, P, A = att.qkv.weight, att.qkv.bias, att.proj.weight, att.attention_biases
        t = lambda p, *i: float((p.detach()[i] * p.grad[i]).double().sum())
        for h in range(H):
            base = h * (2 * D + E)
            hs = t(A, h)
            for j in range(D):
                s = t(W, base + j) + t(B, base + j) + t(W, base + D + j) + t(B, base + D + j)
                qk[h, j] += abs(s); hs += s
            for j in range(E):
                s = t(W, base + 2 * D + j) + t(B, base + 2 * D + j) + t(P, slice(None), h * E + j)
                v[h, j] += abs(s); hs += s
            head[h] += abs(hs)
        for j in range(len(ffn)):
            ffn[j] += abs(t(mlp.fc1.weight, j) + t(mlp.fc1.bias, j) + t(mlp.fc2.weight, slice(None), j))
        m4 = net.stages[3].blocks[0].mlp
        for j in range(len(ffn4)):
            ffn4[j] += abs(t(m4.fc1.weight, j) + t(m4.fc1.bias, j) + t(m4.fc2.weight, slice(None), j)
                           + t(m4.norm1.weight, j) + t(m4.norm1.bias, j))
    b3, b4 = imp.blocks["s3.b1"], imp.blocks["s3.b0"]
    np.testing.assert_allclose(b3.qk, qk / 2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(b3.v, v / 2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(b3.head, head / 2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(b3.ffn, ffn / 2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(b4.ffn, ffn4 / 2, rtol=1e-6, atol=1e-12)


def test_supernet_scores_match_extracted_net(tiny_space):
    sn = randomize_(Supernet(tiny_space), seed=4).eval()
    cfg = _tiny_cfg(tiny_space)
    batches = _batches(1, seed=2)
    a = taylor_scores(sn, batches, cfg=cfg)
    b = taylor_scores(sn.extract_subnet(cfg).eval(), batches)
    blk_a, blk_b = a.blocks["s3.b1"], b.blocks["s3.b1"]
    np.testing.assert_allclose(blk_a.qk[:2, :8], blk_b.qk, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(blk_a.v[:2, :16], blk_b.v, rtol=1e-4, atol=1e-10)
    assert np.isnan(blk_a.qk[:, 8:]).all() and np.isnan(blk_a.v[:, 16:]).all()
    np.testing.assert_allclose(blk_a.ffn[:128], blk_b.ffn, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(a.blocks["s0.b0"].ffn[:32], b.blocks["s0.b0"].ffn, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("analyse_expanded", [True, False])
def test_reordering_preserves_outputs_and_sorts(tiny_space, analyse_expanded):
    sn = randomize_(Supernet(tiny_space), seed=5).eval()
    cfg = _tiny_cfg(tiny_space)
    analysed = expand(cfg, tiny_space) if analyse_expanded else cfg
    batches = _batches(2, seed=1)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = {k: sn.set_active(c)(x) for k, c in
                  (("largest", tiny_space.largest()), ("analysed", analysed), ("searched", cfg))}
    imp = taylor_scores(sn, batches, cfg=analysed)
    perms = permutations(imp)
    assert any((p.ffn != np.arange(len(p.ffn))).any() for p in perms.values())
    reorder_supernet(sn, perms)
    with torch.no_grad():
        after = {k: sn.set_active(c)(x) for k, c in
                 (("largest", tiny_space.largest()), ("analysed", analysed), ("searched", cfg))}
    torch.testing.assert_close(after["largest"], before["largest"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after["analysed"], before["analysed"], rtol=1e-4, atol=1e-5)
    if not analyse_expanded:  # unscored channels stay behind: the analysed subnet keeps its channels
        torch.testing.assert_close(after["searched"], before["searched"], rtol=1e-4, atol=1e-5)
    # scores recomputed on the reordered supernet are the permuted scores, in descending order
    sorted_imp = permute_scores(imp, perms)
    again = taylor_scores(sn, batches, cfg=analysed)
    for key, blk in sorted_imp.blocks.items():
        np.testing.assert_allclose(again.blocks[key].ffn, blk.ffn, rtol=1e-3, atol=1e-9)
        f = blk.ffn[~np.isnan(blk.ffn)]
        assert (np.diff(f) <= 0).all()
        if blk.kind == "mb3d":
            np.testing.assert_allclose(again.blocks[key].qk, blk.qk, rtol=1e-3, atol=1e-9)
            np.testing.assert_allclose(again.blocks[key].v, blk.v, rtol=1e-3, atol=1e-9)
            np.testing.assert_allclose(again.blocks[key].bias, blk.bias, rtol=1e-3, atol=1e-9)
            h = blk.head[~np.isnan(blk.head)]
            assert (np.diff(h) <= 0).all()
