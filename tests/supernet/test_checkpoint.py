from __future__ import annotations

import pytest
import torch

from slimformer._errors import SlimformerError
from slimformer._io import atomic_write_json, read_json
from slimformer.supernet import SearchSpace, Supernet, arch_key, load_supernet, parse_arch_key, save_supernet
from tests.conftest import randomize_


def test_round_trip_with_arch_logits(tiny_space, tmp_path):
    sup = randomize_(Supernet(tiny_space))
    logits = {arch_key(3, 1): torch.tensor([0.1, 0.7, -0.2])}
    path = save_supernet(tmp_path / "last.pt", sup, arch_logits=logits, meta={"epochs": 3})
    ck = load_supernet(path, space=tiny_space)
    assert ck.space == tiny_space and ck.meta == {"epochs": 3}
    assert torch.equal(ck.arch_logits["s3.b1"], logits["s3.b1"]) and parse_arch_key("s3.b1") == (3, 1)
    for k, v in sup.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k])
    # a run directory resolves to its checkpoint
    assert load_supernet(tmp_path).path == path


def test_checkpoint_errors(tiny_space, tmp_path):
    with pytest.raises(SlimformerError, match="checkpoint not found"):
        load_supernet(tmp_path / "nope.pt")
    torn = tmp_path / "torn.pt"
    save_supernet(torn, Supernet(tiny_space))
    torn.write_bytes(torn.read_bytes()[:1000])
    with pytest.raises(SlimformerError, match="not a readable checkpoint"):
        load_supernet(torn)
    plain = tmp_path / "plain.pt"
    torch.save(Supernet(tiny_space).state_dict(), plain)
    with pytest.raises(SlimformerError, match="not a slimformer supernet checkpoint.*--init-from"):
        load_supernet(plain)
    good = save_supernet(tmp_path / "good.pt", Supernet(tiny_space))
    with pytest.raises(SlimformerError, match="was trained on search space 'tiny'"):
        load_supernet(good, space=SearchSpace())


def test_atomic_json(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert read_json(p) == {"x": 1}
    assert [f.name for f in p.parent.iterdir()] == ["b.json"]  # no temp file left behind
    assert p.stat().st_mode & 0o044 == 0o044  # readable by others, like any file (not mkstemp's 0600)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SlimformerError, match="not valid JSON"):
        read_json(tmp_path / "bad.json", "table")
