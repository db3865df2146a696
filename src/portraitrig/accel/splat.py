"""The Gaussian avatar's fast rasterizer: gsplat's tiled CUDA kernels (forward and backward) over
Gaussians already projected by :func:`portraitrig.methods.splat.raster.project`. The plain
PyTorch rasterizer (``rasterize_reference`` there) is the reference; tests compare the two on a
GPU (tests/methods/splat). gsplat is an optional dependency (the ``gaussians`` extra); its
kernels build on first use (~70 s on an H200 host).

:func:`compile_pose`: the Gaussians' posing and projection (the rig's mesh, the expression MLP,
the camera: a few hundred small kernels, which bound a batch-1 render by the host's launches)
compiled by Inductor into fused kernels replayed as one CUDA graph (on CUDA; on a CPU, fused
kernels only). Opt-in; the eager function is the reference, and tests compare the two."""
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


def compile_pose(fn):
    """``fn`` (tensors and an int size in, a dict of tensors out) compiled with CUDA graphs
    (Inductor's ``reduce-overhead``), one graph per input shape. The outputs of a call live in
    the graph's memory until the next call: use them first (call
    ``torch.compiler.cudagraph_mark_step_begin()`` before each call)."""
    from portraitrig.accel.inductor import MODE_OPTIONS

    return torch.compile(fn, options=dict(MODE_OPTIONS["reduce-overhead"]), dynamic=False)


__all__ = ["gsplat_available", "rasterize_gsplat", "compile_pose", "TILE"]
