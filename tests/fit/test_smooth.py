import math

import pytest
import torch

from portraitrig.face.params import (RigParams, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle,
                                    matrix_to_euler)
from portraitrig.fit.smooth import local_linear, smooth_params


class TinyModel:
    id, n_id, n_expr, n_vertices = "tiny", 2, 3, 4
    mean_albedo = torch.full((4, 3), 0.5)
    default_scale, default_translation = 0.5, (0.0, 0.1)


def video(T, yaw):
    p = RigParams.neutral(TinyModel(), batch=T, dtype=torch.float64)
    R = euler_to_matrix(yaw, torch.zeros(T, dtype=torch.float64), torch.zeros(T, dtype=torch.float64))
    return p.replace(rotation=matrix_to_axis_angle(R))


def centre_of_mass(x):
    t = torch.arange(len(x), dtype=x.dtype)
    return float((t * x).sum() / x.sum())


def test_removes_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g, dtype=torch.float64)
    assert local_linear(x, 1.5).std() < 0.6 * x.std()


def test_ramp_has_no_lag_anywhere():
    t = torch.arange(60, dtype=torch.float64)[:, None]
    ramp = 0.3 * t - 2
    assert torch.allclose(local_linear(ramp, 2.0), ramp, atol=1e-9)   # ends included


def test_bump_centre_of_mass_and_step_sharpness():
    t = torch.arange(80, dtype=torch.float64)
    bump = torch.exp(-0.5 * ((t - 31.0) / 4) ** 2)[:, None]
    assert centre_of_mass(local_linear(bump, 1.5)[:, 0]) == pytest.approx(centre_of_mass(bump[:, 0]), abs=1e-6)
    step = (t >= 40).double()[:, None]
    s = local_linear(step, 1.5)[:, 0]
    assert s[39] < 0.5 < s[40]                      # centred: the step stays where it was
    rise = int(((s > 0.1) & (s < 0.9)).sum())
    assert rise <= 4                                # 10%-90% within 4 frames at sigma 1.5


def test_smooth_params_rotation_ramp_through_180_degrees():
    T = 50
    yaw = torch.linspace(math.radians(150), math.radians(210), T, dtype=torch.float64)
    p = video(T, yaw)
    g = torch.Generator().manual_seed(1)
    noisy = p.replace(translation=p.translation + 0.01 * torch.randn(T, 2, generator=g, dtype=torch.float64))
    s = smooth_params(noisy, sigma_frames=2.0)
    got = matrix_to_euler(s.rotation_matrix())[:, 0]
    diff = torch.remainder(got - yaw + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < math.radians(0.05)
    assert (s.translation - p.translation).std() < 0.6 * (noisy.translation - p.translation).std()
    assert torch.allclose(s.scale, p.scale) and s.albedo.shape == p.albedo.shape


def test_fps_scales_sigma_and_zero_is_identity():
    g = torch.Generator().manual_seed(2)
    p = video(40, 0.1 * torch.randn(40, generator=g, dtype=torch.float64))
    assert torch.allclose(smooth_params(p, 0).rotation, p.rotation, atol=1e-9)
    a = smooth_params(p, 1.5, fps=60).rotation
    b = smooth_params(p, 3.0).rotation
    assert torch.allclose(a, b)


@pytest.mark.parametrize("sigma", [0.05, 0.2, 1e-3])
def test_kernel_narrower_than_a_frame_leaves_tracks_alone(sigma):
    """Video fits with a large frame stride ask for sigma << 1 kept frame: nothing to smooth,
    and never NaN or zeros (a 4-frame clip at stride 20 once crashed the albedo solve)."""
    x = torch.randn(4, 5, dtype=torch.float64) + 3.0
    y = local_linear(x, sigma)
    assert torch.isfinite(y).all()
    assert torch.allclose(y, x, atol=1e-2 if sigma == 0.2 else 1e-9)


def test_frame_times_smooth_a_track_with_gaps_as_the_video_ran():
    """Frames left out (no face) between samples: with their frame numbers the fit weighs each
    neighbour by its distance in frames, so a ramp over real time stays exact across the gap
    (taken as adjacent frames, it bends there); consecutive numbers smooth as no numbers do; a
    lone sample between gaps keeps its value; bad numbers are refused."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(local_linear(x, 1.5, times=torch.arange(50) + 7), local_linear(x, 1.5))
    t = torch.cat([torch.arange(0, 20), torch.arange(32, 50)]).double()      # 12 frames without a face
    ramp = (0.4 * t - 1)[:, None].repeat(1, 2)
    assert torch.allclose(local_linear(ramp, 2.0, times=t), ramp, atol=1e-9)
    assert float((local_linear(ramp, 2.0) - ramp).abs().max()) > 0.1          # as adjacent frames: bent
    # the gap's two sides do not pull on each other: a step across it stays a step
    step = (t >= 30).double()[:, None]
    torch.testing.assert_close(local_linear(step, 1.5, times=t), step, atol=1e-6, rtol=0)
    assert float((local_linear(step, 1.5) - step).abs().max()) > 0.1
    lone = torch.tensor([0.0, 1, 2, 3, 20, 40, 41, 42, 43])
    v = torch.randn(9, 1, generator=g, dtype=torch.float64)
    assert float(local_linear(v, 1.5, times=lone)[4, 0]) == pytest.approx(float(v[4, 0]))
    for bad in ([0, 1, 1, 2, 3], [0, 1, 2, 3], [0, 1, float("nan"), 3, 4], [0, 0.5, 1, 2, 3]):
        with pytest.raises(ValueError, match="times"):
            local_linear(torch.zeros(5, 1), 1.5, times=bad)


def test_smooth_params_with_frame_times():
    t = torch.cat([torch.arange(0, 10), torch.arange(25, 40)])
    yaw = 0.02 * t.double()
    p = video(len(t), yaw)
    err = [float((matrix_to_euler(axis_angle_to_matrix(q.rotation))[:, 0] - yaw).abs().max())
           for q in (smooth_params(p, sigma_frames=2.0, times=t), smooth_params(p, sigma_frames=2.0))]
    assert err[0] < 1e-4 < 0.01 < err[1], err      # the yaw ramp kept across the gap; as adjacent, bent
    torch.testing.assert_close(smooth_params(p, 2.0, times=torch.arange(len(t))).expression,
                               smooth_params(p, 2.0).expression)
