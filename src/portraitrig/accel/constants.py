"""Small constant tensors made once per device: ``device_constant(values, dtype, device)``.

``torch.tensor(values, device="cuda")`` copies from pageable host memory, which synchronises the
host with the GPU: the host waits for every queued kernel instead of queueing the next ones. A
training step that makes a few such constants (SH basis factors, luma weights) runs at the speed
of host and GPU one after the other instead of overlapped. Cached here, each is copied once.
The cached tensors are shared: callers must not change them in place.
"""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=256)
def _cached(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def device_constant(values: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """The tensor of ``values`` (a tuple of numbers, or of tuples) in ``dtype`` on ``device``,
    made on the first call and shared by every later one (do not change it in place)."""
    return _cached(values, dtype, torch.device(device))


__all__ = ["device_constant"]
