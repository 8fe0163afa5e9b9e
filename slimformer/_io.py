"""Small file helpers shared by every subpackage: atomic writes, run directories, the cache dir."""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ._errors import SlimformerError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` through :func:`atomic_write_bytes`, so a kill never leaves a torn checkpoint."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, turning a missing or malformed file into one clear :class:`SlimformerError`."""
    path = Path(path)
    if not path.is_file():
        raise SlimformerError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlimformerError(f"{what} {path} is not valid JSON ({e.__class__.__name__}: {e})") from None


def cache_dir() -> Path:
    """Per-user cache: ``$SLIMFORMER_CACHE`` or ``~/.cache/slimformer``."""
    root = os.environ.get("SLIMFORMER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "slimformer"


def make_run_dir(root: str | os.PathLike | None, prefix: str) -> Path:
    """Create ``root/<prefix>-<timestamp>`` (``runs/`` by default) and return it; never reuses a folder."""
    base = Path(root) if root is not None else Path("runs")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = base / (f"{prefix}-{stamp}" if i == 0 else f"{prefix}-{stamp}-{i}")
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    raise SlimformerError(f"could not create a run directory under {base}")
