"""GroupNorm in a form Inductor compiles well for channels-last activations.

:class:`ChannelStatsGroupNorm` is ``nn.GroupNorm`` (same parameters, same state dict, same eager
kernel) that under ``torch.compile`` normalises from per-channel statistics
(:func:`group_norm_by_channels`). :func:`use_channel_stats_group_norm` swaps it in place;
:func:`portraitrig.accel.inductor.compile_module` does that for every network it compiles.
"""
from __future__ import annotations

import torch
from torch import nn


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


__all__ = ["group_norm_by_channels", "ChannelStatsGroupNorm", "use_channel_stats_group_norm"]
