"""Fast whole-loop DDIM execution: the 20-step (or any) loop as ONE CUDA graph.

``DDIMEngine(model, steps, refine=0, clip=False)`` runs :func:`ddim_sample` / :func:`ddim_invert` for a batch. On the
CPU (or with ``fast=False``) it is the plain fp32 loop, the reference. With ``fast=True`` on CUDA: bf16
weights, channels_last, SDPA attention (diffusers' default processor), torch.compile of the
denoiser (:func:`portraitrig.accel.inductor.compile_module`), and the whole loop (every UNet call
plus the tensor-only DDIM updates with precomputed coefficients) captured once per (direction,
batch) in a CUDA graph and replayed (:class:`portraitrig.accel.cudagraph.GraphedFunction`), so the
host issues one launch per loop. Batches are padded to a power of two to reuse graphs. cuDNN
autotuning is on while the fast path runs and restored after
(:func:`portraitrig.accel.backends.fast_backends`).
"""
from __future__ import annotations

from functools import partial

import torch

from portraitrig.accel.backends import fast_backends
from portraitrig.accel.cudagraph import GraphedFunction
from portraitrig.accel.inductor import compile_module
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
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
            self._denoise = compile_module(self.model.denoise, channels_last=True, modules=(self.model.unet,),
                                           dynamic=False)
        cuda = self.device.type == "cuda"
        self.cuda_graph = self.fast and cuda_graph and cuda
        self._backends = partial(fast_backends, enabled=self.fast and cudnn_benchmark and cuda, tf32=False)
        self._graphed = {d: GraphedFunction(partial(self._loop, d), context=self._backends)
                         for d in ("invert", "sample")}

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
        x = x.to(self.device, torch.float32)
        if not self.cuda_graph:
            with self._backends():
                return self._loop(direction, x, buffers, cond)
        B = x.shape[0]
        P = 1 << (B - 1).bit_length()
        pad = lambda a: torch.cat([a, a[-1:].expand(P - B, *a.shape[1:])]) if P > B else a  # noqa: E731
        return self._graphed[direction](pad(x), pad(buffers), pad(cond))[:B]
