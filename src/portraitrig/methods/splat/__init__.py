"""portraitrig.methods.splat: a real-time avatar of one person's head as 3D Gaussians rigged to
the face mesh (they follow the rig's expression and gaze) plus free Gaussians rigid with the head
(hair, ears, neck, shoulders), learned from a short monocular video; rendered by a plain PyTorch
rasterizer (the reference, any device) or gsplat's CUDA kernels (the fast path).

config (presets), raster (projection under the rig's camera, rasterizers), gaussians (the model,
what one frame's rig makes of it), method (training on the shared loop), renderer (novel views
and expressions, shared with the radiance-field avatar: ``portraitrig avatar``).
"""
from __future__ import annotations

from pathlib import Path

from portraitrig.methods.lazy import lazy_classes
from portraitrig.methods.splat.config import DEFAULT_PRESET, PRESETS, Config  # noqa: F401  (registry interface)

DATA = "a one-person video (~10-60 s; fitted and segmented first) or an avatar frames file (.safetensors)"


def tiny_data(directory: str | Path, n: int = 8) -> Path:
    """A tiny synthetic frames file (32 px rendered head, changing expression) for tests."""
    from portraitrig.neural.frames import tiny_frames_file

    return tiny_frames_file(directory, n)


__getattr__ = lazy_classes(__name__, Method="method:SplatMethod", Renderer="renderer:SplatRenderer")


__all__ = ["Config", "PRESETS", "DEFAULT_PRESET", "DATA", "tiny_data", "Method", "Renderer"]
