"""Image losses that need no downloaded weights, shared by the methods: SSIM with a uniform
window, finite-difference gradient L1, and their sum with L1 (:func:`image_loss`). Images are
(B, C, H, W) in [0, 1]; every loss is computed in float32."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ssim_torch(a: torch.Tensor, b: torch.Tensor, window: int = 7, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images in [0, 1] (uniform window), a differentiable scalar.
    ``valid`` (B, 1, H, W) bool: the mean over the pixels whose whole window is valid, so that
    nothing outside it (a crop's padding) changes the figure."""
    pad = window // 2
    mu_a = F.avg_pool2d(a, window, 1, pad, count_include_pad=False)
    mu_b = F.avg_pool2d(b, window, 1, pad, count_include_pad=False)
    va = F.avg_pool2d(a * a, window, 1, pad, count_include_pad=False) - mu_a ** 2
    vb = F.avg_pool2d(b * b, window, 1, pad, count_include_pad=False) - mu_b ** 2
    cov = F.avg_pool2d(a * b, window, 1, pad, count_include_pad=False) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    if valid is None:
        return s.mean()
    inner = 1 - F.max_pool2d(1 - valid.to(s.dtype), window, 1, pad)      # windows wholly inside
    return (s * inner).sum() / (inner.sum() * s.shape[1]).clamp_min(1)


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance of horizontal and vertical finite differences."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def image_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float, grad_weight: float):
    """(total, parts) of L1 + ssim_weight (1 - SSIM) + grad_weight gradient L1, in float32."""
    pred, target = pred.float(), target.float()
    l1 = (pred - target).abs().mean()
    parts = {"l1": l1.detach()}
    total = l1
    if ssim_weight > 0:
        s = ssim_torch(pred, target)
        total = total + ssim_weight * (1 - s)
        parts["ssim"] = s.detach()
    if grad_weight > 0:
        g = gradient_l1(pred, target)
        total = total + grad_weight * g
        parts["grad"] = g.detach()
    return total, parts


__all__ = ["ssim_torch", "gradient_l1", "image_loss"]
