"""Rig-level edits: pure functions ``RigParams -> RigParams`` (inputs are never modified).

Render the result with :func:`portraitrig.render.buffers.render_buffers` and a neural renderer.
Angles are degrees in the public API; params store radians.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle
from portraitrig.light import sh

_ENV_SUFFIXES = (".hdr", ".exr", ".pic", ".png", ".jpg", ".jpeg")


def resolve_light(light: Any, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Any light spec -> (batch, 9, 3) tensor.

    Accepts: a preset name (``sh.PRESETS``); an environment-map path (.hdr/.exr/.png/.jpg,
    normalised to mean ambient 1); a (9, 3) or (B, 9, 3) tensor/array (B = 1 or ``batch``);
    another fit's ``RigParams`` (its light); ``(azimuth_deg, elevation_deg)`` or a 3-vector
    towards the light; a dict of :func:`sh.light_from_direction` arguments.
    """
    if isinstance(light, RigParams):
        L = light.light
    elif isinstance(light, (str, Path)):
        if isinstance(light, str) and light in sh.PRESETS:
            L = sh.preset(light)
        elif Path(light).suffix.lower() in _ENV_SUFFIXES:
            L = sh.light_from_environment_map(light)
        else:
            raise InputError(str(light), f"neither a light preset ({', '.join(sorted(sh.PRESETS))}) "
                                         "nor an environment map (.hdr/.exr/.png/.jpg)")
    elif isinstance(light, dict):
        L = sh.light_from_direction(**light)
    else:
        L = torch.as_tensor(light, dtype=torch.float32)
        if L.numel() in (2, 3):
            L = sh.light_from_direction(L)
    L = L.to(device=device, dtype=dtype)
    if L.ndim == 2:
        L = L[None]
    if L.shape[1:] != (9, 3) or L.shape[0] not in (1, batch):
        raise ValueError(f"light must be (9, 3) or (B, 9, 3) with B = 1 or {batch}, got {tuple(L.shape)}")
    return L.expand(batch, 9, 3).clone()


def relight(params: RigParams, light: Any, keep_exposure: bool = False, strength: float = 1.0) -> RigParams:
    """New params with the light replaced (see :func:`resolve_light` for the accepted specs).

    keep_exposure: relative relighting — the camera-facing side of the face keeps the photo's
    mean brightness (and, for a white light, its colour balance; a coloured light keeps its
    colour), only where the light comes from changes (:func:`portraitrig.light.sh.match_exposure`). What a
    person model trained on a few photos can render: absolute presets are often much brighter or
    darker than anything it saw. strength: blend from the photo's own light (0) to the new one
    (1; values above 1 extrapolate)."""
    L = resolve_light(light, len(params), params.device, params.light.dtype)
    if keep_exposure:
        L = sh.match_exposure(L, params.light)
    if strength != 1.0:
        L = params.light + strength * (L - params.light)
    return params.replace(light=L)


def set_expression(params: RigParams, expression: torch.Tensor | None = None,
                   from_params: RigParams | None = None, *, model=None, **controls: float) -> RigParams:
    """New params with another expression.

    expression: (n_expr,) or (B, n_expr) coefficients; or ``from_params``: take the expression of
    another fit (its item 0 for all when it has one item). Named ``controls`` (e.g.
    ``smile=0.8``) are then added by :func:`portraitrig.face.controls.apply_controls` (with
    ``model``, default: the shipped model).
    """
    B = len(params)
    if expression is not None and from_params is not None:
        raise ValueError("give expression or from_params, not both")
    if from_params is not None:
        expression = from_params.expression
    e = params.expression if expression is None else torch.as_tensor(expression).to(params.expression)
    if e.ndim == 1:
        e = e[None]
    if e.shape[-1] != params.expression.shape[-1] or e.shape[0] not in (1, B):
        raise ValueError(f"expression must be ({params.expression.shape[-1]},) or (B, ...) with B = 1 or {B}, "
                         f"got {tuple(e.shape)}")
    e = e.expand(B, -1).clone()
    if controls:
        from portraitrig.face.controls import apply_controls

        e = apply_controls(e, model=model, **controls)
    return params.replace(expression=e)


def rotate_head(params: RigParams, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, *,
                centre: torch.Tensor | Sequence[float] | None = None, model=None) -> RigParams:
    """Turn the head by (yaw, pitch, roll) degrees composed in head space
    (``R_new = R @ euler_to_matrix(yaw, pitch, roll)``: about the head's own axes, right-hand
    rule as :func:`~portraitrig.face.params.euler_to_matrix`, so for an upright head positive yaw
    turns the nose towards image left and positive pitch turns it down).

    The head-space point ``centre`` (default: the centroid of the model's canonical vertices for
    each item when ``model`` is given, else the head-space origin) keeps its place in the crop.
    """
    B, dt, dev = len(params), params.rotation.dtype, params.device
    ang = torch.deg2rad(torch.tensor([yaw, pitch, roll], dtype=dt, device=dev))
    D = euler_to_matrix(ang[0], ang[1], ang[2])
    R0 = axis_angle_to_matrix(params.rotation)
    R1 = R0 @ D
    if centre is None and model is not None:
        c = model.canonical(params.identity, params.expression, params.gaze).mean(1)  # (B, 3)
    elif centre is not None:
        c = torch.as_tensor(centre, dtype=dt, device=dev).reshape(-1, 3).expand(B, 3)
    else:
        c = torch.zeros(B, 3, dtype=dt, device=dev)
    s = params.scale
    shift = s * ((R0 @ c[..., None]) - (R1 @ c[..., None]))[..., :2, 0]
    return params.replace(rotation=matrix_to_axis_angle(R1), translation=params.translation + shift)


def move_in_image(params: RigParams, matrix: torch.Tensor, shift: torch.Tensor) -> RigParams:
    """Move the head by an image-plane similarity ``x -> matrix @ x + shift`` (crop NDC; matrix
    (2, 2) or (B, 2, 2) = k times a rotation, shift (2,) or (B, 2)): every projected point of
    the head lands where the map takes it (weak perspective: the scale takes k, the rotation
    turns about the camera axis by the matrix's angle, the translation is mapped)."""
    dt, dev, B = params.scale.dtype, params.scale.device, len(params)
    M = torch.as_tensor(matrix, dtype=dt, device=dev).reshape(-1, 2, 2).expand(B, 2, 2)
    d = torch.as_tensor(shift, dtype=dt, device=dev).reshape(-1, 2).expand(B, 2)
    k = torch.sqrt((M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]).abs())
    if not bool((k > 0).all()):
        raise ValueError("move_in_image: the matrix must be a non-degenerate similarity")
    c, s = M[:, 0, 0] / k, M[:, 1, 0] / k
    Rz = torch.zeros(B, 3, 3, dtype=dt, device=dev)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
    rot = matrix_to_axis_angle(Rz @ axis_angle_to_matrix(params.rotation))
    t = (M @ params.translation[..., None])[..., 0] + d
    return params.replace(scale=params.scale * k[:, None], rotation=rot, translation=t)


def set_gaze(params: RigParams, yaw_deg: float | torch.Tensor = 0.0, pitch_deg: float | torch.Tensor = 0.0) -> RigParams:
    """Both eyes to (yaw, pitch) degrees in head space (positive yaw: towards image right,
    positive pitch: down; 0, 0 looks straight ahead of the head)."""
    B = len(params)
    yaw = torch.deg2rad(torch.as_tensor(yaw_deg, dtype=params.gaze.dtype, device=params.device)).reshape(-1).expand(B)
    pitch = torch.deg2rad(torch.as_tensor(pitch_deg, dtype=params.gaze.dtype, device=params.device)).reshape(-1).expand(B)
    g = torch.stack([yaw, pitch], -1)[:, None, :].expand(B, 2, 2).clone()
    return params.replace(gaze=g)


def gaze_from_direction(params: RigParams, direction: torch.Tensor | Sequence[float],
                        space: str = "camera") -> RigParams:
    """Both eyes look along ``direction`` ((3,) or (B, 3); camera axes by default, or 'head'):
    e.g. (0, 0, -1) in camera space looks into the camera whatever the head pose."""
    B = len(params)
    d = torch.as_tensor(direction, dtype=params.gaze.dtype, device=params.device).reshape(-1, 3).expand(B, 3)
    if space == "camera":
        d = (params.rotation_matrix().transpose(1, 2) @ d[..., None])[..., 0]
    elif space != "head":
        raise ValueError("space must be 'camera' or 'head'")
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    yaw = torch.atan2(d[:, 0], -d[:, 2])
    pitch = torch.atan2(d[:, 1], torch.sqrt(d[:, 0] ** 2 + d[:, 2] ** 2))
    return params.replace(gaze=torch.stack([yaw, pitch], -1)[:, None, :].expand(B, 2, 2).clone())


def sweep(params: RigParams, edit_fn: Callable[[RigParams, Any], RigParams], values: Iterable[Any]) -> RigParams:
    """Concatenate ``edit_fn(params, v)`` for each value (value-major: all items for the first
    value, then the next), e.g. ``sweep(p, lambda p, a: relight(p, (a, 20)), range(-90, 91, 30))``."""
    out = [edit_fn(params, v) for v in values]
    if not out:
        raise ValueError("sweep needs at least one value")
    return RigParams.cat(out)


def light_sweep_directions(n: int = 8, elevation_deg: float = 20.0, span_deg: float = 180.0) -> list[tuple[float, float]]:
    """``n`` (azimuth, elevation) pairs evenly over ``span_deg`` centred on the front."""
    if n == 1:
        return [(0.0, elevation_deg)]
    return [(-span_deg / 2 + span_deg * k / (n - 1), elevation_deg) for k in range(n)]


__all__ = ["resolve_light", "relight", "set_expression", "rotate_head", "move_in_image", "set_gaze",
           "gaze_from_direction", "sweep", "light_sweep_directions"]
