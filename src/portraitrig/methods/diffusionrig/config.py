"""Typed configuration of the DiffusionRig renderer (denoiser, encoder, noise schedule).

Presets: ``tiny`` (CPU tests, 32 px), ``64``, ``128``, ``256`` (DiffusionRig's reference
sizes), ``512``. Configs round-trip through JSON (``to_dict`` / ``from_dict``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# channels of each physical buffer the renderer knows (helper C's render_buffers names)
BUFFER_CHANNELS = {"normal": 3, "albedo": 3, "shaded": 3, "shading": 3, "mask": 1, "depth": 1,
                   "regions": 4, "uv": 2}


@dataclass
class UNetConfig:
    """Denoiser: diffusers UNet2DModel; attention at the listed feature resolutions (pixels)."""

    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    layers_per_block: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 64
    norm_groups: int = 32
    dropout: float = 0.0


@dataclass
class EncoderConfig:
    """Global appearance encoder: ResNet (BasicBlock, BatchNorm) from scratch -> latent_dim."""

    latent_dim: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # ResNet-18


@dataclass
class DiffusionConfig:
    image_size: int = 256
    buffers: tuple[str, ...] = ("normal", "albedo", "shaded", "regions")  # regions: skin, eyes, iris, mouth
    unet: UNetConfig = field(default_factory=UNetConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    p2_gamma: float = 1.0   # P2 weighting (Choi et al. 2022): w_t = 1 / (k + SNR_t) ** gamma
    p2_k: float = 1.0

    @property
    def buffer_channels(self) -> int:
        return sum(BUFFER_CHANNELS[b] for b in self.buffers)

    @property
    def in_channels(self) -> int:
        return 3 + self.buffer_channels

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        d = dict(d)
        unet = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("unet", {}).items()})
        enc = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("encoder", {}).items()})
        if "buffers" in d:
            d["buffers"] = tuple(d["buffers"])
        cfg = cls(unet=unet, encoder=enc, **d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        unknown = [b for b in self.buffers if b not in BUFFER_CHANNELS]
        if unknown:
            raise ValueError(f"unknown buffer names {unknown}; known: {sorted(BUFFER_CHANNELS)}")
        levels = len(self.unet.channel_mult)
        if self.image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{levels - 1}")


def preset(name: str | int) -> DiffusionConfig:
    """A named preset: 'tiny', '64', '128', '256' (reference, ~133M UNet), '512'."""
    name = str(name)
    if name == "tiny":
        return DiffusionConfig(
            image_size=32,
            unet=UNetConfig(base_channels=16, channel_mult=(1, 2), layers_per_block=1,
                            attention_resolutions=(16,), head_channels=16, norm_groups=8),
            encoder=EncoderConfig(latent_dim=8, widths=(8, 16), blocks=(1, 1)),
        )
    if name == "64":
        return DiffusionConfig(image_size=64, unet=UNetConfig(channel_mult=(1, 2, 2, 4), attention_resolutions=(16, 8)))
    if name == "128":
        return DiffusionConfig(image_size=128, unet=UNetConfig(channel_mult=(1, 1, 2, 2, 4)))
    if name == "256":
        return DiffusionConfig(image_size=256)
    if name == "512":
        return DiffusionConfig(image_size=512, unet=UNetConfig(base_channels=64, channel_mult=(1, 2, 2, 4, 4, 8, 8)))
    raise ValueError(f"unknown preset {name!r} (tiny, 64, 128, 256, 512)")


PRESETS = ("tiny", "64", "128", "256", "512")
