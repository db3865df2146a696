"""Motion transfer between two people's rig parameter sequences (pure functions on RigParams).

A source performer's sequence drives a target person: the output keeps the target's identity,
albedo, light and framing, and takes the source's expression, head pose and gaze.

- ``relative`` (default): the source's *changes* from its own neutral reference frame are
  applied to the target's reference frame (expression and gaze deltas added, the head's
  rotation relative to the reference composed onto the target's, its NDC shift and scale
  change carried over in proportion to the target's size). People's resting faces differ;
  only motion is transferred.
- ``absolute``: the source's expression, head rotation and gaze are copied as they are.

Blinks and mouth closure survive relative retargeting: the lid closure and jaw controls
(:mod:`portraitrig.face.controls`) are mapped piecewise linearly so that a source eye that
closes fully closes the target's eye fully, and a source mouth that closes closes the
target's, even when the two reference frames have them differently open.
"""
from __future__ import annotations

import torch

from portraitrig.face.params import RigParams, axis_angle_to_matrix, matrix_to_axis_angle

MODES = ("relative", "absolute")
# expression control -> its closed value (eye lids: 1 = fully closed; jaw: 0 = mouth closed)
CLOSURES = {"eye_closed_left": 1.0, "eye_closed_right": 1.0, "jaw_open": 0.0}


def neutral_frame(params: RigParams, model=None) -> int:
    """Index of the most neutral frame of a sequence: expression closest to the model's mean
    (0 coefficients), eyes open and mouth closed, head rotation closest to the sequence's
    median (one frame per call)."""
    from portraitrig.face.controls import measure_controls

    if len(params) == 0:
        raise ValueError("neutral_frame needs at least one frame")
    expr = params.expression.float()
    score = expr.square().mean(1)
    try:
        m = measure_controls(expr, model)
        for name in CLOSURES:
            if name in m:
                score = score + m[name].float().clamp_min(0).square()
    except (AttributeError, IndexError, RuntimeError):  # a model without named controls
        pass
    rot = params.rotation.float()
    score = score + (rot - rot.median(0).values).square().sum(1)
    return int(score.argmin())


def _closure_map(src: torch.Tensor, src_ref: torch.Tensor, tgt_ref: torch.Tensor, end: float) -> torch.Tensor:
    """Control amount of the target for source amounts ``src`` (B,): the source's way from its
    reference towards ``end`` maps linearly onto the target's way from its reference to
    ``end``; beyond ``end`` and on the other side of the reference, plain deltas."""
    span_s = end - src_ref
    span_t = end - tgt_ref
    toward = (src - src_ref) * torch.sign(span_s) > 0
    frac = ((src - src_ref) / torch.where(span_s.abs() > 1e-6, span_s, torch.ones_like(span_s))).clamp(max=1.0)
    inside = tgt_ref + frac * span_t
    past = (src - end) * torch.sign(span_s) > 0
    out = torch.where(toward & (span_s.abs() > 1e-6), inside, tgt_ref + (src - src_ref))
    return torch.where(past & toward, end + (src - end), out)


def _fit_batch(p: RigParams, n: int) -> RigParams:
    if len(p) == n:
        return p
    if len(p) != 1:
        raise ValueError(f"reference must have batch 1 or {n}, got {len(p)}")
    return p.repeat(n)


def retarget(source: RigParams, target_ref: RigParams, source_ref: RigParams | None = None,
             mode: str = "relative", head_pose: bool = True, gaze: bool = True,
             model=None, keep_closures: bool = True) -> RigParams:
    """The target (``target_ref``, batch 1 or len(source)) performing ``source`` (batch T).

    ``source_ref``: the source's neutral reference (batch 1; default its
    :func:`neutral_frame`). ``head_pose`` False keeps the target's head pose and framing;
    ``gaze`` False keeps the target's gaze. ``keep_closures``: map blinks and mouth closure
    (see the module doc; relative mode only). Returns RigParams of batch T with the target's
    identity, albedo, light, crop size and model; sources are the source's."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if source.model != target_ref.model:
        raise ValueError(f"source params are of model {source.model!r}, the target's of {target_ref.model!r}")
    T = len(source)
    dev, dt = target_ref.device, target_ref.scale.dtype
    source = source.to(dev, dt)
    tgt = _fit_batch(target_ref, T)
    if source_ref is None:
        source_ref = source[neutral_frame(source, model)]
    sref = _fit_batch(source_ref.to(dev, dt), T)
    out = {k: v.clone() for k, v in tgt.tensors().items()}
    if mode == "absolute":
        out["expression"] = source.expression.clone()
        if head_pose:
            out["rotation"] = source.rotation.clone()
        if gaze:
            out["gaze"] = source.gaze.clone()
    else:
        expr = tgt.expression + (source.expression - sref.expression)
        if keep_closures:
            expr = _keep_closures(expr, source.expression, sref.expression, tgt.expression, model)
        out["expression"] = expr
        if head_pose:
            delta = axis_angle_to_matrix(source.rotation) @ axis_angle_to_matrix(sref.rotation).transpose(1, 2)
            out["rotation"] = matrix_to_axis_angle(delta @ axis_angle_to_matrix(tgt.rotation))
            ratio = source.scale / sref.scale.clamp_min(1e-8)
            out["scale"] = tgt.scale * ratio
            size = tgt.scale / sref.scale.clamp_min(1e-8)  # the target's face size relative to the source's
            out["translation"] = tgt.translation + (source.translation - sref.translation) * size
        if gaze:
            out["gaze"] = tgt.gaze + (source.gaze - sref.gaze)
    return tgt.replace(**out, sources=list(source.sources) if source.sources else [""] * T)


def _keep_closures(expr: torch.Tensor, src: torch.Tensor, src_ref: torch.Tensor, tgt_ref: torch.Tensor,
                   model) -> torch.Tensor:
    from portraitrig.face.controls import apply_controls, measure_controls

    have = measure_controls(expr, model)
    ms, msr, mtr = measure_controls(src, model), measure_controls(src_ref, model), measure_controls(tgt_ref, model)
    fix = {name: _closure_map(ms[name], msr[name], mtr[name], end) - have[name]
           for name, end in CLOSURES.items() if name in have}
    return apply_controls(expr, model, **fix)


def hold_missing(found_params: RigParams, found) -> tuple[RigParams, int]:
    """A full sequence from the parameters of the frames where a face was found:
    ``found_params`` has one item per True in ``found`` (T,) bool, in order; a frame without a
    face holds the last good frame's parameters (the first good one before any). Returns
    (params of batch T, number of frames held)."""
    found = torch.as_tensor(found, dtype=torch.bool)
    n = int(found.sum())
    if n == 0:
        raise ValueError("no frame has parameters to hold")
    if n != len(found_params):
        raise ValueError(f"{len(found_params)} parameter sets for {n} found frames")
    pick = (found.long().cumsum(0) - 1).clamp_min(0)
    return found_params[pick], int(len(found) - n)


__all__ = ["MODES", "CLOSURES", "neutral_frame", "retarget", "hold_missing"]
