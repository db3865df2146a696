"""portraitrig.methods.video: a person-specific video renderer (video portraits).

A feed-forward U-Net trained on the target's own video maps rig buffers of a short window of
frames, the whole-portrait shading and the person mask to the target's frames (background,
hair, teeth and clothes learned from the video); lighting augmentation by ratio images of the
whole person teaches it to follow requested light. config (presets tiny / 256 / 512), data
(the target video in one fixed crop), condition (params -> network input), model (the U-Net),
method (training), renderer (rendering, the model folder). Reenactment:
:mod:`portraitrig.apps.reenactjob`.
"""
from __future__ import annotations

from pathlib import Path

from portraitrig.methods.video.config import DEFAULT_PRESET, PRESETS, Config  # noqa: F401  (registry interface)
from portraitrig.methods.lazy import lazy_classes

DATA = "the target's portrait video (fitted and cached into RUN/data/), or a video cache (.safetensors)"


def synthetic_frames(n: int = 8, size: int = 32, seed: int = 0):
    """A tiny synthetic 'talking head': (crops (n, size, size, 3) uint8, RigParams batch n,
    masks (n, size, size) float). The rig's own shaded render of the neutral face with a varying
    expression and head pose, over a fixed gradient background with a 'body' block."""
    import numpy as np
    import torch

    from portraitrig.face.controls import apply_controls
    from portraitrig.face.model import load_default_model
    from portraitrig.face.params import RigParams
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    p = RigParams.neutral(fm, n, crop_size=size)
    p = apply_controls(p, fm, jaw_open=0.6 * (0.5 + 0.5 * torch.sin(t * 1.3)), smile=0.3 * torch.cos(t * 0.7))
    rot = torch.stack([0.05 * torch.sin(t * 0.9), 0.08 * torch.sin(t * 0.5), torch.zeros(n)], 1)
    p = p.replace(rotation=rot, scale=p.scale * 0.8,
                  translation=p.translation + 0.02 * torch.randn(n, 2, generator=g))
    with torch.no_grad():
        b = render_buffers(p, fm, size=size, names=("shaded", "mask"))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    bg = torch.stack([0.3 + 0.4 * xx, 0.5 * yy + 0.2, 0.6 - 0.3 * xx], 0)[None].expand(n, -1, -1, -1).clone()
    body = ((yy > 0.8) & (xx > 0.2) & (xx < 0.8)).float()[None, None]
    bg = bg * (1 - body) + body * torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    m = b["mask"]
    img = (b["shaded"].clamp(0, 1) * m + bg * (1 - m)).clamp(0, 1)
    crops = (img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    masks = torch.maximum(m, body.expand(n, -1, -1, -1))[:, 0].numpy().astype(np.float32)
    return crops, p, masks


def tiny_data(directory: str | Path, n: int = 8) -> Path:
    """Tiny synthetic video data (32 px, n frames; :func:`synthetic_frames`) for tests of the
    tiny preset, with its target video (the crops in 64 x 48 frames, ``tiny_target.mp4``) so a
    tiny model can reenact; returns the cache path (its sidecar beside it)."""
    import numpy as np

    from portraitrig.capture.types import Crop
    from portraitrig.io.media import VideoWriter
    from portraitrig.methods.video.data import from_frames

    d = Path(directory)
    crops, params, masks = synthetic_frames(n, 32)
    video = d / "tiny_target.mp4"
    with VideoWriter(video, 25.0, crf=10) as w:
        for c in crops:
            w.write(np.pad(c, ((8, 8), (16, 16), (0, 0)), mode="edge"))
    crop = Crop(np.array([[1.0, 0.0, -16.0], [0.0, 1.0, -8.0]]), 32, (64, 48))
    return from_frames(crops, params, masks, fps=25.0, crop=crop, video=str(video)).save(d / "tiny_video.safetensors")


__getattr__ = lazy_classes(__name__, Method="method:VideoMethod", Renderer="renderer:VideoRenderer")


__all__ = ["Config", "PRESETS", "DEFAULT_PRESET", "DATA", "tiny_data", "synthetic_frames", "Method", "Renderer"]
