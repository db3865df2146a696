"""Typed configuration of DiffusionRig: the network (:class:`DiffusionConfig`: denoiser, encoder,
noise schedule) and the whole training run (:class:`Config`: network + training loop + stage +
data selection), with named presets — the recipes behind every figure in docs/performance.md.

Network sizes: ``tiny`` (CPU tests, 32 px), ``64``, ``128``, ``256`` (DiffusionRig's reference
size), ``512``. Run presets: ``stage1-<size>`` (the generic prior on many people) and
``stage2-<size>`` (one person's ~20 photos, from a stage-1 model given with ``--init``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from portraitrig.render import spec
from portraitrig.config import DictConfig
from portraitrig.training.config import TrainConfig


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
class DiffusionConfig(DictConfig):
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
        return spec.channels(self.buffers)

    @property
    def in_channels(self) -> int:
        return 3 + self.buffer_channels

    def validate(self) -> None:
        spec.check_names(self.buffers)
        u, e = self.unet, self.encoder
        levels = len(u.channel_mult)
        if not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in 16..{MAX_IMAGE_SIZE}, got {self.image_size}")
        if not 1 <= levels <= 8 or self.image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{levels - 1}")
        widths = [u.base_channels * m for m in u.channel_mult]
        if not (1 <= u.base_channels and max(widths) <= MAX_CHANNELS and min(u.channel_mult) >= 1):
            raise ValueError(f"unet channels must be in 1..{MAX_CHANNELS}, got {widths}")
        if u.base_channels % u.norm_groups or u.norm_groups < 1:
            raise ValueError(f"unet.base_channels {u.base_channels} is not divisible by norm_groups {u.norm_groups}")
        if not 1 <= u.layers_per_block <= 8 or not 1 <= u.head_channels <= MAX_CHANNELS:
            raise ValueError(f"unet.layers_per_block must be in 1..8 and head_channels in 1..{MAX_CHANNELS}")
        if not (1 <= e.latent_dim <= 4096 and len(e.widths) == len(e.blocks) and 1 <= len(e.widths) <= 8
                and all(1 <= w <= MAX_CHANNELS for w in e.widths) and all(1 <= b <= 16 for b in e.blocks)):
            raise ValueError("encoder: latent_dim in 1..4096, widths and blocks of equal length (1..8), "
                             f"widths in 1..{MAX_CHANNELS}, blocks in 1..16")
        if not 2 <= self.num_train_timesteps <= 100_000 or not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError("noise schedule: 2..100000 timesteps and 0 < beta_start < beta_end < 1")


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


SIZES = ("tiny", "64", "128", "256", "512")
MAX_IMAGE_SIZE = 1024
MAX_CHANNELS = 2048


@dataclass
class Config:
    """Everything ``portraitrig train diffusion CACHE`` takes. Stage 1 learns a generic prior
    from many people; stage 2 one person's photos from a stage-1 model (``--init``), with the
    appearance encoder frozen."""

    model: DiffusionConfig = field(default_factory=DiffusionConfig, metadata={"cli": False})
    train: TrainConfig = field(default_factory=TrainConfig)
    stage: int = field(default=1, metadata={"help": "1: generic prior, 2: one person (encoder frozen)",
                                            "choices": (1, 2)})
    light_augment: float = field(default=0.0, metadata={"help": "share of items relit each step with random lights "
                                                                 "(ratio images; teaches a person model lit one way "
                                                                 "to follow new lights), 0..1", "metavar": "P"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward "
                                                                      "(less memory, slower)"})
    buffer_memory_gb: float = field(default=8.0, metadata={"help": "render every item's buffers once into device "
                                                                   "memory when they fit in this budget"})
    sample_count: int = field(default=4, metadata={"help": "items in each sample grid"})
    sample_steps: int = field(default=20, metadata={"help": "DDIM steps of the sample grids"})
    group: tuple[str, ...] = field(default=(), metadata={"help": "train only on these people/clips "
                                                                 "(comma-separated cache groups)"})
    exclude_group: tuple[str, ...] = field(default=(), metadata={"help": "leave these people/clips out"})
    train_items: int | None = field(default=None, metadata={"help": "with one --group: N evenly spaced items of "
                                                                    "it (the rest stay held out)"})

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if not 0 <= self.light_augment <= 1:
            raise ValueError(f"light_augment is a share of items, in [0, 1]; got {self.light_augment}")
        if self.light_augment > 0:
            from portraitrig.methods.diffusionrig.augment import check_names

            check_names(self.model.buffers)
        if self.train_items is not None and (self.train_items < 1 or len(self.group) != 1):
            raise ValueError("train_items needs exactly one --group and a positive count")
        if self.sample_count < 1 or self.sample_steps < 1 or self.buffer_memory_gb < 0:
            raise ValueError("sample_count and sample_steps must be positive, buffer_memory_gb >= 0")


def _run(size: str, stage: int) -> Config:
    """The stage-1 / stage-2 recipes (docs/performance.md): stage 1 batch 32, lr 2e-4, warm-up
    200, compiled; stage 2 batch 16, lr 5e-5, warm-up 20, eager (a run of minutes finishes more
    steps than a compile leaves)."""
    if stage == 1:
        train = TrainConfig(steps=20000, batch_size=32, lr=2e-4, warmup_steps=200, compile=True, log_every=50)
    else:
        train = TrainConfig(steps=2000, batch_size=16, lr=5e-5, warmup_steps=20, compile=False, log_every=50,
                            sample_every=400)
    return Config(model=preset(size), train=train, stage=stage)


def _tiny(stage: int = 1) -> Config:
    return Config(model=preset("tiny"), stage=stage, sample_count=2, sample_steps=2,
                  train=TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, precision="fp32",
                                    channels_last=False, ckpt_every=1000, log_every=1, sample_every=0))


PRESETS = {"tiny": _tiny, "tiny-stage2": lambda: _tiny(2),
           **{f"stage{st}-{sz}": (lambda sz=sz, st=st: _run(sz, st)) for st in (1, 2) for sz in SIZES[1:]}}
DEFAULT_PRESET = "stage1-256"
