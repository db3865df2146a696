import numpy as np
import pytest

from portraitrig.eval.video import flicker, inter_ocular_track, landmark_jitter, static_mask_from_boxes


def _track(T=120, noise=0.0, seed=0):
    """68-point track: a face of IOD 50 px moving smoothly, plus white noise (px)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-40, 40, (68, 2))
    base[[36, 39]] = [[-35, 0], [-15, 0]]
    base[[42, 45]] = [[15, 0], [35, 0]]   # eye centres 50 px apart
    t = np.arange(T)[:, None, None]
    motion = np.concatenate([100 + 20 * np.sin(t / 15), 80 + 10 * np.cos(t / 20)], -1)
    return base[None] + motion + rng.normal(0, noise, (T, 68, 2))


def test_iod_of_68_points():
    assert np.allclose(inter_ocular_track(_track(5)), 50.0)


def test_smooth_motion_has_little_jitter_and_noise_is_measured():
    clean = landmark_jitter(_track())
    assert clean["jitter_pct_iod"] < 0.05 and clean["accel_pct_iod"] < 0.5
    noisy = landmark_jitter(_track(noise=1.0))
    # 2-D white noise of 1 px per axis: residual norm RMS ~ sqrt(2) * sqrt(1 - h0) px,
    # h0 = centre weight of the 9-tap quadratic Savitzky-Golay filter (59/231)
    expected = np.sqrt(2 * (1 - 59 / 231)) / 50 * 100
    assert noisy["jitter_pct_iod"] == pytest.approx(expected, rel=0.1)
    # second differences of white noise: variance 6 per axis
    assert noisy["accel_pct_iod"] == pytest.approx(np.sqrt(12) / 50 * 100, rel=0.1)


def test_static_mask_and_flicker():
    mask = static_mask_from_boxes([[20, 20, 40, 40]], (64, 48), margin=0.5)
    assert mask.shape == (48, 64)
    assert not mask[10:50, 10:50].any() and mask[:10].all() and mask[:, 50:].all()
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8), 5, 0)
    frames[:, 15:45, 15:45] = rng.integers(0, 256, (5, 30, 30, 3), dtype=np.uint8)  # moving face
    assert flicker(frames, mask) == 0.0
    assert flicker(frames) > 1.0
    frames = frames.astype(np.int16)
    frames[1::2] += 3  # a global 3-level flicker every other frame
    assert flicker(np.clip(frames, 0, 255).astype(np.uint8)[:, :10], np.ones((10, 64))) == pytest.approx(3.0, abs=0.1)


def test_flicker_needs_two_frames():
    with pytest.raises(ValueError):
        flicker(np.zeros((1, 8, 8, 3), np.uint8))
