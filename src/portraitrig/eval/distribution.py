"""Fréchet identity distance: the Fréchet (2-Wasserstein) distance between Gaussians fitted to
the dlib identity embeddings (128-d, see :mod:`portraitrig.eval.identity`) of a real and a
generated set. It is FID-like but it is NOT FID (no Inception features): it measures whether the
generated faces cover the identities of the real ones, not image quality. Units: squared
embedding distance (dlib's same-person threshold is 0.6 on the unsquared distance).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of (N, D) samples (unbiased covariance; zero for N = 1)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"expected (N, D) samples, got shape {x.shape}")
    cov = np.cov(x, rowvar=False) if x.shape[0] > 1 else np.zeros((x.shape[1], x.shape[1]))
    return x.mean(0), np.atleast_2d(cov)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Stability: when the product's square root is not finite (singular covariances, e.g. fewer
    samples than dimensions) ``eps`` is added to both diagonals; a small imaginary part from
    round-off is dropped (a large one raises)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("mean/covariance shapes do not match")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    # round-off can make identical sets come out a hair below zero
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)), 0.0)


def frechet_identity_distance(real, generated) -> float:
    """Fréchet identity distance between (N, 128) and (M, 128) dlib embeddings (see module)."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(generated))


__all__ = ["gaussian_stats", "frechet_distance", "frechet_identity_distance"]
