"""Finding tables by name: the user's table folder, then the tables shipped in the package."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .._errors import SlimformerError
from .._io import cache_dir
from ._table import LatencyTable

SHIPPED_DIR = Path(__file__).parent / "tables"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def user_lut_dir(lut_dir: str | Path | None = None) -> Path:
    """Where built and imported tables live: ``lut_dir`` or ``cache_dir()/luts``."""
    return Path(lut_dir) if lut_dir is not None else cache_dir() / "luts"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or "") or name.endswith(".json"):
        raise SlimformerError(f"invalid table name {name!r}: use letters, digits, '.', '_', '+' and '-' "
                              f"(e.g. cpu-ort)")
    return name


def table_path(name: str, lut_dir: str | Path | None = None) -> Path:
    """Where a table called ``name`` is written in the user folder."""
    return user_lut_dir(lut_dir) / f"{check_name(name)}.json"


def partial_path(name: str, lut_dir: str | Path | None = None) -> Path:
    """Where an unfinished build of ``name`` keeps its entries until it completes."""
    return user_lut_dir(lut_dir) / f"{check_name(name)}.partial.json"


def _looks_like_path(s: str) -> bool:
    return s.endswith(".json") or "/" in s or "\\" in s or Path(s).is_file()


def get_table(name_or_path: str | Path, *, lut_dir: str | Path | None = None) -> LatencyTable:
    """A table by path, or by name from the user folder (``--lut-dir``) or the shipped tables."""
    s = str(name_or_path)
    if _looks_like_path(s):
        return LatencyTable.load(s)
    check_name(s)
    for folder in (user_lut_dir(lut_dir), SHIPPED_DIR):
        p = folder / f"{s}.json"
        if p.is_file():
            return LatencyTable.load(p)
    if partial_path(s, lut_dir).is_file():
        raise SlimformerError(f"the build of latency table {s!r} did not finish; resume it with "
                              f"`slimformer lut build --device {s}`")
    if s.startswith("cpu"):
        backend = "torch" if "torch" in s else "onnxruntime"
        raise SlimformerError(f"no latency table {s!r} on this machine yet: build it with "
                              f"`slimformer lut build --device {s} --backend {backend}` (a few minutes), "
                              f"or pass --build to build it now")
    names = [t["name"] for t in list_tables(lut_dir)]
    raise SlimformerError(f"unknown latency table {s!r}: available: {', '.join(names) or 'none'} "
                          f"(or give the path of a table JSON file)")


def _header(p: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("slimformer.lut/"):
        return None
    return d


def list_tables(lut_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """``{name, kind, device, backend, path, source}`` of every user table, then every shipped one.

    A user table shadows a shipped one of the same name (``get_table`` finds it first)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for source, folder in (("user", user_lut_dir(lut_dir)), ("shipped", SHIPPED_DIR)):
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("*.json")):
            if p.name.endswith(".partial.json") or p.name.startswith("."):
                continue
            d = _header(p)
            if d is None or p.stem in seen:
                continue
            seen.add(p.stem)
            out.append({"name": p.stem, "kind": d.get("kind"), "device": d.get("device"),
                        "backend": d.get("backend"), "entries": len(d.get("entries") or {}),
                        "space": (d.get("space") or {}).get("name"), "path": str(p), "source": source})
    return out


def build_target(device: str, lut_dir: str | Path | None = None) -> tuple[str, Path]:
    """``(name, folder)`` a build of ``--device`` writes to: a name goes to the user folder, a path
    (``.../NAME.json``) to its own folder."""
    if _looks_like_path(device):
        p = Path(device)
        if p.suffix != ".json":
            raise SlimformerError(f"a table path must end in .json, got {device!r}")
        return check_name(p.stem), p.parent
    return check_name(device), user_lut_dir(lut_dir)
