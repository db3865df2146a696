"""Whole-function CUDA graphs: capture a tensor-only function once per input shape, replay it.

``GraphedFunction(fn)`` keeps static input buffers; a call copies the inputs in, replays the
graph and returns a copy of the output. Warm-up (compile, autotune, cuDNN plans) runs twice on a
side stream before capture, inside ``context`` (e.g. :func:`portraitrig.accel.backends.fast_backends`)
so the algorithms chosen then are what the graph holds. The plain call of ``fn`` is the reference:
tests compare the two.

``pool`` (``torch.cuda.graph_pool_handle()``): graphs given the same pool share their working
memory instead of each keeping its own. Safe here in any replay order, as long as the graphs
run on one stream one at a time: a graph's inputs live outside the pool, and its output is
copied out as soon as it has run, before another graph can write over it.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch


class GraphedFunction:
    def __init__(self, fn: Callable[..., torch.Tensor], context: Callable = nullcontext, warmup: int = 2,
                 pool=None):
        self.fn, self.context, self.warmup, self.pool = fn, context, warmup, pool
        self._graphs: dict[tuple, dict] = {}

    @staticmethod
    def _key(args) -> tuple:
        return tuple((tuple(a.shape), a.dtype, a.device, a.is_contiguous(memory_format=torch.channels_last)
                      if a.dim() == 4 else True) for a in args)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        key = self._key(args)
        g = self._graphs.get(key) or self._capture(key, args)
        for buf, a in zip(g["inputs"], args):
            buf.copy_(a)
        g["graph"].replay()
        return g["output"].clone()

    def _capture(self, key, args) -> dict:
        inputs = [torch.empty_like(a).copy_(a) for a in args]  # empty_like keeps the memory format
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with self.context():
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                output = self.fn(*inputs)
        self._graphs[key] = {"inputs": inputs, "graph": graph, "output": output}
        return self._graphs[key]

    def __len__(self) -> int:
        return len(self._graphs)


__all__ = ["GraphedFunction"]
