"""``LatencyTable``: per-op latencies of one device, the file format, and fast prediction.

A table is one JSON file (schema ``slimformer.lut/1``)::

    {"schema": "slimformer.lut/1", "name": "cpu-ort", "kind": "measured", "device": "cpu-ort",
     "backend": "onnxruntime", "runtime": {"onnxruntime": "1.31.1", ...}, "threads": 1, "batch": 1,
     "cpu": "...", "date": "...", "space": {...}, "space_hash": "...", "overhead_ms": 0.01,
     "correction": {"scale": 1.02, "offset_ms": -0.9, "per_op_ms": 0.1, ...} | null, "error": {...} | null,
     "entries": {"mb4d-r56-c48-mlp192": {"median_ms": 0.41, "spread_ms": 0.01, "count": 25}, ...}}

``predict(cfg)`` = sum of the entries of ``arch_ops(cfg)`` + ``overhead_ms`` (the *raw* sum), then (by
default) the fitted correction ``scale * raw + offset_ms + per_op_ms * n_ops``, where ``n_ops`` is the
number of ops of ``cfg``: an op inside a network costs a little more than the same op measured alone
(its weights are no longer in cache, the runtime moves data between ops), and that extra cost is paid
per op, not per millisecond. Entries hold the op's latency with the per-call overhead removed, so that
a sum of many ops carries the overhead once. Prediction caches per-block costs keyed by plain numbers
(the per-op term folded in), so a search can ask for well over 100 000 predictions a second.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from .._errors import ConfigError, SlimformerError
from .._io import atomic_write_json, read_json
from ..supernet import ArchConfig, BlockConfig, SearchSpace, flatten_at, space_from_dict, stage_resolution
from ._keys import FAMILY_KEYS, arch_ops, block_keys, ds_key, flat_key, head_key, stem_key

SCHEMA = "slimformer.lut/2"
# format 1: entries are ops timed alone; format 2 adds ``meta["context"]`` (per-kind in-context factors
# already applied to ``median_ms``, the op alone kept as ``alone_ms``). Format-1 tables load unchanged.
READABLE = ("slimformer.lut/1", SCHEMA)
TABLE_KINDS = ("measured", "imported", "estimated")


def _num(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, got {x!r}")
    return float(x)


def _entry(key: str, e: Any) -> dict[str, Any]:
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        e = {"median_ms": e}
    if not isinstance(e, dict) or "median_ms" not in e:
        raise ValueError(f"entry {key!r} must be an object with 'median_ms'")
    out = dict(e)
    out["median_ms"] = _num(e["median_ms"], f"entry {key!r} median_ms")
    if out["median_ms"] < 0:
        raise ValueError(f"entry {key!r} has a negative latency")
    out["spread_ms"] = _num(e.get("spread_ms", 0.0), f"entry {key!r} spread_ms")
    out["count"] = int(_num(e.get("count", 0), f"entry {key!r} count"))
    return out


class LatencyTable:
    """Latencies of every op of a search space on one device (see the module docstring)."""

    def __init__(self, *, name: str, kind: str, device: str, backend: str, space: SearchSpace,
                 entries: dict[str, Any], overhead_ms: float = 0.0, correction: dict | None = None,
                 error: dict | None = None, threads: int | None = None, batch: int = 1, clock: str = "wall",
                 cpu: str | None = None, runtime: dict | None = None, date: str | None = None,
                 meta: dict | None = None, path: str | Path | None = None):
        if kind not in TABLE_KINDS:
            raise ValueError(f"table kind must be one of {', '.join(TABLE_KINDS)}, got {kind!r}")
        self.name, self.kind, self.device, self.backend = str(name), kind, str(device), str(backend)
        self.space = space
        self.entries = {str(k): _entry(str(k), v) for k, v in entries.items()}
        self.overhead_ms = _num(overhead_ms, "overhead_ms")
        if correction is not None:
            correction = dict(correction)
            correction["scale"] = _num(correction.get("scale"), "correction scale")
            correction["offset_ms"] = _num(correction.get("offset_ms", 0.0), "correction offset_ms")
            correction["per_op_ms"] = _num(correction.get("per_op_ms", 0.0), "correction per_op_ms")
        self.correction = correction
        self.error = dict(error) if error is not None else None
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
        self.threads, self.batch, self.clock, self.cpu = threads, int(batch), clock, cpu
        self.runtime = dict(runtime or {})
        self.date = date
        self.meta = dict(meta or {})
        self.path = Path(path) if path is not None else None
        self._ms = {k: e["median_ms"] for k, e in self.entries.items()}
        self.clear_cache()

    @classmethod
    def from_entries(cls, entries: dict[str, Any], **kw) -> LatencyTable:
        """A table in memory: ``entries`` maps op keys to ms (or entry dicts); other keywords as the constructor."""
        return cls(entries=entries, **kw)

    # ----------------------------------------------------------------- identity
    @property
    def space_hash(self) -> str:
        return self.space.hash

    @property
    def hash(self) -> str:
        """Content hash of what predictions depend on (entries, overhead, correction, device, space)."""
        blob = json.dumps({"device": self.device, "backend": self.backend, "kind": self.kind,
                           "threads": self.threads, "batch": self.batch, "clock": self.clock, "space": self.space_hash,
                           "overhead_ms": self.overhead_ms, "correction": self.correction,
                           "entries": sorted(self._ms.items())}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"LatencyTable({self.name!r}, kind={self.kind!r}, device={self.device!r}, "
                f"backend={self.backend!r}, {len(self.entries)} entries, space={self.space.name!r})")

    def mismatch(self, *, threads: int | None = None, batch: int | None = None,
                 backend: str | None = None) -> str | None:
        """One line when the setting asked for (``None``: not said) differs from the table's own, else ``None``."""
        own = {"threads": self.threads or 1, "batch": self.batch, "backend": self.backend}
        want = {"threads": threads, "batch": batch, "backend": backend}
        diff = [f"{k} {want[k]} (table: {own[k]})" for k in own if want[k] is not None and want[k] != own[k]]
        if not diff or self.kind != "measured":
            return None if not diff else (f"warning: table {self.name!r} is {self.kind} for {self.device!r}; "
                                          f"used at {', '.join(diff)}: its latencies do not carry over")
        return (f"warning: table {self.name!r} was measured at {own['threads']} thread(s), batch {own['batch']}, "
                f"{own['backend']}; used at {', '.join(diff)}: its latencies do not carry over (build one there)")

    # ----------------------------------------------------------------- lookups
    def ms(self, key: str) -> float:
        """The latency of one op key (overhead removed); a missing key is one clear error."""
        try:
            return self._ms[key]
        except KeyError:
            raise SlimformerError(
                f"latency table {self.name!r} has no entry for op {key!r}: it was built for search space "
                f"{self.space.name!r} (hash {self.space_hash}); is the architecture in that space?") from None

    def typical_error(self) -> dict[str, Any] | None:
        """The table's typical prediction error in one schema for every kind of table, or None without figures.

        ``{"pct", "metric", "method", "samples", "worst_pct", "rank_corr", "rank_metric"}``: for an estimated table
        the leave-one-out median absolute % error over published models; for a measured or imported one the
        MAPE of the calibration subnets measured end to end (with the table's correction when it has one)."""
        err = self.error
        if not isinstance(err, dict) or not err:
            return None
        if "median_abs_pct" in err:  # estimated: leave-one-model-out against published latencies
            return {"pct": float(err["median_abs_pct"]), "metric": "median absolute error",
                    "method": err.get("method", "leave-one-model-out"), "samples": err.get("n_models"),
                    "worst_pct": err.get("worst_abs_pct"), "rank_corr": err.get("spearman_rho"),
                    "rank_metric": "Spearman rho"}
        fig = err.get("corrected") or err.get("uncorrected")
        if not isinstance(fig, dict) or "mape_pct" not in fig:
            return None
        return {"pct": float(fig["mape_pct"]), "metric": "mean absolute error",
                "method": "calibration subnets measured end to end" + (" (corrected)" if err.get("corrected") else ""),
                "samples": err.get("samples"), "worst_pct": fig.get("worst_pct"), "rank_corr": fig.get("kendall_tau"),
                "rank_metric": "Kendall tau"}

    def breakdown(self, cfg: ArchConfig) -> list[tuple[str, float]]:
        """``(op key, ms)`` for every op of ``cfg`` in network order (overhead and correction not included)."""
        return [(k, self.ms(k)) for k in arch_ops(cfg)]

    def _caches(self, per_op: float) -> dict:
        """Cached sums for one per-op add-on (0 for raw sums): ``{"stem", "ds", "flat", "head", "blocks", ...}``."""
        c = self._cache.get(per_op)
        if c is None:
            c = self._cache[per_op] = {"per_op": per_op, "stem": {}, "ds": {}, "flat": {}, "head": {}, "blocks": {}}
        return c

    def _stage_blocks(self, c: dict, res: int, w: int) -> dict:
        d = c["blocks"].get((res, w))
        if d is None:
            d = c["blocks"][(res, w)] = {}
        return d

    def _miss(self, c: dict, d: dict, ck, keys) -> float:
        v = d[ck] = sum(self.ms(k) for k in keys) + c["per_op"] * len(keys)
        return v

    def block_ms(self, block: BlockConfig, *, stage: int, width: int, corrected: bool = False) -> float:
        """One block of that kind and dims in ``stage`` of this table's space (skip = 0; no flatten).

        ``corrected=True`` gives the block's share of the corrected prediction (``scale * ms + per_op_ms *
        ops``), so that block costs add up to ``predict(cfg)`` less a constant."""
        c = self.correction
        res = stage_resolution(self.space.img_size, stage)
        if corrected and c is not None:
            return c["scale"] * self.block_ms(block, stage=stage, width=width) + c["per_op_ms"] * len(
                block_keys(block, res=res, width=width))
        b = block
        if b.kind == "mb4d":
            ck = b.mlp_ratio
        elif b.kind == "mb3d":
            ck = (b.mlp_ratio, b.heads, b.qk_dim, b.v_dim)
        else:
            return 0.0
        c0 = self._caches(0.0)
        d = self._stage_blocks(c0, res, width)
        v = d.get(ck)
        return v if v is not None else self._miss(c0, d, ck, block_keys(b, res=res, width=width))

    def raw_ms(self, cfg: ArchConfig) -> float:
        """Sum of the entries of ``cfg`` plus the overhead (no correction). Mirrors :func:`arch_ops`."""
        return self._sum(cfg, 0.0) + self.overhead_ms

    def n_ops(self, cfg: ArchConfig) -> int:
        """How many ops ``cfg`` runs (the count the correction's per-op term multiplies)."""
        return len(arch_ops(cfg))

    def _sum(self, cfg: ArchConfig, per_op: float) -> float:
        """Sum over the ops of ``cfg`` of (entry + ``per_op``).

        The hot path of every search: per-block sums are cached in dicts keyed by plain numbers."""
        if cfg.family in FAMILY_KEYS:
            return self._sum_groups(cfg, per_op)
        c = self._caches(per_op)
        st = cfg.stages
        img = cfg.img_size
        w = st[0].width
        ck = (img, cfg.in_chans, cfg.stem_width, w)
        total = c["stem"].get(ck)
        if total is None:
            total = self._miss(c, c["stem"], ck, (stem_key(*ck),))
        ds, blocks = c["ds"], c["blocks"]
        tokens, last, prev = False, len(st) - 1, w
        for si in range(len(st)):
            w, stage_blocks = st[si].width, st[si].blocks
            res = stage_resolution(img, si)
            at = flatten_at(st[si].kinds, tokens_in=tokens, last=si == last)
            if si:
                ck = (res, prev, w, tokens)
                v = ds.get(ck)
                total += v if v is not None else self._miss(c, ds, ck, (ds_key(res * 2, prev, w, tokens),))
            d = blocks.get((res, w))
            if d is None:
                d = self._stage_blocks(c, res, w)
            if at is not None:  # the flatten's place in the stage does not change the sum
                total += self._flat(c, res, w)
            for b in stage_blocks:
                k = b.kind
                if k == "mb4d":
                    ck = b.mlp_ratio
                elif k == "mb3d":
                    ck = (b.mlp_ratio, b.heads, b.qk_dim, b.v_dim)
                else:
                    continue
                v = d.get(ck)
                total += v if v is not None else self._miss(c, d, ck, block_keys(b, res=res, width=w))
            tokens, prev = at is not None, w
        ck = (res, w, cfg.num_classes, cfg.distillation)
        v = c["head"].get(ck)
        total += v if v is not None else self._miss(c, c["head"], ck, (head_key(res * res, *ck[1:]),))
        return total

    def _sum_groups(self, cfg, per_op: float) -> float:
        """``_sum`` for another family: its ``arch_groups`` name the cached units (stem, blocks, ...)."""
        c = self._caches(per_op).setdefault("groups", {})
        total = 0.0
        for ck, keys in FAMILY_KEYS[cfg.family].arch_groups(cfg):
            v = c.get(ck)
            total += v if v is not None else self._miss(self._caches(per_op), c, ck, keys())
        return total

    def refresh(self) -> None:
        """Re-read ``entries`` after editing them in place (and forget cached sums)."""
        self._ms = {k: e["median_ms"] for k, e in self.entries.items()}
        self.clear_cache()

    def _flat(self, c: dict, res: int, w: int) -> float:
        v = c["flat"].get((res, w))
        return v if v is not None else self._miss(c, c["flat"], (res, w), (flat_key(res * res, w),))

    def clear_cache(self) -> None:
        """Forget cached per-block sums (after editing ``entries`` or ``correction`` in place)."""
        self._cache: dict[float, dict] = {}

    def correct(self, raw_ms: float, n_ops: int = 0) -> float:
        """The correction applied to a raw sum of ``n_ops`` ops."""
        c = self.correction
        return raw_ms if c is None else c["scale"] * raw_ms + c["offset_ms"] + c["per_op_ms"] * n_ops

    def predict(self, cfg: ArchConfig, *, corrected: bool = True) -> float:
        """Predicted latency of ``cfg`` in ms: entries + overhead, then the correction if asked and present.

        Equal to ``correct(raw_ms(cfg), n_ops(cfg))``; the per-op term rides in the cached block sums."""
        c = self.correction
        if not corrected or c is None:
            return self.raw_ms(cfg)
        a = c["scale"]
        return a * (self._sum(cfg, c["per_op_ms"] / a) + self.overhead_ms) + c["offset_ms"]

    # ----------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA, "name": self.name, "kind": self.kind, "device": self.device,
            "backend": self.backend, "runtime": self.runtime, "threads": self.threads, "batch": self.batch,
            "clock": self.clock,
            "cpu": self.cpu, "date": self.date, "space": self.space.to_dict(), "space_hash": self.space_hash,
            "overhead_ms": self.overhead_ms, "correction": self.correction, "error": self.error,
        }
        d.update({k: v for k, v in self.meta.items() if k not in d and k != "entries"})
        d["entries"] = self.entries
        return d

    def save(self, path: str | Path) -> Path:
        """Write the table atomically (a kill never leaves a torn file)."""
        self.path = atomic_write_json(path, self.to_dict())
        return self.path

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "latency table", path: str | Path | None = None) -> LatencyTable:
        if not isinstance(d, dict) or "schema" not in d:
            raise SlimformerError(f"{source} is not a slimformer latency table (no 'schema': {SCHEMA!r})")
        schema = d["schema"]
        if schema not in READABLE:
            what = ("a latency table of another version" if str(schema).startswith("slimformer.lut/")
                    else "not a latency table")
            raise SlimformerError(f"{source} is {what}: schema {schema!r}, this slimformer reads {' or '.join(map(repr, READABLE))}")
        if d.get("complete") is False:
            raise SlimformerError(f"{source} is an unfinished build; resume it with `slimformer lut build`")
        try:
            missing = [k for k in ("name", "kind", "device", "backend", "space", "entries") if k not in d]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            if not isinstance(d["entries"], dict) or not d["entries"]:
                raise ValueError("'entries' must be a non-empty object")
            space = space_from_dict(d["space"])
            if d.get("space_hash") not in (None, space.hash):
                raise ValueError(f"space_hash {d['space_hash']!r} does not match its space ({space.hash})")
            known = {"schema", "name", "kind", "device", "backend", "runtime", "threads", "batch", "clock", "cpu", "date",
                     "space", "space_hash", "overhead_ms", "correction", "error", "entries"}
            return cls(name=d["name"], kind=d["kind"], device=d["device"], backend=d["backend"], space=space,
                       entries=d["entries"], overhead_ms=d.get("overhead_ms", 0.0), correction=d.get("correction"),
                       error=d.get("error"), threads=d.get("threads"), batch=d.get("batch", 1),
                       clock=d.get("clock", "wall"), cpu=d.get("cpu"),
                       runtime=d.get("runtime"), date=d.get("date"),
                       meta={k: v for k, v in d.items() if k not in known}, path=path)
        except (ValueError, TypeError, AttributeError, ConfigError) as e:
            raise SlimformerError(f"{source} is malformed: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table; a missing, truncated, malformed or foreign file is one clear :class:`SlimformerError`."""
        path = Path(path)
        return cls.from_dict(read_json(path, "latency table"), source=f"latency table {path}", path=path)
