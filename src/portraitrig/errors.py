"""Errors that name the file and the problem.

Every error a user can cause with bad input is an :class:`InputError`: its message starts with
the offending path so that batch reports (``manifest.json``) read well.
"""
from __future__ import annotations

from pathlib import Path


class PortraitRigError(Exception):
    """Base class of every error portraitrig raises on purpose."""


class InputError(PortraitRigError):
    """An input file could not be used. ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class NoFaceError(InputError):
    """No face was found in an image."""


class FitError(PortraitRigError):
    """The rig could not be fitted (degenerate landmarks, diverged solve)."""
