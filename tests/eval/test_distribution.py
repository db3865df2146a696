import numpy as np
import pytest

from portraitrig.eval.distribution import frechet_distance, frechet_identity_distance, gaussian_stats


def test_identical_sets_are_zero():
    x = np.random.default_rng(0).normal(size=(300, 16))
    assert frechet_identity_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_shifted_set_is_squared_mean_shift():
    x = np.random.default_rng(1).normal(size=(400, 8))
    shift = np.linspace(-0.5, 0.5, 8)
    assert frechet_identity_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_known_trace_term():
    # N(mu1, a^2 I) vs N(mu2, b^2 I) in D dims: |mu1 - mu2|^2 + D (a - b)^2
    D, a, b = 6, 0.5, 2.0
    mu1, mu2 = np.zeros(D), np.full(D, 0.3)
    fd = frechet_distance(mu1, a * a * np.eye(D), mu2, b * b * np.eye(D))
    assert fd == pytest.approx(D * 0.09 + D * (a - b) ** 2)


def test_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(2)
    fd = frechet_identity_distance(rng.normal(size=(10, 128)) * 0.05, rng.normal(size=(12, 128)) * 0.05 + 0.1)
    assert np.isfinite(fd) and fd > 128 * 0.01 * 0.9


def test_stats_shapes():
    mu, cov = gaussian_stats(np.ones((1, 4)))
    assert mu.shape == (4,) and cov.shape == (4, 4) and not cov.any()
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
