"""Projection and rasterization of 3D Gaussians under the rig's weak-perspective camera.

Projection (:func:`project`, plain PyTorch, shared by both rasterizers): a head-space Gaussian
(mean X, covariance L L^T with L = R diag(scale)) lands at NDC ``s Rc X + (t, 0)`` (``s``,
``Rc``, ``t``: the item's scale, rotation and translation); the camera is orthographic, so its
2D covariance is the top-left 2x2 block of ``s^2 Rc L L^T Rc^T``, in pixels ``(S / 2)^2`` times
that, plus 0.3 px^2 (a low-pass filter so no Gaussian is thinner than a pixel). Pixel (i, j)'s
centre is at ``(j + 0.5, i + 0.5)``; depth is the camera z (larger: farther).

Rasterization composites the Gaussians front to back per pixel: ``alpha = min(0.999,
opacity * exp(-q))`` with ``q = d^T conic d / 2``, ignored below 1/255; a pixel stops before the
Gaussian that would bring its transmittance to 1e-4 or below. :func:`rasterize_reference`
evaluates every Gaussian at every pixel (CPU, tests, the reference);
:func:`portraitrig.accel.splat.rasterize_gsplat` is the fast path (gsplat's tiled CUDA kernels,
forward and backward), taken on CUDA when gsplat is installed (``pip install -e .[gaussians]``). Each Gaussian's pixel radius is 3.33 sigma per axis
(where ``exp(-q)`` reaches 1/255), so the tiles a Gaussian is drawn in hold every pixel the
reference would change.
"""
from __future__ import annotations

import torch

from portraitrig.accel.splat import gsplat_available, rasterize_gsplat  # noqa: F401  (re-exported)

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EXTENT = 3.33          # radius in sigmas: exp(-EXTENT^2 / 2) ~ 1/255
BLUR = 0.3             # px^2 added to every 2D covariance


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) (w, x, y, z; normalised here)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(*q.shape[:-1], 3, 3)


def project(means: torch.Tensor, rot: torch.Tensor, scales: torch.Tensor, cam_scale: torch.Tensor,
            cam_rot: torch.Tensor, cam_trans: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """Head-space Gaussians of B items -> pixel-space 2D Gaussians.

    means (B, N, 3), rot (B, N, 3, 3) or (N, 3, 3), scales (B, N, 3) or (N, 3) (standard
    deviations along the rotated axes, model units); camera: cam_scale (B, 1), cam_rot (B, 3, 3)
    head -> camera, cam_trans (B, 2). Returns ``means2d`` (B, N, 2) px, ``conics`` (B, N, 3) (the
    inverse 2D covariance's a, b, c: ``q = (a dx^2 + c dy^2) / 2 + b dx dy``), ``depths`` (B, N)
    and ``radii`` (B, N, 2) int32 (0: off the image, culled)."""
    B = means.shape[0]
    cam = cam_scale[:, None, :] * torch.einsum("bij,bnj->bni", cam_rot, means)
    xy = cam[..., :2] + cam_trans[:, None, :]
    half = size / 2.0
    means2d = (xy + 1.0) * half
    L = rot * scales[..., None, :]                                     # (.., N, 3, 3) columns scaled
    if L.dim() == 3:
        L = L[None].expand(B, -1, -1, -1)
    M = torch.einsum("bij,bnjk->bnik", cam_rot[:, :2], L) * (cam_scale[:, None, :, None] * half)  # (B, N, 2, 3)
    cov = M @ M.transpose(-1, -2)
    a = cov[..., 0, 0] + BLUR
    b = cov[..., 0, 1]
    c = cov[..., 1, 1] + BLUR
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    with torch.no_grad():
        r = torch.stack([torch.ceil(EXTENT * a.sqrt()), torch.ceil(EXTENT * c.sqrt())], -1)
        m = means2d.detach()
        off = ((m + r < 0) | (m - r > size)).any(-1) | ~torch.isfinite(m).all(-1)
        radii = torch.where(off[..., None], torch.zeros_like(r), r).to(torch.int32)
    return {"means2d": means2d, "conics": conics, "depths": cam[..., 2], "radii": radii}


def _composite_pixels(pix: torch.Tensor, m2: torch.Tensor, con: torch.Tensor, col: torch.Tensor,
                      op: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours (P, C) and alphas (P,) of pixels at ``pix`` (P, 2) over depth-sorted Gaussians."""
    d = m2[None] - pix[:, None]                                                 # (P, N, 2)
    q = 0.5 * (con[:, 0] * d[..., 0] ** 2 + con[:, 2] * d[..., 1] ** 2) + con[:, 1] * d[..., 0] * d[..., 1]
    alpha = (op[None] * torch.exp(-q)).clamp_max(ALPHA_MAX)
    alpha = torch.where((q >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    after = torch.cumprod(1 - alpha, 1)                                         # T after each Gaussian
    before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], 1)
    keep = after > T_MIN                                                        # a prefix of each row
    w = before * alpha * keep
    return w @ col, w.sum(1)


def rasterize_reference(means2d: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
                        opacities: torch.Tensor, depths: torch.Tensor, radii: torch.Tensor, size: int,
                        chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Every Gaussian at every pixel, in plain PyTorch (differentiable): means2d (B, N, 2),
    conics (B, N, 3), colors (B, N, C), opacities (B, N), depths (B, N), radii (B, N, 2) ->
    (colours (B, S, S, C) premultiplied by alpha, alphas (B, S, S, 1))."""
    B, C = means2d.shape[0], colors.shape[-1]
    c = (torch.arange(size, device=means2d.device, dtype=torch.float32) + 0.5)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    pix = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    out_c, out_a = [], []
    for b in range(B):
        live = (radii[b] > 0).all(-1).nonzero()[:, 0]
        order = live[torch.argsort(depths[b, live].detach(), stable=True)]
        m2, con, col, op = means2d[b, order], conics[b, order], colors[b, order], opacities[b, order]
        cs, alphas = [], []
        for a in range(0, pix.shape[0], chunk):
            ci, ai = _composite_pixels(pix[a:a + chunk], m2.float(), con.float(), col.float(), op.float())
            cs.append(ci)
            alphas.append(ai)
        out_c.append(torch.cat(cs).reshape(size, size, C))
        out_a.append(torch.cat(alphas).reshape(size, size, 1))
    return torch.stack(out_c), torch.stack(out_a)


def rasterize(means2d, conics, colors, opacities, depths, radii, size: int, backend: str = "auto"):
    """:func:`rasterize_gsplat` (``backend`` "gsplat", or "auto" on CUDA with gsplat) or
    :func:`rasterize_reference` ("torch", or "auto" otherwise)."""
    if backend == "auto":
        backend = "gsplat" if means2d.is_cuda and gsplat_available() else "torch"
    if backend == "gsplat":
        if not means2d.is_cuda:
            raise ValueError("the gsplat rasterizer needs CUDA tensors")
        return rasterize_gsplat(means2d, conics, colors, opacities, depths, radii, size)
    if backend != "torch":
        raise ValueError(f"backend must be auto, torch or gsplat, got {backend!r}")
    return rasterize_reference(means2d, conics, colors, opacities, depths, radii, size)


__all__ = ["quat_to_matrix", "project", "rasterize_reference", "rasterize_gsplat", "rasterize",
           "gsplat_available", "ALPHA_MIN", "ALPHA_MAX", "T_MIN", "EXTENT", "BLUR"]
