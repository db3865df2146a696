"""PortraitRigFaceModel: our linear face model on MediaPipe Face Mesh's topology.

Learned from talking-head video by ``scripts/learn_face_model.py`` (see docs/face_model.md).
Head space (model units): x to image right, y down, z away from the camera; the unit of length
is the mean face's inter-ocular distance (iris centres, eyes forward) = 1; origin at the
centroid of the mean face's 468 mesh points.

Vertices (V = 478 + extras): 0..467 are MediaPipe's mesh points, 468..477 its iris points
(so ``landmark_index`` is the identity on 0..477), then render-only extras: per eye a sclera
fan (eye-contour ring on the eyeball sphere + centre), extra iris-rim points, and a mouth
interior cup behind the inner lip ring. Only the 468 mesh points carry the identity and
expression bases; the iris points and the sclera follow an eyeball per eye (centre at a fixed
offset from the eye corners, radius ``eyeball_radius``) turned by the gaze.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from portraitrig.accel.constants import device_constant
from portraitrig.errors import InputError

MODEL_ID = "portraitrig-mp478@1"
DEFAULT_PATH = Path(__file__).with_name("data") / "portraitrig_face_v1.npz"
N_MESH = 468
KEYS = ("mean", "id_basis", "expr_basis", "rigid_weights", "faces", "face_region", "uv", "mean_albedo",
        "eye_corners", "eye_ring", "eyeball_offset", "eyeball_radius", "iris_offsets", "iris_vertex",
        "sclera_vertex", "mouth_ring", "mouth_vertex", "mouth_depth", "control_names", "control_dirs",
        "control_measure", "default_scale", "default_translation")


def gaze_rotation(gaze: torch.Tensor) -> torch.Tensor:
    """(..., 2) [yaw, pitch] radians -> (..., 3, 3) eye rotation turning the forward axis -z
    towards (sin yaw cos pitch, sin pitch, -cos yaw cos pitch): positive yaw looks to image
    right, positive pitch looks down. R = Ry(-yaw) @ Rx(pitch)."""
    yaw, pitch = gaze[..., 0], gaze[..., 1]
    cy, sy, cp, sp = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    Ry = torch.stack([cy, z, -sy, z, o, z, sy, z, cy], -1).reshape(yaw.shape + (3, 3))
    Rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(yaw.shape + (3, 3))
    return Ry @ Rx


class PortraitRigFaceModel:
    """Linear face model; satisfies :class:`portraitrig.face.base.FaceModel`.

    ``canonical(identity (B, n_id), expression (B, n_expr), gaze (B, 2, 2)) -> (B, V, 3)``,
    differentiable in all three. Coefficients have a unit-variance prior (basis vectors are
    scaled by the standard deviation seen in the data).
    """

    id = MODEL_ID

    def __init__(self, arrays: dict[str, np.ndarray], device="cpu", dtype=torch.float32):
        t = lambda k, d=dtype: torch.as_tensor(np.asarray(arrays[k])).to(device=device, dtype=d)  # noqa: E731
        self.mean = t("mean")                    # (468, 3)
        self.id_basis = t("id_basis")            # (n_id, 468, 3)
        self.expr_basis = t("expr_basis")        # (n_expr, 468, 3)
        self.rigid_weights = t("rigid_weights")  # (468,) 1 on the points expressions move least
        self.faces = t("faces", torch.long)      # (F, 3)
        self.face_region = t("face_region", torch.long)
        self.uv = t("uv")                        # (V, 2)
        self.mean_albedo = t("mean_albedo")      # (V, 3)
        self.eye_corners = t("eye_corners", torch.long)      # (2, 2) vertex ids per eye
        self.eye_ring = t("eye_ring", torch.long)            # (2, 16) eye contour, in ring order
        self.eyeball_offset = t("eyeball_offset")            # (2, 3) centre - corner midpoint
        self.eyeball_radius = float(arrays["eyeball_radius"])
        self.iris_offsets = t("iris_offsets")                # (2, 13, 3) eye frame, centre first
        self.iris_vertex = t("iris_vertex", torch.long)      # (2, 13) vertex ids, centre first
        self.sclera_vertex = t("sclera_vertex", torch.long)  # (2, 17) ring copies then centre
        self.mouth_ring = t("mouth_ring", torch.long)        # (20,) inner lip ring
        self.mouth_vertex = t("mouth_vertex", torch.long)    # (21,) ring copies then centre
        self.mouth_push = torch.zeros(2, 3, device=device, dtype=dtype)  # ring / centre push back
        self.mouth_push[:, 2] = t("mouth_depth")                          # along +z (away)
        self.control_names = [str(s) for s in np.asarray(arrays["control_names"])]
        self.control_dirs = t("control_dirs")                # (K, n_expr) amount 1 directions
        self.control_measure = t("control_measure")          # (K, n_expr) expression -> amounts
        self.default_scale = float(arrays["default_scale"])
        self.default_translation = tuple(float(v) for v in np.asarray(arrays["default_translation"]))
        self.n_id = int(self.id_basis.shape[0])
        self.n_expr = int(self.expr_basis.shape[0])
        self.n_vertices = int(self.uv.shape[0])
        self.landmark_index = torch.arange(478, device=device)
        self._arrays = arrays

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH, device="cpu") -> "PortraitRigFaceModel":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise InputError(path, "face model file not found (run scripts/learn_face_model.py)") from None
        except Exception as exc:
            raise InputError(path, f"cannot read face model file ({exc.__class__.__name__}: {exc})") from exc
        missing = sorted(set(KEYS) - set(arrays))
        if missing:
            raise InputError(path, f"face model file lacks {', '.join(missing)}")
        return cls(arrays, device=device)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "PortraitRigFaceModel":
        """The model on ``device`` (float tensors in ``dtype``, default float32); itself when
        it is already there, like ``Tensor.to`` (the model is read-only, so sharing is safe)."""
        device, dtype = torch.device(device or "cpu"), dtype or torch.float32
        if device.type == self.device.type and device.index in (None, self.device.index) \
                and dtype == self.mean.dtype:
            return self
        return PortraitRigFaceModel(self._arrays, device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # ------------------------------------------------------------------ geometry
    def shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """(B, 468, 3) mesh points for (B, n_id) identity and (B, n_expr) expression."""
        B = identity.shape[0]
        dt = self.mean.dtype
        off = identity.to(dt) @ self.id_basis.reshape(self.n_id, N_MESH * 3)
        off = off + expression.to(dt) @ self.expr_basis.reshape(self.n_expr, N_MESH * 3)
        return self.mean + off.reshape(B, N_MESH, 3)

    def eyeball_centres(self, mesh: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3) eyeball centres [subject's right, left] from (B, 468, 3) mesh points."""
        return mesh[:, self.eye_corners].mean(2) + self.eyeball_offset

    def canonical(self, identity: torch.Tensor, expression: torch.Tensor,
                  gaze: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) head-space vertices (model units)."""
        S = self.shape(identity, expression)
        B, dt = S.shape[0], S.dtype
        c = self.eyeball_centres(S)                                      # (B, 2, 3)
        Rg = gaze_rotation(gaze.to(dt))                                  # (B, 2, 3, 3)
        fwd = device_constant((0.0, 0.0, -self.eyeball_radius), dt, S.device)   # no host copy per call
        iris = c[:, :, None] + (self.iris_offsets + fwd) @ Rg.transpose(-1, -2)  # (B, 2, 13, 3)
        # sclera: eye-contour ring (and its centre) dropped onto a slightly smaller eyeball sphere
        ring = S[:, self.eye_ring]                                       # (B, 2, 16, 3)
        ring = torch.cat([ring, ring.mean(2, keepdim=True)], 2)          # (B, 2, 17, 3)
        d_xy = ring[..., :2] - c[:, :, None, :2]
        rs = 0.98 * self.eyeball_radius
        dz = torch.sqrt((rs * rs - (d_xy * d_xy).sum(-1)).clamp_min(1e-4))
        sclera = torch.cat([ring[..., :2], (c[:, :, None, 2] - dz)[..., None]], -1)
        # mouth interior: the inner lip ring pushed back, and a deeper centre
        lips = S[:, self.mouth_ring]
        mouth = torch.cat([lips + self.mouth_push[0], lips.mean(1, keepdim=True) + self.mouth_push[1]], 1)
        V = torch.zeros(B, self.n_vertices, 3, dtype=dt, device=S.device)
        V = V.index_copy(1, torch.arange(N_MESH, device=S.device), S)
        V = V.index_copy(1, self.iris_vertex.reshape(-1), iris.reshape(B, -1, 3))
        V = V.index_copy(1, self.sclera_vertex.reshape(-1), sclera.reshape(B, -1, 3))
        V = V.index_copy(1, self.mouth_vertex, mouth)
        return V

    def landmarks(self, identity: torch.Tensor, expression: torch.Tensor,
                  gaze: torch.Tensor) -> torch.Tensor:
        """(B, 478, 3) head-space positions of MediaPipe's landmarks."""
        return self.canonical(identity, expression, gaze)[:, self.landmark_index]


@functools.lru_cache(maxsize=1)
def load_default_model() -> PortraitRigFaceModel:
    """The shipped model (``face/data/portraitrig_face_v1.npz``) on the CPU, cached."""
    return PortraitRigFaceModel.load(DEFAULT_PATH)


__all__ = ["PortraitRigFaceModel", "load_default_model", "gaze_rotation", "MODEL_ID", "DEFAULT_PATH"]
