"""Typed configuration of the person-specific video renderer: the network
(:class:`VideoNetConfig`) and the training run (:class:`Config`), with presets ``tiny`` (CPU
tests, 32 px), ``256`` and ``512``."""
from __future__ import annotations

from dataclasses import dataclass, field

from portraitrig.render import spec
from portraitrig.config import DictConfig
from portraitrig.training.config import TrainConfig

MAX_IMAGE_SIZE = 1024
MAX_CHANNELS = 1024
MAX_RETRIEVE = 1024   # frames in a retrieval bank (each image_size² x 3 bytes in the model)


@dataclass
class VideoNetConfig(DictConfig):
    """U-Net from rig buffers to RGB. Input per pixel: the face buffers ``buffers`` of the
    frames t-window+1..t, the whole-portrait shading (3) and the person mask (1) of frame t,
    and (``reference``) the target's median training frame (3, kept in the model): the static
    background and where hair and clothes usually are, which the rig does not model.

    ``matte`` (on in the presets; off in models saved before it): a fourth output channel, the
    rendered person's matte in [0, 1], trained against the frames' person masks. A reenacted
    frame then has a person mask of its own: reenactment pastes back where it says the person is
    (instead of everywhere the person may be, with a wide margin), so the target's real, still
    background stays beside the driven head, and ``--background-light match`` relights what it
    says is background.

    ``still_body`` > 0 (needs ``follow_head``; 0.3 in the presets): the head-following warp
    moves the head (above its centre, and inside the ellipse of its lower half: face, ears, the
    hair beside them) and fades beyond that ellipse, over ``still_body`` of its radii, to the
    body's own place: the shoulders stay where the video shows them (moved only with the whole
    person by ``move_augment``) when a driver moves the head far from the target's own places.
    0: the whole reference frame follows the head, shoulders too (models saved before it).

    Two options against the seam relit renders show at the face mesh border (both off in the
    presets, and in models saved before them):

    - ``shading_band`` > 0: the input shading is smoothed along the face mesh border over that
      share of the image side (:func:`~portraitrig.render.portrait.soften_border`), as the relit
      training targets are: there the mesh's normals meet the whole-portrait proxy's.
    - ``proxy_follows_head`` (needs ``follow_head``): the whole-portrait normals outside the mesh
      come from the prior's proxy moved with the head (:meth:`Conditioner.head_warp`), as the
      hair and the outline are; unmoved, a head placed where the video did not show it has no
      shading on the skin and hair just past the mesh border.

    Together (1/64 and on; one run on the long clip, H200, 6 min) they cut the input shading's
    seam measure from 2.4 to 0.84 and the relit renders' seam from 1.16x to 1.12x the real
    frames' (1.13x to 1.07x on the held-out frames inside the training placement), but the
    held-out PSNR inside the person fell from 25.8 to 24.8 dB and the training loss levelled off
    higher (docs/performance.md): not the presets' yet.

    ``retrieve`` > 0 (the 256 preset: 256): a bank of that many training frames (evenly spaced;
    at most every training frame once) is kept in the model with each one's face-mesh landmarks
    in the crop; each frame's input also holds the bank frame whose landmarks lie nearest its
    own (head placement and expression alike), relit to the frame's light: the hair, clothes
    and skin detail of the target in a similar pose, sharper than the median frame. In training
    the frames within a gap of the item are left out of its choice (``Config.retrieve_gaps``,
    one of four drawn per item and step), as a held-out or driven frame's own neighbours are
    out of the bank. On liveportrait_d14 (H200, two runs sharing it, twice) it scored 27.5-28.0
    dB on the held-out full frames against the preset's 24.7-24.9 at the same time; on the long
    clip (liveportrait_d6) the crop 22.4 against 21.8 dB (mean over frames), SSIM 0.830 against
    0.829; with the four gaps 22.8 / 0.843 (docs/performance.md). It costs about a tenth of the
    render rate (114-139 frames/s at 256² against 135-153, H200). The 512 preset leaves it off
    (a 512² bank of 256 frames is 200 MB, and unmeasured).

    ``retrieve_count`` > 1: the input holds that many bank frames, the nearest first, each next
    one the nearest of those more than ``retrieve_apart`` video frames from every one before it
    (the nearest few are otherwise the same moment, filmed a frame apart): other moments of
    hair and clothes in a similar pose. Replaying the mean of two such frames scores 0.4-0.7 dB
    above the nearest alone on held-out frames (liveportrait_d14, the long clip), but a renderer
    given two (``retrieve_count=2``, 25 apart) scored no higher than with one: 27.59 dB / SSIM
    0.896 on liveportrait_d14's held-out full frames against 27.71 / 0.897 (H200, two runs
    sharing it for 6.75 min; docs/performance.md), so the presets keep one."""

    image_size: int = 256
    buffers: tuple[str, ...] = ("normal", "mask", "regions", "uv")  # uv: where on the face each pixel is
    window: int = 3
    widths: tuple[int, ...] = (32, 64, 128, 256, 256, 256)   # feature channels per level (level k at size / 2**k)
    blocks: int = 1                                      # residual blocks per level
    reference: bool = True                               # the median training frame is an input
    texture: int = 0                                     # neural-texture channels (0: none; needs uv and mask)
    texture_size: int = 256                              # side of the texture's finest level
    texture_levels: int = 4                              # pyramid levels (each half the last's side)
    follow_head: bool = False                            # reference + prior warped with the head (needs reference)
    shading_band: float = 0.0                            # input shading smoothed along the face mesh border (x side)
    proxy_follows_head: bool = False                     # whole-portrait normals' proxy warped with the head
    matte: bool = False                                  # a 4th output: the person's matte (reenactment pastes it)
    still_body: float = 0.0                              # head warp fades out beyond the head over this x its radii
    retrieve: int = 0                                    # bank of training frames, the nearest one an input (0: none)
    retrieve_count: int = 1                              # bank frames in each input (the nearest ones, spread)
    retrieve_apart: int = 25                             # frames between a frame's retrieved bank frames, at least

    @property
    def buffer_channels(self) -> int:
        return spec.channels(self.buffers)

    @property
    def in_channels(self) -> int:
        retrieved = 3 * self.retrieve_count if self.retrieve else 0
        return self.window * self.buffer_channels + 4 + (4 if self.follow_head else 0) + retrieved

    def validate(self) -> None:
        spec.check_names(self.buffers)
        for need in ("normal", "mask"):
            if need not in self.buffers:
                raise ValueError(f"buffers must include {need!r} (whole-portrait shading needs it)")
        levels = len(self.widths)
        if not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in 16..{MAX_IMAGE_SIZE}, got {self.image_size}")
        if not 1 <= levels <= 8 or self.image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{levels - 1}")
        if not all(1 <= w <= MAX_CHANNELS for w in self.widths):
            raise ValueError(f"widths must be in 1..{MAX_CHANNELS}, got {self.widths}")
        if not 1 <= self.window <= 16 or not 0 <= self.blocks <= 8:
            raise ValueError("window must be in 1..16 and blocks in 0..8")
        if not 0 <= self.shading_band <= 0.25:
            raise ValueError(f"shading_band is a share of the image side, in [0, 0.25]; got {self.shading_band}")
        if self.follow_head and not self.reference:
            raise ValueError("follow_head warps the reference frame: it needs reference")
        if not 0 <= self.still_body <= 4:
            raise ValueError(f"still_body is a share of the head's radii, in [0, 4]; got {self.still_body}")
        if self.still_body and not self.follow_head:
            raise ValueError("still_body shapes follow_head's head warp: it needs follow_head")
        if self.proxy_follows_head and not self.follow_head:
            raise ValueError("proxy_follows_head moves the proxy with follow_head's head warps: it needs follow_head")
        if not 0 <= self.retrieve <= MAX_RETRIEVE:
            raise ValueError(f"retrieve is a bank of training frames, 0..{MAX_RETRIEVE}; got {self.retrieve}")
        if not 1 <= self.retrieve_count <= 8 or not 0 <= self.retrieve_apart <= 100_000:
            raise ValueError(f"retrieve_count must be in 1..8 and retrieve_apart in 0..100000 frames; got "
                             f"{self.retrieve_count}, {self.retrieve_apart}")
        if not 0 <= self.texture <= 64:
            raise ValueError(f"texture channels must be in 0..64, got {self.texture}")
        if self.texture:
            if "uv" not in self.buffers:
                raise ValueError("a neural texture needs the 'uv' buffer")
            if not 1 <= self.texture_levels <= 8 or not 4 <= self.texture_size <= 2048 or \
                    self.texture_size % (2 ** (self.texture_levels - 1)) or \
                    self.texture_size // 2 ** (self.texture_levels - 1) < 2:
                raise ValueError(f"texture_size {self.texture_size} must be in 4..2048 and halve "
                                 f"{self.texture_levels - 1} times to at least 2")


def _h(text: str, **kw) -> dict:
    return {"help": text, **kw}


@dataclass
class Config:
    """Everything ``portraitrig train video DATA`` takes (DATA: the target's video, or a
    video cache made by :func:`portraitrig.methods.video.data.prepare_video`)."""

    model: VideoNetConfig = field(default_factory=VideoNetConfig, metadata={"cli": False})
    train: TrainConfig = field(default_factory=TrainConfig)
    light_augment: float = field(default=0.5, metadata=_h(
        "share of items relit each step with random lights (ratio images of the whole person), 0..1", metavar="P"))
    move_augment: float = field(default=0.3, metadata=_h(
        "share of items whose person is moved over the background by a random image-plane similarity "
        "(the rig moved with it): teaches the renderer head placements the video does not show, 0..1",
        metavar="P"))
    move_shift: float = field(default=0.06, metadata=_h(
        "largest shift of a moved person, crop NDC (1 = half the crop side), each axis", metavar="D"))
    move_roll: float = field(default=8.0, metadata=_h("largest in-plane turn of a moved person, degrees",
                                                      metavar="DEG"))
    move_scale: float = field(default=0.05, metadata=_h("largest relative size change of a moved person",
                                                        metavar="K"))
    texture_lr: float = field(default=10.0, metadata=_h(
        "learning rate of the neural texture, times the run's (a texel sees few pixels per step)", metavar="X"))
    ssim_weight: float = field(default=0.5, metadata=_h("weight of the 1 - SSIM loss beside L1"))
    grad_weight: float = field(default=0.5, metadata=_h("weight of the image-gradient L1 loss"))
    matte_weight: float = field(default=0.5, metadata=_h(
        "weight of the matte's L1 loss against the frames' person masks (models with a matte)"))
    adversarial: float = field(default=0.0, metadata=_h(
        "weight of the adversarial (hinge) term: a patch critic, trained beside the renderer, judges its "
        "renders against the frames, both beside the network's input (0: none)", metavar="W"))
    feature_matching: float = field(default=0.0, metadata=_h(
        "weight of the L1 distance between the critic's features of the render and of the frame "
        "(needs no adversarial weight; 0: none)", metavar="W"))
    adv_start: float = field(default=0.2, metadata=_h(
        "share of train.steps before the critic trains and its terms start (ramped in over 500 steps)",
        metavar="P"))
    critic_lr: float = field(default=1.0, metadata=_h("the critic's learning rate, times the run's", metavar="X"))
    critic_width: int = field(default=64, metadata=_h(
        "the critic's first-level channels (doubled at each of its 3 levels)", metavar="C"))
    # near and far retrievals: with one gap of 12 frames a training item's retrieved frame replayed
    # it at 26.2 dB on liveportrait_d14, a held-out frame's at 24.3 (as a gap of 25 does); the four
    # gaps scored higher than the one in every region of the held-out frames on that clip and the
    # long clip (SSIM +0.004 and +0.014 on the full frame; docs/performance.md)
    retrieve_gaps: tuple[int, ...] = field(default=(12, 25, 50, 100), metadata=_h(
        "models with a retrieval bank (model.retrieve): a training item retrieves the nearest bank frame more "
        "than G frames away from it (a new frame's own neighbours are not in the bank), G drawn for each item "
        "and step from these (each at most a quarter of the training frames): near and far retrievals, as "
        "new frames find them", metavar="G,G,..."))
    holdout: float = field(default=0.2, metadata=_h("share of the video's last frames held out of training"))
    max_frames: int | None = field(default=None, metadata=_h("fit at most this many frames of the video"))
    fit_device: str = field(default="cpu", metadata=_h("device of the video fit (tracking)"))
    sample_count: int = field(default=4, metadata=_h("frames in each sample grid"))

    def validate(self) -> None:
        self.model.validate()
        if not 0 <= self.light_augment <= 1:
            raise ValueError(f"light_augment is a share of items, in [0, 1]; got {self.light_augment}")
        if not 0 <= self.move_augment <= 1:
            raise ValueError(f"move_augment is a share of items, in [0, 1]; got {self.move_augment}")
        if not (0 <= self.move_shift <= 0.5 and 0 <= self.move_roll <= 45 and 0 <= self.move_scale <= 0.3):
            raise ValueError("move_shift must be in [0, 0.5], move_roll in [0, 45] degrees, move_scale in [0, 0.3]")
        if self.ssim_weight < 0 or self.grad_weight < 0 or self.matte_weight < 0 or self.texture_lr <= 0:
            raise ValueError("loss weights must be >= 0 and texture_lr > 0")
        if not (self.adversarial >= 0 and self.feature_matching >= 0 and 0 <= self.adv_start < 1):
            raise ValueError("adversarial and feature_matching must be >= 0 and adv_start in [0, 1)")
        if not (self.critic_lr > 0 and 1 <= self.critic_width <= MAX_CHANNELS // 4):
            raise ValueError(f"critic_lr must be > 0 and critic_width in 1..{MAX_CHANNELS // 4}")
        if not (1 <= len(self.retrieve_gaps) <= 16 and all(0 <= g <= 100_000 for g in self.retrieve_gaps)):
            raise ValueError(f"retrieve_gaps are 1 to 16 gaps in frames, each 0..100000; got {self.retrieve_gaps}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError("max_frames must be at least 2")
        if self.sample_count < 1:
            raise ValueError("sample_count must be positive")


def preset(name: str) -> VideoNetConfig:
    if name == "tiny":
        return VideoNetConfig(image_size=32, buffers=("normal", "mask", "regions", "uv"), widths=(8, 16, 16), window=2,
                              texture=4, texture_size=32, texture_levels=2, follow_head=True, matte=True,
                              still_body=0.3)
    if name == "256":
        return VideoNetConfig(image_size=256, texture=16, texture_size=256, follow_head=True, matte=True,
                              still_body=0.3, retrieve=256)
    if name == "512":
        return VideoNetConfig(image_size=512, widths=(24, 48, 96, 192, 256, 256, 256), texture=16, texture_size=512,
                              follow_head=True, matte=True, still_body=0.3)
    raise ValueError(f"unknown preset {name!r} (tiny, 256, 512)")


def _tiny() -> Config:
    return Config(model=preset("tiny"), sample_count=2,
                  train=TrainConfig(steps=2, batch_size=2, lr=2e-3, warmup_steps=1, precision="fp32",
                                    channels_last=False, ckpt_every=1000, log_every=1, sample_every=0,
                                    ema_decay=0.0))


def _run(size: str) -> Config:
    """lr 2e-4, batch 8: training for minutes is limited by steps, not by items. On the H200
    (bf16, 256 preset, 6.5 min, two clips, the same steps) 2e-4 beat 1e-4 by 0.25-0.3 dB on the
    held-out crop (0.95 dB inside the face mesh on one clip); batch 32 ran 2.3x fewer steps and
    lost 2.6-3.7 dB against batch 8 (docs/performance.md). 5e-4 collapsed to a flat image after
    ~12k steps in an early model with a sigmoid output.

    Compiled (network and loss): on liveportrait_d14 (7 min, H200) four compiled runs scored
    26.7-27.5 dB on the full frame against 25.9-26.1 for two eager ones, at about the same steps.
    ``compile_mode="reduce-overhead"`` (CUDA graphs) runs 1.5x the steps in the same time but
    scored no better (26.95 dB, 19,943 steps): a run of minutes at this lr is no longer limited by
    its steps, so the plainer mode stays the default (docs/performance.md)."""
    return Config(model=preset(size),
                  train=TrainConfig(steps=20000, batch_size=8 if size == "256" else 4, lr=2e-4, warmup_steps=100,
                                    schedule="cosine", ema_decay=0.999, log_every=50, sample_every=1000,
                                    compile=True))


PRESETS = {"tiny": _tiny, "256": lambda: _run("256"), "512": lambda: _run("512")}
DEFAULT_PRESET = "256"

__all__ = ["VideoNetConfig", "Config", "PRESETS", "DEFAULT_PRESET", "preset"]
