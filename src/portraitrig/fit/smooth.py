"""Zero-lag temporal smoothing of a video's RigParams.

Every parameter track is smoothed by Gaussian-weighted local linear regression (a centred,
zero-phase filter: at each frame a weighted straight line is fitted to the neighbouring
frames and evaluated there). It has no lag, reproduces ramps exactly (also at the clip's
ends, where a plain Gaussian would bend them), and keeps steps centred. Scale is smoothed in
log space; rotations as sign-aligned unit quaternions, re-normalised.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from portraitrig.face.params import RigParams, axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion

REFERENCE_FPS = 30.0


def support_radius(sigma: float) -> int:
    """Frames on each side of a frame that its smoothed value depends on (0 when ``sigma`` <= 0):
    a stretch of frames is smoothed exactly like the whole video when this many neighbours are
    given on each side."""
    return max(1, int(math.ceil(3 * sigma))) if sigma > 0 else 0


def frame_times(times, T: int, device=None) -> torch.Tensor:
    """(T,) float64 frame numbers of a track's samples, checked: increasing by at least one
    frame (frames of a video, some possibly left out); ValueError otherwise."""
    t = torch.as_tensor(times, dtype=torch.float64, device=device).reshape(-1)
    if t.numel() != T:
        raise ValueError(f"times: {T} frames need {T} frame numbers, got {t.numel()}")
    if not bool(torch.isfinite(t).all()) or (T > 1 and bool((t[1:] - t[:-1] < 1 - 1e-9).any())):
        raise ValueError("times must be finite frame numbers increasing by at least 1")
    return t


def local_linear(x: torch.Tensor, sigma: float, times=None) -> torch.Tensor:
    """Smooth (T, C) tracks along T with a Gaussian local linear fit of width ``sigma`` frames.
    ``times`` (T,): the samples' frame numbers when frames are missing between them (a video's
    frames without a face): the fit then weighs its neighbours by their distance in frames,
    so a gap is not smoothed across as if its two sides were adjacent; None: 0, 1, 2, ..."""
    T = x.shape[0]
    if sigma <= 0 or T < 3:
        return x.clone()
    r = support_radius(sigma)
    if times is not None:
        t = frame_times(times, T, x.device)
        if bool((t[1:] - t[:-1] > 1 + 1e-9).any()):
            return _local_linear_at(x, sigma, r, t)
    d = torch.arange(-r, r + 1, dtype=torch.float64, device=x.device)
    w = torch.exp(-0.5 * (d / sigma) ** 2)
    kernels = torch.stack([w, w * d, w * d * d])[:, None, :]        # (3, 1, K)
    xt = x.to(torch.float64).T[:, None, :]                              # (C, 1, T)
    ones = torch.ones(1, 1, T, dtype=torch.float64, device=x.device)
    # moments over the valid frames: S_k = sum w d^k, Y_k = sum w d^k y  (d = tau - t)
    S = F.conv1d(ones, kernels, padding=r)[0]                          # (3, T)
    Y = F.conv1d(xt, kernels[:2], padding=r)                           # (C, 2, T)
    # conv1d correlates: out[t] = sum_j k[j] in[t + j - r], so d = j - r = tau - t  (as wanted)
    det = S[0] * S[2] - S[1] ** 2
    # a kernel narrower than a frame gives its neighbours (almost) no weight: the line through
    # one point is undetermined, and the local constant fit Y0 / S0 (= the input) is the answer
    good = det > 1e-9 * S[0] * S[2]
    y = torch.where(good, (S[2] * Y[:, 0] - S[1] * Y[:, 1]) / torch.where(good, det, 1.0), Y[:, 0] / S[0])
    return y.T.to(x.dtype)


def _local_linear_at(x: torch.Tensor, sigma: float, r: int, t: torch.Tensor) -> torch.Tensor:
    """:func:`local_linear` of samples at frame numbers ``t`` (float64, increasing by at least
    one): each sample's neighbours within ``r`` frames, which lie within ``r`` places of it."""
    T = x.shape[0]
    j = torch.arange(T, device=x.device)[:, None] + torch.arange(-r, r + 1, device=x.device)[None]   # (T, K)
    inside = (j >= 0) & (j < T)
    j = j.clamp(0, T - 1)
    d = t[j] - t[:, None]                                              # tau - t, in frames
    w = torch.exp(-0.5 * (d / sigma) ** 2) * (inside & (d.abs() <= r))
    y = x.to(torch.float64)[j]                                          # (T, K, C)
    S0, S1, S2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
    Y0, Y1 = (w[..., None] * y).sum(1), ((w * d)[..., None] * y).sum(1)
    det = S0 * S2 - S1 ** 2
    good = (det > 1e-9 * S0 * S2)[:, None]           # a lone sample (a gap on both sides) keeps its value
    out = torch.where(good, (S2[:, None] * Y0 - S1[:, None] * Y1) / torch.where(good, det[:, None], 1.0),
                      Y0 / S0[:, None])
    return out.to(x.dtype)


def smooth_params(params: RigParams, sigma_frames: float = 1.5, fps: float | None = None,
                  times=None) -> RigParams:
    """Smooth a video's parameters (batch dimension = time, in frame order).

    sigma_frames: Gaussian width in frames at 30 fps; with ``fps`` given it is scaled by
    fps / 30 so that the time constant stays the same in seconds. 0 returns a copy.
    ``times``: the items' frame numbers (increasing) when frames are missing between them
    (:func:`local_linear`).
    """
    sigma = sigma_frames * (fps / REFERENCE_FPS if fps else 1.0)
    T = len(params)

    def sm(t: torch.Tensor) -> torch.Tensor:
        return local_linear(t.reshape(T, -1), sigma, times).reshape(t.shape)

    q = matrix_to_quaternion(axis_angle_to_matrix(params.rotation.double()))
    # keep consecutive quaternions in one hemisphere (q and -q are the same rotation)
    flips = torch.where((q[1:] * q[:-1]).sum(-1) >= 0, 1.0, -1.0).to(q.dtype)
    sign = torch.cat([torch.ones(1, dtype=q.dtype, device=q.device), flips]).cumprod(0)
    q = sm(q * sign[:, None])
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, v = q[:, :1], q[:, 1:]
    rot = matrix_to_axis_angle(_quaternion_to_matrix(w, v)).to(params.rotation.dtype)
    return params.replace(
        scale=torch.exp(sm(torch.log(params.scale.clamp_min(1e-12)))),
        rotation=rot,
        translation=sm(params.translation), identity=sm(params.identity),
        expression=sm(params.expression), gaze=sm(params.gaze), light=sm(params.light),
        albedo=sm(params.albedo).clamp(0, 1), sources=list(params.sources))


def _quaternion_to_matrix(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(T, 1) scalar and (T, 3) vector parts of unit quaternions -> (T, 3, 3)."""
    x, y, z = v.unbind(-1)
    w = w[:, 0]
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


__all__ = ["smooth_params", "local_linear", "support_radius", "frame_times"]
