"""Fast whole-loop DDIM execution: the 20-step (or any) loop as ONE CUDA graph.

``DDIMEngine(model, steps, refine=0, clip=False)`` runs :func:`ddim_sample` / :func:`ddim_invert` for a batch. On the
CPU (or with ``fast=False``) it is the plain fp32 loop. With ``fast=True`` on CUDA: bf16 weights,
channels_last, SDPA attention (diffusers' default processor), optional torch.compile of the
denoiser, and the whole loop (every UNet call plus the tensor-only DDIM updates with
precomputed coefficients) captured once per (direction, batch) in a CUDA graph and replayed,
so the host issues one launch per loop. Batches are padded to a power of two to reuse graphs.
cuDNN autotuning (``cudnn_benchmark``) is on while the fast path runs and is restored after:
the convolutions are fixed-shape, and the algorithm chosen at warm-up is what the graph holds.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from portraitrig.methods.diffusionrig.model import DiffusionRigModel, inductor_options
from portraitrig.methods.diffusionrig.sampling import DDIMPlan, ddim_invert, ddim_sample


class DDIMEngine:
    def __init__(self, model: DiffusionRigModel, steps: int = 20, fast: bool | None = None,
                 compile: bool = True, cuda_graph: bool = True, dtype: torch.dtype = torch.bfloat16,
                 refine: int = 0, clip: bool = False, cudnn_benchmark: bool = True):
        self.device = next(model.parameters()).device
        self.fast = self.device.type == "cuda" if fast is None else fast
        self.model = model.eval()
        self.dtype = dtype if self.fast else next(model.unet.parameters()).dtype
        if self.fast:
            # only the denoiser runs in bf16: the encoder and latent projection the renderer
            # shares stay in their precision, so every edit() computes the same latent
            model.unet.to(dtype=dtype, memory_format=torch.channels_last)
        self.refine, self.clip = refine, clip
        self.plan = DDIMPlan.make(model.config, steps, device=self.device, dtype=torch.float32)
        self._denoise = self.model.denoise
        if self.fast and compile:
            # the model is channels_last here: the same layout options as training
            self._denoise = torch.compile(self.model.denoise, dynamic=False, options=inductor_options(True))
        self.cuda_graph = self.fast and cuda_graph and self.device.type == "cuda"
        self.cudnn_benchmark = self.fast and cudnn_benchmark and self.device.type == "cuda"
        self._graphs: dict = {}

    @contextmanager
    def _cudnn(self):
        old = torch.backends.cudnn.benchmark
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = old

    # -- the loop, tensor-only
    def _eps_fn(self, buffers, cond):
        dt = self.dtype

        def eps(x, t):
            xin = x.to(dt)
            if self.fast:
                xin = xin.contiguous(memory_format=torch.channels_last)
            return self._denoise(xin, t, buffers, cond).float()

        return eps

    def _loop(self, direction: str, x, buffers, cond):
        if direction == "invert":
            return ddim_invert(self._eps_fn(buffers, cond), x.float(), self.plan, self.refine)
        return ddim_sample(self._eps_fn(buffers, cond), x.float(), self.plan, self.clip)

    @torch.no_grad()
    def __call__(self, direction: str, x: torch.Tensor, buffers: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """direction "invert" (clean x -> noise) or "sample" (noise -> clean). x (B, 3, H, W),
        buffers (B, C, H, W) normalised, cond (B, E) from ``model.condition``. Returns float32."""
        if direction not in ("invert", "sample"):
            raise ValueError("direction must be 'invert' or 'sample'")
        buffers = buffers.to(self.device, self.dtype)
        cond = cond.to(self.device, self.dtype)
        if self.fast:
            buffers = buffers.contiguous(memory_format=torch.channels_last)
        if not self.cuda_graph:
            with self._cudnn():
                return self._loop(direction, x.to(self.device), buffers, cond)
        B = x.shape[0]
        P = 1 << (B - 1).bit_length()
        pad = lambda a: torch.cat([a, a[-1:].expand(P - B, *a.shape[1:])]) if P > B else a  # noqa: E731
        g = self._graph(direction, P, buffers, cond)
        g["x"].copy_(pad(x.to(self.device, torch.float32)))
        g["buf"].copy_(pad(buffers))
        g["cond"].copy_(pad(cond))
        g["graph"].replay()
        return g["out"][:B].clone()

    def _graph(self, direction: str, P: int, buffers, cond) -> dict:
        key = (direction, P)
        if key in self._graphs:
            return self._graphs[key]
        H, W = buffers.shape[-2:]
        st = {"x": torch.zeros(P, 3, H, W, device=self.device),
              "buf": torch.zeros(P, buffers.shape[1], H, W, device=self.device, dtype=self.dtype).contiguous(
                  memory_format=torch.channels_last),
              "cond": torch.zeros(P, cond.shape[1], device=self.device, dtype=self.dtype)}
        st["x"].normal_()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with self._cudnn():
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: compile, autotune, cuDNN plans
                    self._loop(direction, st["x"], st["buf"], st["cond"])
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                st["out"] = self._loop(direction, st["x"], st["buf"], st["cond"])
        st["graph"] = graph
        self._graphs[key] = st
        return st
