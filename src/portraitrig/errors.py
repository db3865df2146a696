"""Errors that name the file and the problem.

Every error a user can cause with bad input is an :class:`InputError`: its message starts with
the offending path so that batch reports (``manifest.json``) read well.
"""
from __future__ import annotations

import re
from pathlib import Path

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (the undecodable bytes of a file name that
    ``os.fsdecode`` keeps as U+DC80..U+DCFF) become ``\\xNN``, other lone surrogates ``\\uXXXX``."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: _escape(ord(m.group())), text)


def _escape(code: int) -> str:
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


class PortraitRigError(Exception):
    """Base class of every error portraitrig raises on purpose."""


class InputError(PortraitRigError):
    """An input file could not be used. ``str(err)`` is ``"<path>: <problem>"`` (made
    :func:`printable`); ``path`` keeps the path as given."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        msg = f"{self.path}: {problem}" if self.path else problem
        super().__init__(printable(msg))


class NoFaceError(InputError):
    """No face was found in an image."""


class FitError(PortraitRigError):
    """The rig could not be fitted (degenerate landmarks, diverged solve)."""
