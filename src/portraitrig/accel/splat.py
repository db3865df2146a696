"""The Gaussian avatar's fast rasterizer: gsplat's tiled CUDA kernels (forward and backward) over
Gaussians already projected by :func:`portraitrig.methods.splat.raster.project`. The plain
PyTorch rasterizer (``rasterize_reference`` there) is the reference; tests compare the two on a
GPU (tests/methods/splat). gsplat is an optional dependency (the ``gaussians`` extra); its
kernels build on first use (~70 s on an H200 host)."""
from __future__ import annotations

import math

import torch

TILE = 16


def gsplat_available() -> bool:
    """Whether the fast path can run: CUDA and the gsplat package (its kernels build on first use)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401  (installed?)
    except ImportError:
        return False
    return True


def rasterize_gsplat(means2d: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor,
                     opacities: torch.Tensor, depths: torch.Tensor, radii: torch.Tensor, size: int,
                     tile: int = TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`portraitrig.methods.splat.raster.rasterize_reference` on gsplat's tiled CUDA kernels
    (same arguments and results)."""
    from gsplat.cuda._wrapper import isect_offset_encode, isect_tiles, rasterize_to_pixels

    B = means2d.shape[0]
    tiles = math.ceil(size / tile)
    # gsplat sorts by the depth's float bits: keep the keys positive, order unchanged
    key = (depths - depths.amin(1, keepdim=True) + 1.0).detach().float().contiguous()
    _, isect_ids, flatten_ids = isect_tiles(means2d.detach().float().contiguous(), radii.contiguous(), key,
                                            tile, tiles, tiles)
    offsets = isect_offset_encode(isect_ids, B, tiles, tiles)
    return rasterize_to_pixels(means2d.float(), conics.float(), colors.float(), opacities.float(), size, size,
                               tile, offsets, flatten_ids)


__all__ = ["gsplat_available", "rasterize_gsplat", "TILE"]
