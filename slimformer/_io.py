"""Small file helpers shared by every subpackage: atomic writes, run directories, the cache dir."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
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
    """Strict JSON (no NaN or Infinity, which other readers refuse): a non-finite number is one clear error."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    except ValueError:
        raise SlimformerError(f"refusing to write {path}: it would hold a NaN or infinite number "
                              f"({_first_non_finite(obj)})") from None
    return atomic_write_text(path, text + "\n")


def _first_non_finite(obj: Any, where: str = "") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{where or 'value'} = {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _first_non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return ""


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` through :func:`atomic_write_bytes`, so a kill never leaves a torn checkpoint."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def figure_png(fig, *, dpi: float | None = None) -> bytes:
    """A matplotlib figure as PNG bytes (for :func:`atomic_write_bytes`); the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


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


_MADE: list[tuple[Path, Path | None]] = []  # run dirs this process created, with the new parent folder if any
SETUP_FILES = {"config.json"}  # what a run dir holds before any result: a run with only these has none


def make_run_dir(root: str | os.PathLike | None, prefix: str) -> Path:
    """Create ``root/<prefix>-<timestamp>`` (``runs/`` by default) and return it; never reuses a folder."""
    base = Path(root) if root is not None else Path("runs")
    if base.exists() and not base.is_dir():
        raise SlimformerError(f"{base} is a file, not a folder for run directories")
    new_base = None if base.exists() else _first_missing(base)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = base / (f"{prefix}-{stamp}" if i == 0 else f"{prefix}-{stamp}-{i}")
        try:
            d.mkdir(parents=True, exist_ok=False)
            _MADE.append((d, new_base))
            return d
        except FileExistsError:
            continue
    raise SlimformerError(f"could not create a run directory under {base}")


def _first_missing(path: Path) -> Path:
    """The outermost folder of ``path`` that does not exist yet (``mkdir(parents=True)`` creates it)."""
    path = path.absolute()
    while not path.parent.exists():
        path = path.parent
    return path


def run_dirs_made() -> int:
    """A mark for :func:`discard_new_run_dirs`: how many run dirs this process has created so far."""
    return len(_MADE)


def discard_new_run_dirs(mark: int) -> list[Path]:
    """Remove the run dirs created since ``mark`` that hold no result (nothing but :data:`SETUP_FILES` and
    temporary files), and the parent folders created with them when left empty. Called when a command fails
    on its inputs, so that it leaves nothing behind; returns what was removed."""
    removed = []
    for d, new_base in reversed(_MADE[mark:]):
        files = [f for f in d.rglob("*") if f.is_file()] if d.is_dir() else []
        if any(f.name not in SETUP_FILES and not f.name.startswith(".") for f in files):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        _remove_empty(d.parent, new_base)
    del _MADE[mark:]
    return removed


def check_out_dir(path: str | os.PathLike, *, what: str = "output folder", allow: tuple[str, ...] = ()) -> Path:
    """An output folder the tool may write into: new, empty, or holding only files named in ``allow``
    (what this tool writes there, e.g. a previous export). Anything else is the user's: refuse, in one
    line, rather than overwrite it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SlimformerError(f"{what} {p} is an existing file, not a folder")
    if p.is_dir():
        foreign = sorted(f.name for f in p.iterdir() if f.name not in allow and not f.name.startswith("."))
        if foreign:
            raise SlimformerError(f"{what} {p} already holds files this command did not write "
                                  f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): "
                                  "choose a new or empty folder")
    return p


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, busy: str):
    """Hold an exclusive lock on the file ``path`` (POSIX ``flock``), or raise ``SlimformerError(busy)`` at
    once when another process holds it (``{pid}`` in ``busy`` becomes the holder's pid). The file holds
    the holder's pid and is removed on release; a lock on a file already unlinked by its last holder is
    retried, so two processes never both hold it."""
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    path = Path(path)
    new_dir = None if path.parent.exists() else _first_missing(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SlimformerError(busy.format(pid=pid)) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: try again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(path.parent, new_dir)


def _remove_empty(folder: Path, top: Path | None) -> None:
    """Remove ``folder`` and its parents up to ``top`` (the outermost one this process created) while empty."""
    folder = folder.absolute()
    while top is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        if folder == top:
            break
        folder = folder.parent
