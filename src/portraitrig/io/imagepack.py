"""Many same-sized images as one byte tensor: PNG or JPEG files back to back plus their offsets,
for caches kept in safetensors files (a person mask compresses ~20x as PNG; a video frame ~10x
as JPEG at quality 95).

:func:`pack_images` (N, H, W) or (N, H, W, 3) uint8 -> (bytes (M,) uint8, offsets (N + 1,)
int64); :func:`unpack_images` checks the offsets and every file's format, mode and size from its
header before decoding, and names the file and the item when something is off.
"""
from __future__ import annotations

import io

import numpy as np
import torch

from portraitrig.errors import InputError

FORMATS = ("PNG", "JPEG")


def pack_images(images, fmt: str = "PNG", quality: int = 95) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode uint8 images (N, H, W) (grey) or (N, H, W, 3) (RGB) as ``fmt`` files."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] != 3):
        raise ValueError("images must be uint8 (N, H, W) or (N, H, W, 3)")
    blobs = []
    for im in arr:
        buf = io.BytesIO()
        if fmt == "PNG":
            Image.fromarray(im).save(buf, format="PNG", compress_level=6)
        else:
            Image.fromarray(im).save(buf, format="JPEG", quality=int(quality), subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    data = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)
    return torch.from_numpy(data.copy()), torch.from_numpy(offsets)


def unpack_images(data: torch.Tensor, offsets: torch.Tensor, n: int, size: tuple[int, int], channels: int,
                  path, what: str = "image", fmt: str | None = None) -> np.ndarray:
    """The inverse of :func:`pack_images`: (n, H, W) (``channels`` 1) or (n, H, W, 3) uint8 for
    ``size`` (H, W); every file must be a ``fmt`` (default: PNG or JPEG) image of that size
    and mode ("L" or "RGB"), else an :class:`InputError` naming ``path`` and the item."""
    from PIL import Image

    if (data.dtype != torch.uint8 or data.ndim != 1 or offsets.dtype != torch.int64 or offsets.shape != (n + 1,)
            or int(offsets[0]) != 0 or int(offsets[-1]) != data.numel() or bool((offsets[1:] < offsets[:-1]).any())):
        raise InputError(path, f"damaged data: {what} offsets must be {n + 1} increasing positions in the packed bytes")
    mode = "L" if channels == 1 else "RGB"
    H, W = size
    raw = data.numpy().tobytes()
    out = np.empty((n, H, W) if channels == 1 else (n, H, W, 3), np.uint8)
    for i in range(n):
        try:
            im = Image.open(io.BytesIO(raw[int(offsets[i]):int(offsets[i + 1])]))
            if im.format not in ((fmt,) if fmt else FORMATS) or im.mode != mode or im.size != (W, H):
                raise ValueError(f"a {im.format} {im.mode} image of {im.size[0]}x{im.size[1]}")
            out[i] = np.asarray(im)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"damaged data: {what} {i} is not a {mode} {W}x{H} "
                                   f"{fmt or 'PNG/JPEG'} ({exc})") from None
    return out


__all__ = ["pack_images", "unpack_images", "FORMATS"]
