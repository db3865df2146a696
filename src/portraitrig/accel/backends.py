"""Scoped backend flags: TF32 matmuls / convolutions and cuDNN autotuning, set for a block and
restored after it. Library code never sets them globally (a user's own torch code is unchanged
after a portraitrig call)."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def fast_backends(enabled: bool = True, tf32: bool = True, cudnn_benchmark: bool = True):
    """Within the block: TF32 for fp32 matmuls and convolutions (``tf32``) and cuDNN autotuning
    of fixed-shape convolutions (``cudnn_benchmark``). ``enabled=False`` changes nothing.
    Restores the caller's settings on exit, also after an exception."""
    m, c = torch.backends.cuda.matmul, torch.backends.cudnn
    old = (m.allow_tf32, c.allow_tf32, c.benchmark)
    if enabled:
        if tf32:
            m.allow_tf32 = c.allow_tf32 = True
        if cudnn_benchmark:
            c.benchmark = True
    try:
        yield
    finally:
        m.allow_tf32, c.allow_tf32, c.benchmark = old


__all__ = ["fast_backends"]
