"""A latency table stand-in with the LatencyTable contract (block_ms, predict with an affine correction)."""
from __future__ import annotations

from slimformer.supernet import block_macs


class FakeTable:
    kind = "estimated"
    device = "fake-device"
    backend = "fake"
    hash = "fakehash"
    name = "fake"

    def __init__(self, space, *, a: float = 1.3, b: float = 0.4, overhead: float = 0.25):
        self.space, self.space_hash = space, space.hash
        self.a, self.b, self.overhead_ms = a, b, overhead
        self.correction = {"a": a, "b": b}

    def block_ms(self, block, *, stage, width):
        tokens = (self.space.img_size // (4 * 2 ** stage)) ** 2
        extra = 0.02 * block.heads if block.kind == "mb3d" else 0.0
        return 0.0 if block.kind == "skip" else block_macs(width, block, tokens) / 2e5 + 0.01 + extra

    def predict(self, cfg, *, corrected=True):
        raw = self.overhead_ms + cfg.stem_width * 1e-3 + sum(w * 1e-4 for w in cfg.widths)
        raw += sum(self.block_ms(b, stage=si, width=cfg.stages[si].width) for si, _, b in cfg.iter_blocks())
        return self.a * raw + self.b if corrected else raw
