"""Image fidelity: PSNR and SSIM on the whole image and inside a (face) mask.

Images are (H, W, 3) (or (H, W)) uint8 or float arrays; ``data_range`` defaults to 255 for
uint8 and 1 for float. Masks are (H, W) bool or float weights in [0, 1].
SSIM is scikit-image's (uniform 7x7 window, ``structural_similarity``); the masked SSIM is
the mean of its full SSIM map inside the mask, with the same border of (window - 1) / 2 pixels
left out that scikit-image leaves out of its mean, so an all-ones mask gives the plain SSIM.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

SSIM_WIN = 7


def _pair(a, b, data_range):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if data_range is None:
        if (a.dtype == np.uint8) != (b.dtype == np.uint8):
            raise ValueError(f"one image is {a.dtype}, the other {b.dtype}: pass data_range, or give "
                             "both as uint8 (0..255) or both as float (0..1)")
        data_range = 255.0 if a.dtype == np.uint8 else 1.0
    return a.astype(np.float64), b.astype(np.float64), float(data_range)


def _weights(mask, shape) -> np.ndarray:
    m = np.asarray(mask, dtype=np.float64)
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask shape {m.shape} does not match image {tuple(shape[:2])}")
    return np.clip(m, 0, 1)


PSNR_CAP = 120.0   # dB an exact copy counts as where PSNRs are averaged (its own PSNR is infinite)


def psnr(a, b, mask=None, data_range: float | None = None) -> float:
    """PSNR in dB (inf for identical images: averages count them at ``PSNR_CAP``); with
    ``mask``, the MSE is the mask-weighted mean over the masked pixels (all channels)."""
    x, y, r = _pair(a, b, data_range)
    if mask is None:
        if np.array_equal(x, y):
            return float("inf")
        return float(peak_signal_noise_ratio(x, y, data_range=r))
    w = _weights(mask, x.shape)
    if w.sum() <= 0:
        return float("nan")
    se = (x - y) ** 2
    if se.ndim == 3:
        se = se.mean(-1)
    mse = float((se * w).sum() / w.sum())
    return float("inf") if mse == 0 else float(10 * np.log10(r * r / mse))


def ssim_map(a, b, data_range: float | None = None) -> np.ndarray:
    """(H, W) SSIM map (mean over channels) from scikit-image."""
    x, y, r = _pair(a, b, data_range)
    kw = {"channel_axis": -1} if x.ndim == 3 else {}
    _, s = structural_similarity(x, y, data_range=r, win_size=SSIM_WIN, full=True, **kw)
    return s.mean(-1) if s.ndim == 3 else s


def ssim(a, b, mask=None, data_range: float | None = None) -> float:
    """Mean SSIM in [-1, 1] (1 for identical images), over the image or inside ``mask``."""
    x, y, r = _pair(a, b, data_range)
    if mask is None:
        kw = {"channel_axis": -1} if x.ndim == 3 else {}
        return float(structural_similarity(x, y, data_range=r, win_size=SSIM_WIN, **kw))
    w = _weights(mask, x.shape).copy()
    pad = (SSIM_WIN - 1) // 2
    w[:pad], w[-pad:], w[:, :pad], w[:, -pad:] = 0, 0, 0, 0
    if w.sum() <= 0:
        return float("nan")
    return float((ssim_map(x, y, r) * w).sum() / w.sum())


def image_metrics(generated, reference, mask=None) -> dict:
    """{psnr, ssim} and, with a mask, {psnr_masked, ssim_masked}."""
    out = {"psnr": psnr(generated, reference), "ssim": ssim(generated, reference)}
    if mask is not None:
        out["psnr_masked"] = psnr(generated, reference, mask)
        out["ssim_masked"] = ssim(generated, reference, mask)
    return out


__all__ = ["psnr", "ssim", "ssim_map", "image_metrics"]
