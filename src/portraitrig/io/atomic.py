"""Atomic writes: a file appears complete or not at all (write to a temp file in the same
folder, fsync, rename, fsync the folder so the rename itself survives a crash).

Temporary files are named ``.<name>.tmp-<8 random>.<suffix>`` (``<suffix>`` = the target's,
or ``.tmp``); a write killed before its rename leaves one behind, which
:func:`clean_orphans` removes."""
from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from portraitrig.errors import printable

TEMP_MARK = ".tmp-"
# ours: ".<name>.tmp-<8 random><suffix>"; earlier versions wrote ".<name>.<8 random><suffix>"
_TEMP = re.compile(r"^\.(?P<name>.+?)(?P<mark>\.tmp-|\.)[a-z0-9_]{8}(?P<suffix>\.[^.]+)$", re.DOTALL)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the target's suffix (libraries pick formats from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file :func:`atomic_path` makes,
    ``.<name>.tmp-<8 random><suffix>``, or made before the ``.tmp-`` mark,
    ``.<name>.<8 random><suffix>`` with the name's own suffix."""
    m = _TEMP.match(name)
    return bool(m) and (m.group("mark") == TEMP_MARK or m.group("name").endswith(m.group("suffix")))


def clean_orphans(folder: str | Path, older_than_s: float = 3600.0, recursive: bool = False) -> list[Path]:
    """Delete temporary files of :func:`atomic_path` in ``folder`` (and sub-folders with
    ``recursive``) not modified for ``older_than_s`` seconds: the leftovers of writes that
    were killed. Only regular files with our temp-name pattern are touched (never symlinks,
    never other files). Returns the removed paths; a missing folder removes nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for entry in (folder.rglob(".*") if recursive else folder.glob(".*")):
        if not is_temp_name(entry.name):
            continue
        try:
            st = entry.lstat()
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than_s:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: the rename still happened
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON (ASCII, valid UTF-8 for any reader): numpy values and paths are
    converted, and text holding undecodable file-name bytes is shown as ``\\xNN``
    (see :func:`portraitrig.errors.printable`)."""
    return write_text(path, json.dumps(_printable_tree(obj), indent=2, sort_keys=False, default=_json_default) + "\n")


def _printable_tree(o: Any) -> Any:
    """A copy of the dicts, lists and tuples in ``o`` with every string (keys too) made
    :func:`printable`."""
    if isinstance(o, str):
        return printable(o)
    if isinstance(o, dict):
        return {(_printable_tree(k) if isinstance(k, str) else k): _printable_tree(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_printable_tree(v) for v in o]
    return o


def _json_default(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return _printable_tree(o.item())
        if isinstance(o, np.ndarray):
            return _printable_tree(o.tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return printable(str(o))
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_image(path: str | Path, image, quality: int = 95) -> Path:
    """Write an (H, W, 3|4) uint8 or float [0,1] image (PNG/JPEG/WebP by suffix), atomically."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    path = Path(path)
    with atomic_path(path) as tmp:
        # PNG at zlib level 1: 3x faster to write than PIL's default (6), ~10 % larger
        suffix = path.suffix.lower()
        kw = {"quality": quality} if suffix in (".jpg", ".jpeg", ".webp") else (
            {"compress_level": 1} if suffix == ".png" else {})
        Image.fromarray(arr).save(tmp, **kw)
    return path
