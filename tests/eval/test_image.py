import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from portraitrig.eval.image import image_metrics, psnr, ssim


def _img(seed=0, size=64):
    rng = np.random.default_rng(seed)
    # smooth-ish content in [0.2, 0.8] so added noise is not clipped
    base = rng.uniform(0.2, 0.8, (size // 8, size // 8, 3))
    return np.kron(base, np.ones((8, 8, 1)))


def test_identical_images():
    a = (_img() * 255).astype(np.uint8)
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0)
    mask = np.zeros(a.shape[:2], bool)
    mask[16:48, 16:48] = True
    assert psnr(a, a, mask) == math.inf
    assert ssim(a, a, mask) == pytest.approx(1.0)


def test_psnr_of_gaussian_noise():
    a = _img(size=256)
    sigma = 0.05
    b = a + np.random.default_rng(1).normal(0, sigma, a.shape)
    assert abs(psnr(b, a) - 10 * math.log10(1 / sigma ** 2)) < 0.3


def test_masked_psnr_counts_only_masked_pixels():
    a = _img(size=128)
    b = a.copy()
    mask = np.zeros(a.shape[:2], bool)
    mask[:, :64] = True
    sigma = 0.1
    b[:, :64] += np.random.default_rng(2).normal(0, sigma, (128, 64, 3))
    b[:, 64:] += 0.3  # large error outside the mask must not count
    assert abs(psnr(b, a, mask) - 10 * math.log10(1 / sigma ** 2)) < 0.3
    assert psnr(b, a) < psnr(b, a, mask) - 3


def test_uint8_uses_255_range():
    a = (_img(size=128) * 255).astype(np.uint8)
    b = a.copy()
    b[::2] += 4  # error of 4 levels on half of the rows: MSE 8
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 8), abs=1e-9)


def test_ssim_matches_skimage_and_full_mask():
    a = _img(3)
    b = np.clip(a + np.random.default_rng(4).normal(0, 0.05, a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=-1, data_range=1.0)
    assert ssim(a, b) == pytest.approx(ref)
    assert ssim(a, b, np.ones(a.shape[:2])) == pytest.approx(ref)


def test_masked_ssim_ignores_damage_outside_mask():
    a = _img(5, 128)
    b = a.copy()
    b[:, 80:] = np.random.default_rng(6).uniform(0, 1, (128, 48, 3))
    mask = np.zeros(a.shape[:2])
    mask[:, :64] = 1
    assert ssim(a, b, mask) == pytest.approx(1.0)
    assert ssim(a, b) < 0.8


def test_image_metrics_keys_and_shape_check():
    a = _img()
    m = image_metrics(a, a * 0.9, np.ones(a.shape[:2]))
    assert set(m) == {"psnr", "ssim", "psnr_masked", "ssim_masked"}
    with pytest.raises(ValueError):
        psnr(a, a[:32])


def test_mixed_dtypes_need_a_data_range():
    a = np.full((8, 8, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, a.astype(np.float64))
    assert psnr(a, a.astype(np.float64) + 1, data_range=255) == pytest.approx(10 * np.log10(255 ** 2), abs=1e-6)
