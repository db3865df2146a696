"""Paths built from names the user did not write (manifest ids, stems, paths inside files).

- :func:`safe_name` turns any text into one safe file-name component;
- :func:`child` builds an output path from such names and guarantees it stays in the output
  folder (symlinks included);
- :func:`confined` checks a file path read from a manifest: relative, and inside the folder
  the manifest describes.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PureWindowsPath

from portraitrig.errors import InputError

MAX_NAME = 120  # characters of a safe name; leaves room for suffixes under the usual 255 limit

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REPR_SURROGATE = re.compile(r"\\udc([89a-f][0-9a-f])")
_DOTS = re.compile(r"\.{2,}")
_EXT = re.compile(r"\.[A-Za-z0-9]{1,8}$")
# names Windows reserves whatever the extension ("con.png" too), compared case-insensitively
_RESERVED = frozenset({"con", "prn", "aux", "nul", "conin$", "conout$",
                       *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))})


def safe_name(text: object, fallback: str = "item", max_len: int = MAX_NAME) -> str:
    """A single file-name component made from ``text``.

    The result has only ``[A-Za-z0-9._-]``, does not start or end with a dot, has no ``..``,
    is not a name Windows reserves (``CON``, ``nul.png``, ``COM1``, ...), is 1..``max_len``
    characters long, and is a pure function of ``text`` (resumed jobs find the same names).
    Text that is already such a name is returned unchanged; any other text is cleaned and gets
    ``_`` + 8 hex digits of its hash (before a short extension: ``a/b.png`` ->
    ``a_b_1a2b3c4d.png``), so different texts do not collide. Text with nothing usable
    (``..``, ``/``) keeps only the hash after ``fallback``; ``None`` or ``""`` give
    ``fallback`` itself (made safe the same way). Bytes are decoded like file names
    (``os.fsdecode``); other objects go through ``str``.
    """
    if max_len < 32:
        raise ValueError("max_len must be at least 32")
    if text is None or text == "" or text == b"":
        fallback = str(fallback or "item")
        return fallback if _is_safe(fallback, max_len) else safe_name(fallback, "item", max_len)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = str(text)
    if _is_safe(text, max_len):
        return text
    cleaned = _DOTS.sub(".", _UNSAFE.sub("_", text)).strip(".")
    if not cleaned.strip("_."):
        cleaned = safe_name(fallback, "item", max_len)
    digest = "_" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    m = _EXT.search(cleaned)
    ext = m.group(0) if m and m.start() > 0 else ""
    stem = cleaned[: len(cleaned) - len(ext)].rstrip(".")
    return stem[: max_len - len(digest) - len(ext)] + digest + ext


def _is_safe(name: str, max_len: int) -> bool:
    return (0 < len(name) <= max_len and not _UNSAFE.search(name)
            and not name.startswith(".") and not name.endswith(".") and ".." not in name
            and name.split(".", 1)[0].lower() not in _RESERVED)


def child(out_dir: str | Path, *parts: object, source: str | Path | None = None) -> Path:
    """``out_dir / safe_name(part) / ...``; InputError when the result, with symlinks resolved,
    is not inside ``out_dir`` (a sub-folder that is a link to elsewhere). ``source`` names
    the file the parts were read from (the error names it; else ``out_dir``)."""
    if not parts:
        raise ValueError("child() needs at least one name")
    out = Path(out_dir)
    names = [safe_name(p) for p in parts]
    path = out.joinpath(*names)
    where = source if source is not None else out_dir
    root, real = _resolve(out, where), _resolve(path, where)
    if real == root or not real.is_relative_to(root):
        raise InputError(where, f"{'/'.join(names)} would be written outside the output folder {out} "
                                f"(it leads to {real})")
    return path


NAME_MAX, PATH_MAX = 255, 4096   # bytes: the longest file name / path Linux file systems take


def confined(path_text: object, root: str | Path, what: str | Path) -> Path:
    """The file ``path_text`` (a relative path read from the file ``what``) inside ``root``,
    symlinks resolved. Absolute paths, drive or UNC names, NUL, and paths that lead outside
    ``root`` raise ``InputError(what, "... points outside the results folder ...")``; a path
    that is not text, is empty or is longer than the file system allows raises InputError too.
    The file need not exist."""
    if not isinstance(path_text, str) or not path_text.strip():
        raise InputError(what, f"file name {path_text!r} is not a relative path")
    shown = _shown(path_text)
    if "\x00" in path_text:
        raise InputError(what, f"file name {shown} contains a NUL character")
    win = PureWindowsPath(path_text)
    if Path(path_text).is_absolute() or win.drive or win.root:
        raise InputError(what, f"{shown} points outside the results folder {root} (absolute path)")
    base = _resolve(Path(root), what)
    real = _resolve(base / path_text, what)
    if real == base or not real.is_relative_to(base):
        raise InputError(what, f"{shown} points outside the results folder {root}")
    if any(len(os.fsencode(part)) > NAME_MAX for part in real.parts) or len(os.fsencode(str(real))) > PATH_MAX:
        # the file system would refuse it (ENAMETOOLONG), even in Path.is_file()
        raise InputError(what, f"file name {shown} is too long")
    return real


def _resolve(path: Path, what) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InputError(what, f"cannot resolve {path} ({exc})") from None


def _shown(text: str) -> str:
    """``repr(text)`` with undecodable file-name bytes as ``\\xNN`` instead of ``\\udcNN``."""
    return _REPR_SURROGATE.sub(r"\\x\1", repr(text))


__all__ = ["MAX_NAME", "safe_name", "child", "confined"]
