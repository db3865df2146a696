"""Orthographic rays of a crop from RigParams.

The rig's camera is weak perspective (scaled orthographic) for every method (see
:mod:`portraitrig.face.params`): a head-space point X lands at ``ndc_xy = s R X + t`` with depth
``(s R X)_z``, so every pixel's ray is parallel to the camera's z axis. A pixel at NDC (x, y)
casts the ray ``o + z d`` with ``o = (x, y, 0)``, ``d = (0, 0, 1)``, z in camera depth units
(NDC units, larger = farther). A perspective ray model would not agree with the fitted
parameters, so the field would see each frame's head at the wrong place.
"""
from __future__ import annotations

import torch

from portraitrig.face.base import posed_vertices


def pixel_ndc(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(size * size, 2) NDC (x, y) of the pixel centres, row-major (pixel (i, j) at
    ``i * size + j``)."""
    c = (torch.arange(size, device=device, dtype=dtype) + 0.5) * (2.0 / size) - 1.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], -1)


def ortho_rays(ndc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions (..., 3) of the rays through NDC points ``ndc`` (..., 2):
    origin ``(x, y, 0)``, direction ``(0, 0, 1)`` (camera space)."""
    zeros = torch.zeros_like(ndc[..., :1])
    origins = torch.cat([ndc, zeros], -1)
    dirs = torch.zeros_like(origins)
    dirs[..., 2] = 1.0
    return origins, dirs


def depth_range(params, face_model, front: float, depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item (B,) near and far camera depths: from ``front`` model units in front of the
    posed mesh's nearest point to ``depth`` model units behind it (scaled by the item's scale),
    so the whole head (hair, back of the head) lies between them."""
    z = posed_vertices(face_model, params)[..., 2]
    zmin = z.min(1).values
    s = params.scale[:, 0].to(z.dtype)
    return zmin - front * s, zmin + depth * s


def camera_to_head(points: torch.Tensor, scale: torch.Tensor, rotation: torch.Tensor,
                   translation: torch.Tensor) -> torch.Tensor:
    """Camera-space points (..., 3) to head space: ``X = R^T ((x, y, z) - (t, 0)) / s``, with
    per-point ``scale`` (..., 1), ``rotation`` matrices (..., 3, 3), ``translation`` (..., 2)."""
    shift = torch.cat([translation, torch.zeros_like(translation[..., :1])], -1)
    p = (points - shift) / scale
    return (rotation.transpose(-1, -2) @ p[..., None])[..., 0]


__all__ = ["pixel_ndc", "ortho_rays", "depth_range", "camera_to_head"]


class RigFrames:
    """What rendering needs of B items' RigParams, on one device: pose (``scale`` (B, 1),
    ``rot`` (B, 3, 3) head -> camera, ``trans`` (B, 2)), the field's condition ``cond``
    (B, n_expr + 4: expression, gaze), head-space face-mesh vertices for the spatial prior
    ``verts`` (B, K, 3), rigid-head vertices ``rigid`` (B, J, 3), ray bounds ``near``/``far`` (B,)
    and training-frame ids ``frame`` (B,) (-1: none)."""

    def __init__(self, params, face_model, cfg, frame: torch.Tensor | None = None, rigid_count: int = 32):
        fm = face_model.to(params.device)
        p = params.to(params.device, torch.float32)
        self.scale, self.rot, self.trans = p.scale, p.rotation_matrix().float(), p.translation
        self.cond = torch.cat([p.expression, p.gaze.flatten(1)], 1)
        V = fm.canonical(p.identity, p.expression, p.gaze)
        step = max(1, V.shape[1] // cfg.prior_vertices)
        self.verts = V[:, ::step][:, :cfg.prior_vertices]
        rw = getattr(fm, "rigid_weights", None)
        rid = (torch.argsort(rw, descending=True)[:rigid_count] if rw is not None
               else torch.arange(min(rigid_count, V.shape[1]), device=V.device))
        self.rigid = V[:, rid]
        self.near, self.far = depth_range(p, fm, cfg.ray_front, cfg.ray_depth)
        B = len(p)
        self.frame = frame if frame is not None else torch.full((B,), -1, dtype=torch.long, device=p.device)

    def take(self, idx: torch.Tensor) -> "RigFrames":
        out = RigFrames.__new__(RigFrames)
        for k, v in vars(self).items():
            setattr(out, k, v[idx])
        return out

    def to_head(self, points: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """Camera-space points (M, 3) of items ``item`` (M,) -> head space (M, 3)."""
        return camera_to_head(points, self.scale[item], self.rot[item], self.trans[item])
