"""DiffusionRig model: a buffer-conditioned denoiser plus a global appearance encoder.

The denoiser is diffusers' ``UNet2DModel`` fed ``cat(noisy image, buffers)``; the encoder's
latent (B, latent_dim) goes through a Linear to the time-embedding width and is added to the
timestep embedding (``class_embed_type="identity"``), which conditions every residual block by
scale-shift. Images are (B, 3, H, W) in [-1, 1] inside this module.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from portraitrig.methods.diffusionrig.config import BUFFER_CHANNELS, DiffusionConfig

FORMAT = "portraitrig.DiffusionRig"


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


# ---------------------------------------------------------------------- buffers
def buffers_to_tensor(buffers: dict[str, torch.Tensor], names) -> torch.Tensor:
    """Stack render_buffers output in ``names`` order, scaled to about [-1, 1]:
    normals and depth as they are, colours/masks (in [0, 1]) as ``2x - 1``. -> (B, C, H, W)."""
    out = []
    for n in names:
        if n not in buffers:
            raise KeyError(f"buffer {n!r} missing (have {sorted(buffers)})")
        b = buffers[n]
        if b.shape[1] != BUFFER_CHANNELS[n]:
            raise ValueError(f"buffer {n!r} has {b.shape[1]} channels, expected {BUFFER_CHANNELS[n]}")
        out.append(b if n in ("normal", "depth") else b * 2 - 1)
    return torch.cat(out, 1)


def inductor_options(channels_last: bool = True) -> dict:
    """torch.compile (Inductor) options for the denoiser, training and editing alike.

    1x1 convs (attention projections, skips) as matmuls. Layout optimization: Inductor keeps its
    own buffers channels-last only under it, and skips it for graphs with a conv of in_channels
    >= 2 * out_channels (every UNet decoder conv on a skip concatenation). Without it the fused
    GroupNorm/SiLU kernels write NCHW and cuDNN copies each activation back to NHWC: 130 copies,
    a quarter of a training step on an H100; forced, training went from 120.5 to 149 img/s
    (bench/profile_train.py). Channels-last concatenations stay channels-last
    (:func:`channels_last_cat_pass`)."""
    opts = {"conv_1x1_as_mm": True, "force_layout_optimization": channels_last}
    if channels_last:
        opts["post_grad_custom_post_pass"] = channels_last_cat_pass()
    return opts


def channels_last_cat_pass():
    """An Inductor post-grad pass: every 4-D channels-last concatenation is realized with its
    traced (channels-last) strides wherever Inductor materializes it.

    Inductor 2.11 lowers the UNet decoder's skip concatenations as "pointwise cats" and, as each
    has several users (GroupNorm statistics, the normalisation, the 1x1 shortcut), realizes them
    later with a default NCHW layout: the normalisation then read them transposed and the shortcut
    matmul copied them back (bench/layout_audit.py lists such buffers). With the pass, a batch-16
    edit forward on an H100 went from 28.7 to 25.4 ms, and a training step (with
    :class:`ChannelStatsGroupNorm`) from 149 to 170 img/s (bench/profile_edit.py,
    bench/profile_train.py). Lowering the concatenations as ConcatKernels instead
    (``max_pointwise_cat_inputs=1``) left them NCHW (measured: 28.6 ms)."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class ChannelsLastCat(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            for n in graph.find_nodes(op="call_function", target=torch.ops.aten.cat.default):
                v = n.meta.get("val")
                if (isinstance(v, torch.Tensor) and v.dim() == 4 and not v.is_contiguous()
                        and v.is_contiguous(memory_format=torch.channels_last)):
                    n.meta["inductor_realize_to_strides"] = True

        def uuid(self) -> str:  # Inductor's cache key for the pass: bump it when the pass changes
            return "portraitrig-channels-last-cat-1"

    return ChannelsLastCat()


# ---------------------------------------------------------------------- group norm
def group_norm_by_channels(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                           bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """GroupNorm of (B, C, *spatial) computed from per-channel statistics: F.group_norm's result.

    Mean and variance of each channel over the spatial dims, combined exactly into group
    statistics (equal counts: group mean = mean of channel means, group variance = mean of
    channel variances + variance of channel means), then one per-(sample, channel) affine pass.
    Nothing reshapes the big tensor, so a channels-last input stays a plain strided read. (The
    stock decomposition views x as (B, G, -1), which a channels-last tensor is not: Inductor then
    reads or writes it transposed, and its GroupNorm kernels ran at 0.4-1.1 TB/s of the H100's
    2.7; bench/profile_edit.py.) Statistics in float32; output in x's dtype."""
    B, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"{C} channels do not split into {num_groups} groups")
    k = C // num_groups
    xf = x.float()
    var_c, mean_c = torch.var_mean(xf, dim=tuple(range(2, x.dim())), correction=0)  # (B, C)
    mean_c, var_c = mean_c.view(B, num_groups, k), var_c.view(B, num_groups, k)
    mean_g = mean_c.mean(-1, keepdim=True)
    var_g = (var_c + (mean_c - mean_g).square()).mean(-1, keepdim=True)
    scale = torch.rsqrt(var_g + eps).expand(B, num_groups, k)
    if weight is not None:
        scale = scale * weight.float().view(num_groups, k)
    shift = -mean_g * scale
    if bias is not None:
        shift = shift + bias.float().view(num_groups, k)
    view = (B, C) + (1,) * (x.dim() - 2)
    return (xf * scale.reshape(view) + shift.reshape(view)).to(x.dtype)


class ChannelStatsGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters, same state dict) that, under torch.compile (the edit engine,
    compiled training), normalises through :func:`group_norm_by_channels`: a 16-photo edit batch
    on an H100 went from 30.9 to 28.7 ms per UNet forward; training, together with
    :func:`channels_last_cat_pass`, from 149 to 170 img/s. Eager calls keep PyTorch's own kernel.
    ``by_channels = False`` (on an instance or the class) restores the stock form everywhere."""

    by_channels = True

    def forward(self, x):
        if self.by_channels and torch.compiler.is_compiling():
            return group_norm_by_channels(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def use_channel_stats_group_norm(module: nn.Module) -> int:
    """Swap every plain nn.GroupNorm inside ``module`` for :class:`ChannelStatsGroupNorm` in place,
    keeping its parameters. Returns how many were swapped."""
    norms = [m for m in module.modules() if type(m) is nn.GroupNorm]
    for m in norms:
        m.__class__ = ChannelStatsGroupNorm  # no state of its own: parameters and hooks stay
    return len(norms)


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
        use_channel_stats_group_norm(self.unet)
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
        (B, C, H, W) from :func:`buffers_to_tensor`, cond (B, E) from :meth:`condition`."""
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
        from safetensors.torch import save_file

        from portraitrig.io.atomic import atomic_path, write_json

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(d / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        write_json(d / "config.json", {"format": FORMAT, **self.config.to_dict()})
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", dtype: torch.dtype | None = None) -> "DiffusionRigModel":
        from portraitrig.errors import InputError
        from portraitrig.io.tensorfile import read_safetensors

        d = Path(directory)
        if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
            raise InputError(d, "not a DiffusionRig model folder (needs config.json and model.safetensors)")
        cfg = json.loads((d / "config.json").read_text())
        if cfg.pop("format", None) != FORMAT:
            raise InputError(d / "config.json", "not a DiffusionRig config")
        model = cls(DiffusionConfig.from_dict(cfg))
        model.load_state_dict(read_safetensors(d / "model.safetensors", "model weights")[0])
        model.to(device)
        if dtype is not None:
            model.to(dtype)
        return model.eval()
