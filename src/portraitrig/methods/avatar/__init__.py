"""portraitrig.methods.avatar: a deformable, expression-controlled radiance field of one person's
head, learned from a short monocular video (Nerfies-style deformation with coarse-to-fine
annealing, conditioned on the rig's expression and gaze, with a spatial prior that keeps
everything away from the face mesh expression-free; hash-grid field in plain PyTorch).

config (presets), rays (orthographic rays from RigParams), field (encodings, deformation,
canonical field, spatial prior), render (volume rendering), data (frames from a video),
method (training on the shared loop), renderer (novel views and expressions).
"""
from __future__ import annotations

from pathlib import Path

from portraitrig.methods.avatar.config import DEFAULT_PRESET, PRESETS, Config  # noqa: F401  (registry interface)
from portraitrig.methods.lazy import lazy_classes

DATA = "a one-person video (~10-60 s; fitted and segmented first) or an avatar frames file (.safetensors)"


def tiny_data(directory: str | Path, n: int = 8) -> Path:
    """A tiny synthetic frames file (32 px rendered head, changing expression) for tests."""
    from portraitrig.neural.frames import tiny_frames_file

    return tiny_frames_file(directory, n)


__getattr__ = lazy_classes(__name__, Method="method:AvatarMethod", Renderer="renderer:AvatarRenderer")


__all__ = ["Config", "PRESETS", "DEFAULT_PRESET", "DATA", "tiny_data", "Method", "Renderer"]
