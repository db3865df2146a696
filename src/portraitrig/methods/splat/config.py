"""Typed configuration of the Gaussian avatar (3D Gaussians rigged to the face mesh, plus free
Gaussians rigid with the head): the model (:class:`SplatConfig`) and the whole training run
(:class:`Config`), with presets ``tiny`` (CPU seconds, 32 px), ``256`` and ``512``.

Units: head space is the face model's (model units; the face spans about -1.1..1.1 in x). Mesh
Gaussians live in their triangle's frame, in units of the triangle's size (see
:mod:`portraitrig.methods.splat.gaussians`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from portraitrig.config import DictConfig
from portraitrig.neural.frames import FramesOptions
from portraitrig.training.config import TrainConfig


@dataclass
class SplatConfig(DictConfig):
    image_size: int = 256
    cond_dim: int = 68               # expression coefficients + gaze (4); set from the face model
    per_face: int = 16               # Gaussians bound to each face-mesh triangle (they move with the rig)
    free: int = 40000                # Gaussians rigid with the head (hair, ears, neck, shoulders, mouth inside)
    feature_dim: int = 16            # learned feature per mesh Gaussian (input of the expression MLP)
    hidden: int = 128                # expression MLP width
    layers: int = 3                  # expression MLP depth (hidden layers)
    body: int = 0                    # Gaussians fixed to the camera (shoulders, torso, hair lying on them):
                                     # they keep still as the head moves and turns (0: everything beyond
                                     # the face moves rigidly with the head)
    use_prior: bool = True           # False: the free Gaussians see the expression too (ablation)
    background_res: int = 64         # learned background image (crop space)
    max_offset: float = 1.0          # mesh Gaussians: free to move this many triangle sizes off their triangle
    trusted_yaw: float = 30.0        # head turns (degrees) the training video covers (set at creation)
    trusted_pitch: float = 15.0
    clamp_condition: bool = False    # the expression MLP sees each condition value clamped to the range the
                                     # training frames spanned (cond_low..cond_high); the mesh itself follows
                                     # the whole expression. Off: it extrapolates, which on held-out frames
                                     # beyond that range can paint blotches of colour on the face
    cond_low: tuple[float, ...] = ()   # per condition value, its range over the training frames (set at
    cond_high: tuple[float, ...] = ()  # creation; empty in models made before it: nothing is clamped)

    def validate(self) -> None:
        if not 16 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be in 16..2048, got {self.image_size}")
        if not (1 <= self.per_face <= 256 and 0 <= self.free <= 2_000_000 and 0 <= self.body <= 2_000_000):
            raise ValueError("per_face must be in 1..256, free and body in 0..2000000")
        if not (0 <= self.feature_dim <= 256 and 1 <= self.hidden <= 1024 and 1 <= self.layers <= 8
                and 0 <= self.cond_dim <= 1024):
            raise ValueError("network sizes out of range")
        if not (4 <= self.background_res <= 1024 and self.max_offset > 0):
            raise ValueError("background_res in 4..1024, max_offset > 0")
        lo, hi = self.cond_low, self.cond_high
        if len(lo) != len(hi) or (lo and len(lo) != self.cond_dim):
            raise ValueError(f"cond_low and cond_high must both be empty or have cond_dim ({self.cond_dim}) values")
        if not all(math.isfinite(a) and math.isfinite(b) and a <= b for a, b in zip(lo, hi)):
            raise ValueError("cond_low..cond_high must be finite ranges (low <= high)")


@dataclass
class Config(FramesOptions):
    """Everything ``portraitrig train splat VIDEO`` takes."""

    model: SplatConfig = field(default_factory=SplatConfig, metadata={"cli": False})
    train: TrainConfig = field(default_factory=TrainConfig)
    ssim_weight: float = field(default=0.2, metadata={"help": "weight of the (1 - SSIM) image loss"})
    mask_weight: float = field(default=0.1, metadata={"help": "weight of the opacity-vs-person-mask loss"})
    background_augment: float = field(default=0.0, metadata={"help": (
        "share of items whose frame is laid over a random colour by its person mask and rendered over "
        "that colour instead of the learned background: teaches the opacity the person mask (a clean "
        "RGBA, the person alone over black), 0..1"), "metavar": "P"})
    offset_weight: float = field(default=0.01, metadata={"help": "weight of the penalty on mesh Gaussians "
                                                                  "leaving their triangle"})
    scale_weight: float = field(default=0.01, metadata={"help": "weight of the penalty on Gaussians larger "
                                                                 "than their triangle / 5 % of the head"})
    expression_weight: float = field(default=0.01, metadata={"help": "weight of the penalty on the "
                                                                      "expression MLP's offsets"})
    backend: str = field(default="auto", metadata={"help": "rasterizer: auto (gsplat on CUDA when installed), "
                                                           "torch (the plain reference) or gsplat",
                                                   "choices": ("auto", "torch", "gsplat")})

    def validate(self) -> None:
        self.model.validate()
        self.validate_frames()
        if min(self.ssim_weight, self.mask_weight, self.offset_weight, self.scale_weight,
               self.expression_weight) < 0:
            raise ValueError("loss weights must not be negative")
        if not 0 <= self.background_augment <= 1:
            raise ValueError(f"background_augment is a share of items, in [0, 1]; got {self.background_augment}")
        if self.backend not in ("auto", "torch", "gsplat"):
            raise ValueError(f"backend must be auto, torch or gsplat, got {self.backend!r}")


def _tiny() -> Config:
    return Config(
        model=SplatConfig(image_size=32, per_face=1, free=256, feature_dim=4, hidden=16, layers=1,
                          background_res=8),
        sample_count=1,
        train=TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=1, precision="fp32", channels_last=False,
                          ema_decay=0.0, ckpt_every=1000, log_every=1, sample_every=0))


def _sized(size: int) -> Config:
    """``background_augment`` 0.5: on the H200 (512², ~6,000 steps, two clips) it cut the opacity's
    error against the person mask by 11-23 % and raised the person alone over black (the RGBA
    output; the anchors' protocol) by 0.4-0.8 dB PSNR and 0.02-0.10 SSIM, for 0.07-0.33 dB less
    PSNR masked to the person in the video frame (docs/performance.md)."""
    big = size >= 512
    return Config(
        background_augment=0.5,
        model=SplatConfig(image_size=size, per_face=24 if big else 16, free=60000 if big else 40000),
        train=TrainConfig(steps=30000, batch_size=4, lr=1e-3, warmup_steps=200, schedule="cosine",
                          min_lr_ratio=0.05, precision="fp32", channels_last=False, ema_decay=0.0,
                          ckpt_every=5000, log_every=100, sample_every=2000, grad_clip=0.0))


PRESETS = {"tiny": _tiny, "256": lambda: _sized(256), "512": lambda: _sized(512)}
DEFAULT_PRESET = "256"

__all__ = ["SplatConfig", "Config", "PRESETS", "DEFAULT_PRESET"]
