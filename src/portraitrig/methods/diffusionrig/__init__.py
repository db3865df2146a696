"""portraitrig.methods.diffusionrig: the DiffusionRig renderer.

config (network + run config, presets), model (UNet + appearance encoder), sampling (schedules,
DDIM sampling / inversion), engine (whole-loop CUDA graphs), augment (lighting augmentation),
method (training: stage 1 / 2 on the shared loop), renderer (editing photos by inversion).
"""
from __future__ import annotations

from pathlib import Path

from portraitrig.methods.diffusionrig.config import PRESETS, Config
from portraitrig.methods.diffusionrig.config import DEFAULT_PRESET  # noqa: F401  (registry interface)
from portraitrig.methods.lazy import lazy_classes

DATA = "a training cache from `portraitrig prepare` (.safetensors)"


def tiny_data(directory: str | Path, n: int = 6) -> Path:
    """A tiny synthetic training cache (32 px, two 'people') for tests of the tiny presets."""
    import numpy as np
    import torch

    from portraitrig.face.model import load_default_model
    from portraitrig.face.params import RigParams
    from portraitrig.neural.cache import build_cache

    g = torch.Generator().manual_seed(0)
    p = RigParams.neutral(load_default_model(), n)
    p = p.replace(translation=p.translation + torch.randn(n, 2, generator=g) * 0.05,
                  sources=[f"clip{i % 2}.mp4#frame={i}" for i in range(n)])
    imgs = list(np.asarray(torch.rand(n, 32, 32, 3, generator=g) * 255, dtype=np.uint8))
    path = Path(directory) / "tiny_cache.safetensors"
    build_cache(imgs, p, [f"i{i}" for i in range(n)], 32).save(path)
    return path


__getattr__ = lazy_classes(__name__, Method="method:DiffusionRigMethod", Renderer="renderer:DiffusionRenderer")


__all__ = ["Config", "PRESETS", "DEFAULT_PRESET", "DATA", "tiny_data", "Method", "Renderer"]
