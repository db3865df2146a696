"""Typed configuration of the avatar (a deformable, expression-conditioned radiance field of one
person's head): the network (:class:`AvatarConfig`) and the whole training run (:class:`Config`),
with presets ``tiny`` (CPU seconds, 32 px), ``256`` and ``512``.

Units: head space is the face model's (model units; the face spans about -1.1..1.1 in x), the
field covers the cube ``[-bound, bound]^3`` of it; camera depths are in NDC units (see
:mod:`portraitrig.face.params`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from portraitrig.config import DictConfig
from portraitrig.neural.frames import FramesOptions
from portraitrig.training.config import TrainConfig


@dataclass
class AvatarConfig(DictConfig):
    image_size: int = 256
    n_frames: int = 1                # per-frame deformation codes (training frames)
    cond_dim: int = 68               # expression coefficients + gaze (4); set from the face model
    bound: float = 2.6               # half side of the head-space cube the field covers (model units)
    hash_levels: int = 16
    hash_features: int = 2
    hash_log2_size: int = 19
    hash_min_res: int = 16
    hash_max_res: int = 1024
    hidden: int = 64                 # density / colour MLP width
    geo_features: int = 15
    deform_hidden: int = 128
    deform_layers: int = 4
    deform_freqs: int = 8            # positional-encoding octaves of the deformation MLP
    code_dim: int = 8                # per-frame latent deformation code
    prior_margin: float = 0.25       # expression code reaches points this close to the face mesh (model units)
    prior_vertices: int = 128        # mesh vertices the distance is measured to
    use_prior: bool = True           # False: every point sees the expression (ablation)
    samples: int = 64                # samples per ray
    ray_front: float = 0.4           # ray starts this far in front of the nearest mesh point (model units)
    ray_depth: float = 2.6           # ray ends this far behind the nearest mesh point (model units)
    background_res: int = 64         # learned background image (crop space)
    occupancy_res: int = 64          # occupancy grid cells per side (head space)
    deform_alpha: float = 8.0        # annealing position the renderer uses (set at export)
    trusted_yaw: float = 30.0        # head turns (degrees) the training video covers (set at creation)
    trusted_pitch: float = 15.0

    def validate(self) -> None:
        if not 16 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be in 16..2048, got {self.image_size}")
        if not (1 <= self.hash_levels <= 32 and 1 <= self.hash_features <= 8 and 8 <= self.hash_log2_size <= 24
                and 2 <= self.hash_min_res <= self.hash_max_res <= 1 << 16):
            raise ValueError("hash grid: levels 1..32, features 1..8, log2 size 8..24, 2 <= min_res <= max_res")
        if not (1 <= self.hidden <= 1024 and 1 <= self.deform_hidden <= 1024 and 1 <= self.deform_layers <= 16
                and 0 <= self.deform_freqs <= 16 and 0 <= self.code_dim <= 256 and 1 <= self.n_frames <= 1 << 20
                and 0 <= self.cond_dim <= 1024 and 1 <= self.geo_features <= 256):
            raise ValueError("network sizes out of range")
        if not (self.bound > 0 and self.prior_margin > 0 and 1 <= self.prior_vertices <= 100_000):
            raise ValueError("bound and prior_margin must be positive, prior_vertices in 1..100000")
        if not (2 <= self.samples <= 1024 and self.ray_depth > 0 and self.ray_front >= 0):
            raise ValueError("samples in 2..1024, ray_depth > 0, ray_front >= 0")
        if not (4 <= self.background_res <= 1024 and 4 <= self.occupancy_res <= 512):
            raise ValueError("background_res in 4..1024, occupancy_res in 4..512")


@dataclass
class Config(FramesOptions):
    """Everything ``portraitrig train avatar VIDEO`` takes."""

    model: AvatarConfig = field(default_factory=AvatarConfig, metadata={"cli": False})
    train: TrainConfig = field(default_factory=TrainConfig)
    rays_per_item: int = field(default=1024, metadata={"help": "random rays per training frame and step"})
    anneal_steps: int = field(default=2000, metadata={"help": "steps over which the deformation's positional "
                                                              "encoding opens from coarse to fine"})
    mask_weight: float = field(default=0.1, metadata={"help": "weight of the opacity-vs-person-mask loss"})
    rigid_weight: float = field(default=1.0, metadata={"help": "weight of the penalty on moving the rigid head"})
    code_weight: float = field(default=1e-3, metadata={"help": "weight of the deformation codes' L2 prior"})

    def validate(self) -> None:
        self.model.validate()
        self.validate_frames()
        if self.rays_per_item < 1 or self.anneal_steps < 1:
            raise ValueError("rays_per_item and anneal_steps must be positive")
        if min(self.mask_weight, self.rigid_weight, self.code_weight) < 0:
            raise ValueError("loss weights must not be negative")


def _tiny() -> Config:
    return Config(
        model=AvatarConfig(image_size=32, hash_levels=4, hash_log2_size=10, hash_min_res=4, hash_max_res=32,
                           hidden=16, geo_features=7, deform_hidden=16, deform_layers=2, deform_freqs=4,
                           code_dim=4, prior_vertices=32, samples=16, background_res=8, occupancy_res=16),
        rays_per_item=64, anneal_steps=20, sample_count=1,
        train=TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup_steps=1, precision="fp32", channels_last=False,
                          ema_decay=0.0, ckpt_every=1000, log_every=1, sample_every=0))


def _sized(size: int) -> Config:
    big = size >= 512
    return Config(
        model=AvatarConfig(image_size=size, hash_max_res=2048 if big else 1024, samples=96 if big else 64),
        rays_per_item=2048 if big else 1024, anneal_steps=3000,
        train=TrainConfig(steps=20000, batch_size=4, lr=5e-3, warmup_steps=100, schedule="cosine",
                          min_lr_ratio=0.05, precision="bf16", channels_last=False, ema_decay=0.99,
                          ckpt_every=2000, log_every=50, sample_every=1000, grad_clip=0.0))


PRESETS = {"tiny": _tiny, "256": lambda: _sized(256), "512": lambda: _sized(512)}
DEFAULT_PRESET = "256"

__all__ = ["AvatarConfig", "Config", "PRESETS", "DEFAULT_PRESET"]
