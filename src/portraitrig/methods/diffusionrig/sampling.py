"""Noise schedule, training loss and deterministic DDIM sampling / inversion.

The schedules come from diffusers (``DDPMScheduler`` for training, ``DDIMScheduler`` for the
inference timesteps); the DDIM loop itself is tensor-only (precomputed coefficients, no
scheduler state), so it can be compiled and captured in one CUDA graph.

DDIM with timesteps t_0 > ... > t_{n-1} and a_i = alphas_cumprod[t_i], a_n = 1 (clean):
    sample step i:  x0 = (x - sqrt(1 - a_i) eps(x, t_i)) / sqrt(a_i);  x <- sqrt(a_{i+1}) x0 + sqrt(1 - a_{i+1}) eps
    invert step i (i = n-1 .. 0): the same map run backwards from a_{i+1} to a_i, with eps
    evaluated at the less noisy point, so sampling after inversion reproduces the input as the
    steps get finer, or (``refine``) after a few fixed-point iterations per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from portraitrig.methods.diffusionrig.config import DiffusionConfig

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t (B,) long) -> eps


class NoiseSchedule:
    """Training-time schedule (diffusers DDPMScheduler) plus P2 weights."""

    def __init__(self, config: DiffusionConfig):
        from diffusers import DDPMScheduler

        self.config = config
        self.scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                                       beta_end=config.beta_end, beta_schedule=config.beta_schedule,
                                       prediction_type=config.prediction_type, clip_sample=False)
        ac = self.scheduler.alphas_cumprod.double()
        self.alphas_cumprod = ac                                   # (T,) float64
        self.p2_weight = (1.0 / (config.p2_k + ac / (1 - ac)) ** config.p2_gamma).float()  # (T,)
        self._on: dict = {}

    def tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(alphas_cumprod, p2_weight) on ``device``, copied there once (no host sync per step)."""
        key = str(torch.device(device))
        if key not in self._on:
            self._on[key] = (self.alphas_cumprod.to(device), self.p2_weight.to(device))
        return self._on[key]

    @property
    def T(self) -> int:
        return self.config.num_train_timesteps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ac = self.tables(x0.device)[0][t].to(x0.dtype).view(-1, 1, 1, 1)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def loss(self, eps_pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """P2-weighted epsilon MSE, mean over the batch (scalar, float32)."""
        w = self.tables(t.device)[1][t]
        per = (eps_pred.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
        return (w * per).mean()


@dataclass
class DDIMPlan:
    """Precomputed DDIM coefficients for ``steps`` steps (tensors on one device).

    timesteps: (n,) long, descending. a: (n + 1,) alphas_cumprod at each timestep with a[n] = 1.
    """

    timesteps: torch.Tensor
    a: torch.Tensor

    @classmethod
    def make(cls, config: DiffusionConfig, steps: int, device="cpu", dtype=torch.float32) -> "DDIMPlan":
        from diffusers import DDIMScheduler

        if steps < 1 or steps > config.num_train_timesteps:
            raise ValueError(f"steps must be in 1..{config.num_train_timesteps}, got {steps}")
        sch = DDIMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                            beta_end=config.beta_end, beta_schedule=config.beta_schedule,
                            prediction_type=config.prediction_type, clip_sample=False,
                            set_alpha_to_one=True, timestep_spacing="trailing")
        sch.set_timesteps(steps)
        ts = sch.timesteps.long()
        ac = sch.alphas_cumprod.double()
        a = torch.cat([ac[ts], torch.ones(1, dtype=torch.float64)])
        return cls(ts.to(device), a.to(device=device, dtype=dtype))

    def __len__(self) -> int:
        return int(self.timesteps.numel())

    def to(self, device=None, dtype=None) -> "DDIMPlan":
        return DDIMPlan(self.timesteps.to(device), self.a.to(device=device, dtype=dtype or self.a.dtype))


def _move(x: torch.Tensor, eps: torch.Tensor, a_from: torch.Tensor, a_to: torch.Tensor,
          clip: bool = False) -> torch.Tensor:
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    if clip:
        x0 = x0.clamp(-1, 1)
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


def ddim_sample(eps_fn: EpsFn, x: torch.Tensor, plan: DDIMPlan, clip: bool = False) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from x at t_0 to a clean image. x: (B, 3, H, W).
    clip: clamp each predicted clean image to [-1, 1] (like diffusers' ``clip_sample``; for
    sampling from noise: it stops colour drift of young models; off after an inversion, which
    it would no longer retrace exactly)."""
    B = x.shape[0]
    for i in range(len(plan)):
        t = plan.timesteps[i].expand(B)
        eps = eps_fn(x, t).to(x.dtype)
        x = _move(x, eps, plan.a[i].to(x.dtype), plan.a[i + 1].to(x.dtype), clip)
    return x


def ddim_invert(eps_fn: EpsFn, x0: torch.Tensor, plan: DDIMPlan, refine: int = 0) -> torch.Tensor:
    """Deterministic DDIM inversion: clean image (B, 3, H, W) in [-1, 1] -> noise at t_0.

    refine: fixed-point iterations per step (each one more denoiser call) that re-evaluate the
    noise at the new, noisier point, so that sampling retraces the inversion more exactly."""
    B, x = x0.shape[0], x0
    for i in reversed(range(len(plan))):
        t = plan.timesteps[i].expand(B)
        a_from, a_to = plan.a[i + 1].to(x.dtype), plan.a[i].to(x.dtype)
        x_new = _move(x, eps_fn(x, t).to(x.dtype), a_from, a_to)
        for _ in range(refine):
            x_new = _move(x, eps_fn(x_new, t).to(x.dtype), a_from, a_to)
        x = x_new
    return x
