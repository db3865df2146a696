"""Rig consistency: how well the rig parameters re-fitted on generated images match the
parameters that were requested.

Everything takes two :class:`~portraitrig.face.params.RigParams` of the same batch size B (and,
for mesh errors, the :class:`~portraitrig.face.base.FaceModel`), so it does not depend on how the
re-fit was made. Compare the figures with the *floor*: the same figures between two fits of the
same real images (fitted twice, or on an augmented copy) — :func:`rig_floor` — since the fitter's
own noise bounds what a perfect generator can reach.

Units: expression error of the mesh in % of the inter-ocular distance (IOD, between the eye
centres = midpoints of the eye corners of the neutral mesh); angles in degrees; shading in the
units of ``sh_basis(n) @ light`` (ambient white = 1).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from portraitrig.face.params import RigParams, rotation_angle_degrees

# MediaPipe eye corners: subject's right eye (outer, inner), subject's left eye (inner, outer)
EYE_CORNERS = ((33, 133), (362, 263))


def _check(a: RigParams, b: RigParams):
    if len(a) != len(b):
        raise ValueError(f"batch sizes differ: {len(a)} vs {len(b)}")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def inter_ocular(landmarks: torch.Tensor) -> torch.Tensor:
    """(B,) distance between the eye centres of (B, 478, 3) MediaPipe-ordered points."""
    r = landmarks[:, list(EYE_CORNERS[0])].mean(1)
    l = landmarks[:, list(EYE_CORNERS[1])].mean(1)
    return (r - l).norm(dim=-1)


@torch.no_grad()
def expression_error(requested: RigParams, fitted: RigParams, model=None) -> dict[str, np.ndarray]:
    """Per item: ``expression_coef_mae`` (mean abs coefficient difference) and, with a model,
    ``expression_vertex_pct_iod``: mean distance over the 478 landmark vertices between the
    expression-only meshes (requested identity, gaze zero, requested vs fitted expression),
    in % of IOD."""
    _check(requested, fitted)
    out = {"expression_coef_mae": _np((requested.expression - fitted.expression).abs().mean(-1))}
    if model is not None:
        ident = requested.identity.float()
        gaze = torch.zeros_like(requested.gaze, dtype=torch.float32)
        lm = model.landmark_index
        v_req = model.canonical(ident, requested.expression.float(), gaze)[:, lm]
        v_fit = model.canonical(ident, fitted.expression.float(), gaze)[:, lm]
        neutral = model.canonical(ident, torch.zeros(len(requested), model.n_expr, device=ident.device), gaze)
        iod = inter_ocular(neutral[:, lm])
        out["expression_vertex_pct_iod"] = _np((v_req - v_fit).norm(dim=-1).mean(-1) / iod * 100)
    return out


def pose_error(requested: RigParams, fitted: RigParams) -> np.ndarray:
    """(B,) geodesic angle between head rotations, degrees."""
    _check(requested, fitted)
    return _np(rotation_angle_degrees(requested.rotation_matrix().double(), fitted.rotation_matrix().double()))


def gaze_directions(gaze: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) [yaw, pitch] radians -> (B, 2, 3) unit gaze vectors in head space
    (yaw > 0 towards image right = +x, pitch > 0 down = +y, straight ahead = -z)."""
    yaw, pitch = gaze[..., 0], gaze[..., 1]
    return torch.stack([torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch),
                        -torch.cos(yaw) * torch.cos(pitch)], -1)


def gaze_error(requested: RigParams, fitted: RigParams) -> np.ndarray:
    """(B,) angle between requested and fitted gaze directions (head frame), degrees, mean of
    both eyes."""
    _check(requested, fitted)
    a, b = gaze_directions(requested.gaze.double()), gaze_directions(fitted.gaze.double())
    cos = (a * b).sum(-1).clamp(-1, 1)
    return _np(torch.rad2deg(torch.acos(cos)).mean(-1))


def sphere_normals(n: int = 2000, hemisphere: bool = True) -> torch.Tensor:
    """(n, 3) near-uniform unit normals (Fibonacci sphere); with ``hemisphere`` only those
    facing the camera (z < 0), which are the ones a portrait shows."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = i * np.pi * (3 - np.sqrt(5))
    v = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    return v[v[:, 2] < 0] if hemisphere else v


def light_error(requested: torch.Tensor, fitted: torch.Tensor,
                basis: Callable[[torch.Tensor], torch.Tensor] | None = None,
                normals: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Shading errors of (B, 9, 3) SH lights over camera-facing normals.

    ``light_rmse``: RMSE of shading (all normals and channels).
    ``light_rmse_scale_inv``: RMSE after scaling each light's shading to unit RMS per channel
    (in [0, 2]; ignores the albedo/light scale and colour ambiguity of photometric fits).
    basis: (N, 3) normals -> (N, 9) SH basis; default ``portraitrig.light.sh.sh_basis``.
    """
    if basis is None:
        from portraitrig.light.sh import sh_basis as basis
    n = sphere_normals() if normals is None else normals
    Y = basis(n.double()).double()                     # (N, 9)
    s_req = torch.einsum("nk,bkc->bnc", Y, requested.double())
    s_fit = torch.einsum("nk,bkc->bnc", Y, fitted.double())
    rmse = ((s_req - s_fit) ** 2).mean((1, 2)).sqrt()

    def unit(s):
        return s / (s ** 2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)

    inv = ((unit(s_req) - unit(s_fit)) ** 2).mean((1, 2)).sqrt()
    return {"light_rmse": _np(rmse), "light_rmse_scale_inv": _np(inv)}


def rig_consistency(requested: RigParams, fitted: RigParams, model=None,
                    basis: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """All per-item errors (name -> (B,) array): expression (coefficients; mesh % IOD with a
    model), ``pose_deg``, ``gaze_deg``, ``light_rmse``, ``light_rmse_scale_inv``."""
    out = expression_error(requested, fitted, model)
    out["pose_deg"] = pose_error(requested, fitted)
    out["gaze_deg"] = gaze_error(requested, fitted)
    out.update(light_error(requested.light, fitted.light, basis))
    return out


def rig_floor(fit_a: RigParams, fit_b: RigParams, model=None, basis=None) -> dict[str, np.ndarray]:
    """The same errors between two fits of the same real images (fitted twice, or once on an
    augmented copy): the noise floor of the fitter that rig consistency is judged against."""
    return rig_consistency(fit_a, fit_b, model, basis)


def summarize(errors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """name -> {mean, median, p90, n} of per-item errors (nan items ignored)."""
    out = {}
    for k, v in errors.items():
        v = np.asarray(v, np.float64).ravel()
        v = v[np.isfinite(v)]
        out[k] = ({"mean": float(v.mean()), "median": float(np.median(v)),
                   "p90": float(np.percentile(v, 90)), "n": int(v.size)} if v.size
                  else {"mean": float("nan"), "median": float("nan"), "p90": float("nan"), "n": 0})
    return out


def rig_report(requested: RigParams, fitted: RigParams, model=None,
               floor: tuple[RigParams, RigParams] | None = None, basis=None) -> dict:
    """{"generated": summary, "floor": summary or None} (see :func:`summarize`)."""
    gen = summarize(rig_consistency(requested, fitted, model, basis))
    flo = summarize(rig_floor(*floor, model=model, basis=basis)) if floor is not None else None
    return {"generated": gen, "floor": flo}


__all__ = ["EYE_CORNERS", "inter_ocular", "expression_error", "pose_error", "gaze_directions",
           "gaze_error", "sphere_normals", "light_error", "rig_consistency", "rig_floor",
           "summarize", "rig_report"]
