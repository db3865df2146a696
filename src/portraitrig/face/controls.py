"""Named expression controls and gaze helpers, usable without knowing the expression basis.

Each control is a direction in expression space learned from video (scripts/learn_face_model.py:
expression coefficients regressed jointly on measured landmark features, so a control moves its
own feature while holding the others): ``smile`` (mouth-corner lift), ``jaw_open`` (inner lip
gap), ``brows_raised`` (brow-to-lid height), ``eye_closed_left`` / ``eye_closed_right``
(subject's left / right lid closure), ``pucker`` (mouth narrowing), ``frown`` (brows drawn
together). Amount 1.0 is a strong, natural expression (the 95th percentile seen in the data;
for the eyes: fully closed), 0 changes nothing, negative amounts go the other way.
"""
from __future__ import annotations

import math

import torch

from portraitrig.face.params import RigParams


def _model(model):
    if model is None:
        from portraitrig.face.model import load_default_model

        model = load_default_model()
    return model


def control_names(model=None) -> list[str]:
    return list(_model(model).control_names)


def apply_controls(params_or_expression: RigParams | torch.Tensor, model=None,
                   **amounts: float | torch.Tensor) -> RigParams | torch.Tensor:
    """Add named control amounts to an expression.

    params_or_expression: RigParams, or a (B, n_expr) expression tensor.
    amounts: name=float or (B,) tensor, e.g. ``smile=1.0, eye_closed_left=0.5``.
    Returns the same kind as given (RigParams: a copy with the new expression)."""
    model = _model(model)
    names = model.control_names
    expr = params_or_expression.expression if isinstance(params_or_expression, RigParams) else params_or_expression
    out = expr
    for name, amount in amounts.items():
        if name not in names:
            raise ValueError(f"unknown expression control {name!r}; known: {', '.join(names)}")
        a = torch.as_tensor(amount, dtype=expr.dtype, device=expr.device).reshape(-1, 1)
        out = out + a * model.control_dirs[names.index(name)].to(expr)
    if isinstance(params_or_expression, RigParams):
        return params_or_expression.replace(expression=out)
    return out


def measure_controls(expression: RigParams | torch.Tensor, model=None) -> dict[str, torch.Tensor]:
    """Approximate inverse of :func:`apply_controls`: control amounts (each (B,)) that the
    (B, n_expr) expression shows relative to the model's mean expression (0 coefficients).
    Linear, so ``measure(apply(e, **a)) = measure(e) + a`` for the named controls."""
    model = _model(model)
    expr = expression.expression if isinstance(expression, RigParams) else expression
    m = expr @ model.control_measure.to(expr).T
    return {n: m[:, k] for k, n in enumerate(model.control_names)}


def gaze_from_direction(yaw_deg: float | torch.Tensor, pitch_deg: float | torch.Tensor = 0.0,
                        batch: int | None = None) -> torch.Tensor:
    """(B, 2, 2) gaze with both eyes looking the same way: yaw (degrees, positive to image
    right) and pitch (degrees, positive down) in head space; scalars or (B,) tensors."""
    yaw = torch.as_tensor(yaw_deg, dtype=torch.float32).reshape(-1)
    pitch = torch.as_tensor(pitch_deg, dtype=torch.float32).reshape(-1)
    yaw, pitch = torch.broadcast_tensors(yaw, pitch)
    if batch is not None and yaw.shape[0] == 1:
        yaw, pitch = yaw.expand(batch), pitch.expand(batch)
    g = torch.stack([yaw, pitch], -1) * (math.pi / 180)
    return g[:, None, :].expand(-1, 2, 2).clone()


__all__ = ["apply_controls", "measure_controls", "gaze_from_direction", "control_names"]
