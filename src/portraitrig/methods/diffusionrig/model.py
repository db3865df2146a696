"""DiffusionRig model: a buffer-conditioned denoiser plus a global appearance encoder.

The denoiser is diffusers' ``UNet2DModel`` fed ``cat(noisy image, buffers)``; the encoder's
latent (B, latent_dim) goes through a Linear to the time-embedding width and is added to the
timestep embedding (``class_embed_type="identity"``), which conditions every residual block by
scale-shift. Images are (B, 3, H, W) in [-1, 1] inside this module.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from portraitrig.methods.diffusionrig.config import DiffusionConfig

METHOD, VERSION = "diffusion", 1


# ---------------------------------------------------------------------- encoder
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class ResNetEncoder(nn.Module):
    """ResNet (default ResNet-18) from scratch: (B, 3, H, W) in [-1, 1] -> (B, latent_dim)."""

    def __init__(self, latent_dim: int = 64, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, latent_dim)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------- the model
class DiffusionRigModel(nn.Module):
    """Denoiser ``unet``, appearance ``encoder`` and ``latent_proj`` (latent -> time embedding)."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        from diffusers import UNet2DModel

        config.validate()
        self.config = config
        u = config.unet
        chans = tuple(int(u.base_channels * m) for m in u.channel_mult)
        res = [config.image_size // 2 ** i for i in range(len(chans))]
        attn = [r in u.attention_resolutions for r in res]
        self.unet = UNet2DModel(
            sample_size=config.image_size, in_channels=config.in_channels, out_channels=3,
            block_out_channels=chans, layers_per_block=u.layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            attention_head_dim=u.head_channels, norm_num_groups=u.norm_groups, dropout=u.dropout,
            class_embed_type="identity", resnet_time_scale_shift="scale_shift",
            flip_sin_to_cos=True, freq_shift=0,
        )
        e = config.encoder
        self.encoder = ResNetEncoder(e.latent_dim, e.widths, e.blocks)
        self.latent_proj = nn.Linear(e.latent_dim, chans[0] * 4)

    # -- pieces
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, latent_dim) appearance latent."""
        return self.encoder(image)

    def condition(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, time_embed_dim) added to the timestep embedding."""
        return self.latent_proj(latent)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, buffers: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise for noisy images x_t (B, 3, H, W), timesteps t (B,) or (), buffers
        (B, C, H, W) from :func:`portraitrig.render.spec.to_network`, cond (B, E) from :meth:`condition`."""
        x = torch.cat([x_t, buffers.to(x_t.dtype)], 1)
        return self.unet(x, t, class_labels=cond.to(x_t.dtype), return_dict=False)[0]

    def forward(self, x_t, t, buffers, image_for_latent):
        return self.denoise(x_t, t, buffers, self.condition(self.encode(image_for_latent)))

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"unet": count(self.unet), "encoder": count(self.encoder),
                "latent_proj": count(self.latent_proj), "total": count(self)}

    def freeze_encoder(self) -> None:
        """Stage 2: encoder weights fixed and BatchNorm statistics frozen (eval mode)."""
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()  # a frozen encoder stays in eval mode (BN statistics unchanged)
        return self

    # -- persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (atomically) into ``directory``."""
        from portraitrig.neural.modelio import write_model_folder

        return write_model_folder(directory, METHOD, VERSION, self.config.to_dict(), self)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", dtype: torch.dtype | None = None) -> "DiffusionRigModel":
        """Load a model folder; the config is validated and the weights' shapes checked before
        anything is allocated (:func:`portraitrig.neural.modelio.load_module`)."""
        from portraitrig.errors import InputError
        from portraitrig.neural.modelio import CONFIG, WEIGHTS, load_module, read_model_config

        d = Path(directory)
        method, version, data = read_model_config(d)
        if method != METHOD:
            raise InputError(d, f"a {method!r} model folder, not a DiffusionRig ({METHOD!r}) one")
        if version > VERSION:
            raise InputError(d / CONFIG, f"made by a newer portraitrig (model version {version}, this one reads {VERSION})")
        config = DiffusionConfig.from_dict(data, d / CONFIG)
        model = load_module(lambda: cls(config), d / WEIGHTS, device)
        if dtype is not None:
            model.to(dtype)
        return model
