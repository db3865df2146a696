"""The face-model interface: parameters -> mesh. Our own model and a future FLAME backend both
satisfy it; nothing downstream (fit, render, neural renderers) may depend on more than this."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from portraitrig.face.params import axis_angle_to_matrix


@runtime_checkable
class FaceModel(Protocol):
    id: str                      # e.g. "portraitrig-mp478@1"; stored in every RigParams
    n_id: int                    # identity dimensions
    n_expr: int                  # expression dimensions
    n_vertices: int              # V
    faces: torch.Tensor          # (F, 3) long, counter-clockwise seen from outside
    uv: torch.Tensor             # (V, 2) float in [0, 1]
    landmark_index: torch.Tensor  # (478,) long: model vertex of each MediaPipe landmark
    face_region: torch.Tensor    # (F,) long region id per triangle (see REGIONS)
    mean_albedo: torch.Tensor    # (V, 3) default albedo
    default_scale: float         # weak-perspective scale of an FFHQ-aligned crop
    default_translation: tuple[float, float]

    def canonical(self, identity: torch.Tensor, expression: torch.Tensor,
                  gaze: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) head-space vertices for (B, n_id), (B, n_expr), (B, 2, 2) parameters."""
        ...

    def to(self, device) -> "FaceModel":
        ...


# region ids used by FaceModel.face_region (renderers may colour / mask by them)
REGIONS = {"skin": 0, "eye_white": 1, "iris": 2, "mouth_interior": 3}


def posed_vertices(model: FaceModel, params) -> torch.Tensor:
    """(B, V, 3) vertices in camera/NDC space: x, y in NDC of the crop, z depth (same units,
    larger = farther). Weak perspective, see portraitrig.face.params."""
    X = model.canonical(params.identity, params.expression, params.gaze)
    return pose_points(X, params.scale, params.rotation, params.translation)


def pose_points(X: torch.Tensor, scale: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) head-space points ``X`` (B, V, 3) under the weak-perspective pose scale (B, 1),
    rotation (B, 3, axis-angle), translation (B, 2): :func:`posed_vertices` of given points."""
    R = axis_angle_to_matrix(rotation).to(X.dtype)
    p = scale[:, None, :] * (X @ R.transpose(1, 2))
    xy = p[..., :2] + translation[:, None, :]
    return torch.cat([xy, p[..., 2:]], dim=-1)


def ndc_to_pixels(xy: torch.Tensor, size: int) -> torch.Tensor:
    """NDC (-1..1) -> crop pixel coordinates (0..size, pixel-centre convention of capture.types)."""
    return (xy + 1) * (size / 2)


def pixels_to_ndc(px: torch.Tensor, size: int) -> torch.Tensor:
    return px * (2 / size) - 1
