"""Volume rendering: samples along rays, alpha compositing -> colour, depth, opacity.

Rays are given by origins/directions (R, 3) and near/far (R,); samples are the midpoints of
``n`` equal bins (or one uniform draw per bin, stratified, with a generator). Each sample's
opacity is ``1 - exp(-sigma * delta)`` (sigma per unit of t); weights ``w_i = T_i alpha_i``.
``depth`` is ``sum w_i t_i`` (not divided by the opacity) and ``opacity`` ``sum w_i``.

:func:`render_rays` queries a field only at the samples an ``occupied`` test keeps (the fast
path: empty space costs nothing); without one every sample is queried (the reference path).
"""
from __future__ import annotations

from typing import Callable

import torch

Query = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def sample_along(near: torch.Tensor, far: torch.Tensor, n: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample depths t (R, n) and bin lengths delta (R, n) on [near, far] (R,)."""
    width = (far - near) / n
    u = (torch.rand((near.shape[0], n), device=near.device, generator=generator) if generator is not None
         else torch.full((near.shape[0], n), 0.5, device=near.device))
    t = near[:, None] + (torch.arange(n, device=near.device) + u) * width[:, None]
    return t, width[:, None].expand(-1, n)


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor,
              delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Alpha compositing along each ray: sigma (R, n), rgb (R, n, 3), t and delta (R, n) ->
    ``rgb`` (R, 3) premultiplied by opacity, ``depth`` (R,), ``opacity`` (R,), ``weights`` (R, n)."""
    tau = sigma.float() * delta
    alpha = 1 - torch.exp(-tau)
    trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], 1), 1))
    w = trans * alpha
    return {"rgb": (w[..., None] * rgb.float()).sum(1), "depth": (w * t).sum(1), "opacity": w.sum(1), "weights": w}


def render_rays(query: Query, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                n: int, generator: torch.Generator | None = None,
                occupied: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Render R rays. ``query(points (M, 3), ray_ids (M,)) -> (sigma (M,), rgb (M, 3))``;
    ``occupied(points, ray_ids) -> (M,) bool`` (optional) drops samples before the query
    (their density is 0). Returns :func:`composite`'s dict."""
    t, delta = sample_along(near, far, n, generator)
    pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]          # (R, n, 3)
    ray_ids = torch.arange(origins.shape[0], device=origins.device)[:, None].expand(-1, n)
    flat, ids = pts.reshape(-1, 3), ray_ids.reshape(-1)
    sigma = torch.zeros(flat.shape[0], device=flat.device)
    rgb = torch.zeros(flat.shape[0], 3, device=flat.device)
    if occupied is None:
        s, c = query(flat, ids)
        sigma, rgb = s.float(), c.float()
    else:
        keep = occupied(flat, ids).nonzero()[:, 0]
        if keep.numel():
            s, c = query(flat[keep], ids[keep])
            sigma = sigma.index_put((keep,), s.float())
            rgb = rgb.index_put((keep,), c.float())
    R = origins.shape[0]
    return composite(sigma.view(R, n), rgb.view(R, n, 3), t, delta)


__all__ = ["sample_along", "composite", "render_rays"]
