"""The video renderer's network: a small U-Net from a rig-buffer stack to RGB.

Input (B, C_in, S, S): the face buffers of a short window of frames, the whole-portrait
shading and the person mask (see :class:`~portraitrig.methods.video.config.VideoNetConfig`).
Output (B, 3, S, S): colour around [0, 1], not clamped (``forward(x, clamp=True)`` clamps); with
``config.matte`` (B, 4, S, S), the fourth channel the person's matte, linear like the colour. Plain
convolutions + SiLU, no normalisation layers (batch-1 inference, EMA and DDP need no special
care); strided convolutions down, nearest-neighbour upsampling + convolution up, skip
connections by concatenation.

Stability without normalisation: each residual block's last convolution and the output
convolution start at zero (every block starts as the identity, the output as mid-grey), and the
output is linear (``0.5 + head``), not a sigmoid: a saturated sigmoid has no gradient (exactly
none in bf16 past a logit of ~6), so one bad step could leave a run stuck on a white image; a
linear output always feels the L1 loss pull it back into range.

Neural texture (``config.texture`` > 0): a pyramid of learned feature images in the face
model's UV space, sampled bilinearly at frame t's ``uv`` buffer where its face mask is set (0
elsewhere) and stacked onto the input. It starts at zero, so a new model renders as one
without it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from portraitrig.methods.video.config import VideoNetConfig

METHOD, VERSION = "video", 2   # 2: linear output (1 was a sigmoid)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x):
        return x + self.c2(F.silu(self.c1(F.silu(x))))


class VideoNet(nn.Module):
    """See the module docstring. ``person_prior``: (1, 1, S, S) mean person mask of the
    training frames, the person mask used where a frame's own is unknown (reenactment);
    ``reference``: (1, 3, S, S) the training frames' per-pixel median in [0, 1] (an input
    when ``config.reference``); ``head_pose`` (1, 6): the training frames' mean head placement
    (scale, rotation, translation; with ``config.follow_head``); ``head_ellipse`` (1, 4): where
    the head is in the reference frame (with ``config.still_body``, see
    :meth:`~portraitrig.methods.video.condition.Conditioner.head_ellipse`); ``bank`` (R, 3, S, S)
    uint8, ``bank_keys`` (R, K) and ``bank_index`` (R,): ``config.retrieve`` training frames,
    their landmark keys (:meth:`~portraitrig.methods.video.condition.Conditioner.retrieval_keys`)
    and their frame numbers in the target video (whose rigs relight them)."""

    def __init__(self, config: VideoNetConfig):
        super().__init__()
        self.config = config
        w = list(config.widths)
        extra = (3 if config.reference else 0) + config.texture
        self.stem = nn.Conv2d(config.in_channels + extra, w[0], 3, padding=1)
        if config.texture:   # where the last frame's uv and face mask are in the input
            from portraitrig.render import spec

            base, sl = (config.window - 1) * config.buffer_channels, spec.slices(config.buffers)
            self._uv = slice(base + sl["uv"].start, base + sl["uv"].stop)
            self._face = slice(base + sl["mask"].start, base + sl["mask"].start + 1)
        self.texture = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, config.texture, config.texture_size >> k, config.texture_size >> k))
             for k in range(config.texture_levels)] if config.texture else [])
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        for k, ch in enumerate(w):
            self.enc.append(nn.Sequential(*[ResBlock(ch) for _ in range(config.blocks)]))
            if k + 1 < len(w):
                self.down.append(nn.Conv2d(ch, w[k + 1], 3, stride=2, padding=1))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in range(len(w) - 2, -1, -1):
            self.up.append(nn.Conv2d(w[k + 1], w[k], 3, padding=1))
            self.dec.append(nn.Sequential(nn.Conv2d(2 * w[k], w[k], 3, padding=1), nn.SiLU(),
                                          *[ResBlock(w[k]) for _ in range(config.blocks)]))
        self.head = nn.Conv2d(w[0], 4 if config.matte else 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("person_prior", torch.zeros(1, 1, config.image_size, config.image_size))
        if config.reference:
            self.register_buffer("reference", torch.full((1, 3, config.image_size, config.image_size), 0.5))
        if config.follow_head:   # the training frames' mean head pose: scale, rotation (3), translation (2)
            self.register_buffer("head_pose", torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]))
        if config.still_body:   # the head's ellipse in the reference frame: centre x, y, half-width, half-height
            self.register_buffer("head_ellipse", torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
        if config.retrieve:     # the retrieval bank: training frames (uint8) and their landmark keys
            from portraitrig.methods.video.condition import RETRIEVE_KEY

            S = config.image_size
            self.register_buffer("bank", torch.zeros(config.retrieve, 3, S, S, dtype=torch.uint8))
            self.register_buffer("bank_keys", torch.zeros(config.retrieve, RETRIEVE_KEY))
            self.register_buffer("bank_index", torch.zeros(config.retrieve, dtype=torch.long))   # training frame numbers

    def forward(self, x: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        if self.config.reference:
            ref = (self.reference * 2 - 1).to(x.dtype).expand(x.shape[0], -1, -1, -1)
            x = torch.cat([x, ref], 1)
        if self.config.texture:
            x = torch.cat([x, self.sample_texture(x)], 1)
        h = self.stem(x)
        skips = []
        for k, block in enumerate(self.enc):
            h = block(h)
            if k < len(self.down):
                skips.append(h)
                h = F.silu(self.down[k](h))
        for up, dec in zip(self.up, self.dec):
            s = skips.pop()
            h = F.silu(up(F.interpolate(h, size=s.shape[-2:], mode="nearest")))
            h = dec(torch.cat([h, s], 1))
        y = self.head(F.silu(h)) + 0.5
        return y.clamp(0, 1) if clamp else y

    def sample_texture(self, x: torch.Tensor) -> torch.Tensor:
        """(B, texture, S, S): the texture pyramid sampled at the ``uv`` buffer of the input's
        last frame (uv in [0, 1] is ``2 uv - 1`` there: grid_sample's coordinates), the levels
        summed, zero outside that frame's face mask."""
        grid = x[:, self._uv].float().permute(0, 2, 3, 1)
        inside = x[:, self._face] > 0
        out = None
        for level in self.texture:
            t = F.grid_sample(level.float().expand(x.shape[0], -1, -1, -1), grid, mode="bilinear",
                              padding_mode="border", align_corners=False)
            out = t if out is None else out + t
        return (out * inside).to(x.dtype)

    # ---------------------------------------------------------------- model folders
    def save_pretrained(self, directory: str | Path) -> Path:
        from portraitrig.neural.modelio import write_model_folder

        return write_model_folder(directory, METHOD, VERSION, self.config.to_dict(), self)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu") -> "VideoNet":
        from portraitrig.errors import InputError
        from portraitrig.neural.modelio import CONFIG, WEIGHTS, load_module, read_model_config

        method, version, data = read_model_config(directory)
        if method != METHOD:
            raise InputError(Path(directory) / CONFIG, f"a {method!r} model, not a video-renderer model")
        if version != VERSION:
            raise InputError(Path(directory) / CONFIG,
                             f"video model version {version}, this portraitrig reads {VERSION}")
        config = VideoNetConfig.from_dict(data, Path(directory) / CONFIG)
        try:
            config.validate()
        except ValueError as exc:
            raise InputError(Path(directory) / CONFIG, str(exc)) from None
        return load_module(lambda: cls(config), Path(directory) / WEIGHTS, device)


class PatchCritic(nn.Module):
    """The critic of the optional adversarial term (``Config.adversarial`` /
    ``feature_matching``), trained beside the renderer and never saved with it: an image (3) beside
    the network's input (``cond`` channels) -> a realness score per patch, (B, 1, S/8, S/8), and
    the features of its ``levels`` levels (for feature matching). Each level a 4x4 strided
    convolution (``width`` channels, doubled per level), GroupNorm after the first, LeakyReLU;
    a patch sees ~46 px at three levels: texture (hair, skin, cloth), not the whole layout, which
    the renderer's L1 and SSIM already hold."""

    def __init__(self, cond: int, width: int = 64, levels: int = 3):
        super().__init__()
        c, blocks = 3 + cond, []
        for k in range(levels):
            w = width << k
            norm = [nn.GroupNorm(min(32, w // 4) or 1, w)] if k else []
            blocks.append(nn.Sequential(nn.Conv2d(c, w, 4, stride=2, padding=1), *norm, nn.LeakyReLU(0.2)))
            c = w
        self.levels = nn.ModuleList(blocks)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, feats = torch.cat([image * 2 - 1, cond.to(image.dtype)], 1), []
        for level in self.levels:
            h = level(h)
            feats.append(h)
        return self.out(h), feats


__all__ = ["VideoNet", "PatchCritic", "ResBlock", "METHOD", "VERSION"]
