"""Editing real photos with a trained DiffusionRig model (the method's
:class:`~portraitrig.neural.contract.NeuralRenderer`).

``DiffusionRenderer.from_pretrained(dir).edit(photo, edits=[...])``: the photo is fitted (or a
precomputed fit is loaded), its crop is DDIM-inverted under its own buffers and appearance latent
(deterministic: that is its :meth:`appearance`), then decoded once per edit under the edited rig's
buffers (:meth:`render`). Photos and edits run as GPU batches; one inversion per photo is shared by
all its edits. Results come at crop size and pasted back into the original photo.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from portraitrig.face.params import RigParams
from portraitrig.methods.diffusionrig.engine import DDIMEngine
from portraitrig.methods.diffusionrig.model import METHOD, VERSION, DiffusionRigModel
from portraitrig.neural.contract import Edit, NeuralRenderer, Subject, resize_images
from portraitrig.render.spec import BufferStack


@dataclass
class Appearance:
    """Per photo: the conditioning of its appearance latent (B, E) and the start noise (B, 3, S, S)
    (the DDIM inversion of the photo, or seeded noise without inversion)."""

    cond: torch.Tensor
    noise: torch.Tensor
    inverted: bool = True

    def repeat(self, n: int) -> "Appearance":
        return Appearance(self.cond.repeat_interleave(n, 0), self.noise.repeat_interleave(n, 0), self.inverted)


class DiffusionRenderer(NeuralRenderer):
    """A trained model + the rig renderer.

    fast: bf16 + compile + one CUDA graph per loop (default: on CUDA). max_batch: largest GPU
    batch of one DDIM loop. Options of :meth:`edit` / :meth:`appearance` / :meth:`render`:
    ``steps`` (DDIM steps, 20), ``inversion`` (False: sample from ``seed``'s noise), ``refine``
    (fixed-point iterations per inversion step: closer reconstructions)."""

    method, version = METHOD, VERSION

    def __init__(self, model: DiffusionRigModel, device="cpu", fast: bool | None = None, face_model=None,
                 max_batch: int = 16, rigger=None, compile: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.size = model.config.image_size
        self.buffers = tuple(model.config.buffers)
        self.fast = self.device.type == "cuda" if fast is None else fast
        self.compile = compile
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.buffer_stack = BufferStack(self.buffers, self.size, self.device, face_model)
        self.face_model = self.buffer_stack.face_model
        self._rigger = rigger
        self._engines: dict[tuple, DDIMEngine] = {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", **kw) -> "DiffusionRenderer":
        return cls(DiffusionRigModel.from_pretrained(directory, device=device), device=device, **kw)

    def save_pretrained(self, directory: str | Path) -> Path:
        return self.model.save_pretrained(directory)

    def engine(self, steps: int, refine: int = 0, clip: bool = False) -> DDIMEngine:
        """The DDIM engine for these settings (engines of one model share its weights)."""
        key = (steps, refine, clip)
        if key not in self._engines:
            self._engines[key] = DDIMEngine(self.model, steps, fast=self.fast, compile=self.compile,
                                            refine=refine, clip=clip)
        return self._engines[key]

    # ---------------------------------------------------------------- pieces
    def images_to_model(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(S, S, 3) uint8 crops -> (B, 3, size, size) float in [-1, 1] on the device."""
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return resize_images(x, self.size) * 2 - 1

    @torch.no_grad()
    def latent(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Appearance latents (B, latent_dim) of crops (the encoder in fp32)."""
        enc = self.model.encoder
        x = self.images_to_model(crops).to(next(enc.parameters()).dtype)
        return enc(x).float()

    @torch.no_grad()
    def condition(self, latent: torch.Tensor) -> torch.Tensor:
        lp = self.model.latent_proj
        return lp(latent.to(self.device, lp.weight.dtype)).float()

    @torch.no_grad()
    def buffers_of(self, params: RigParams) -> torch.Tensor:
        return self.buffer_stack(params.to(self.device, torch.float32))

    def _batched(self, steps: int, direction: str, x, buf, cond, refine: int = 0, clip: bool = False) -> torch.Tensor:
        eng = self.engine(steps, refine, False) if direction == "invert" else self.engine(steps, 0, clip)
        outs = [eng(direction, x[i:i + self.max_batch], buf[i:i + self.max_batch], cond[i:i + self.max_batch])
                for i in range(0, x.shape[0], self.max_batch)]
        return torch.cat(outs)

    # ---------------------------------------------------------------- the contract
    @torch.no_grad()
    def appearance(self, crops: Sequence[np.ndarray], params: RigParams, steps: int = 20, inversion: bool = True,
                   seed: int = 0, refine: int = 0) -> Appearance:
        """Each photo's appearance latent and its DDIM inversion under its own buffers."""
        x0 = self.images_to_model(crops)
        cond = self.condition(self.latent(crops))
        if inversion:
            noise = self._batched(steps, "invert", x0, self.buffers_of(params), cond, refine)
        else:
            g = torch.Generator(device=self.device).manual_seed(seed)
            noise = torch.randn(x0.shape, device=self.device, generator=g)
        return Appearance(cond, noise, inversion)

    @torch.no_grad()
    def render(self, params: RigParams, appearance: Appearance | None = None, steps: int = 20,
               inversion: bool = True, seed: int = 0, refine: int = 0) -> torch.Tensor:
        """Decode ``appearance`` (batch B, or None: the mean latent and seeded noise) under
        ``params``' buffers -> (B, 3, size, size) in [0, 1]."""
        B = len(params)
        if appearance is None:
            g = torch.Generator(device=self.device).manual_seed(seed)
            noise = torch.randn(B, 3, self.size, self.size, device=self.device, generator=g)
            latent = torch.zeros(B, self.config.encoder.latent_dim, device=self.device)
            appearance = Appearance(self.condition(latent), noise, inverted=False)
        out = self._batched(steps, "sample", appearance.noise, self.buffers_of(params), appearance.cond,
                            clip=not appearance.inverted)
        return (out.clamp(-1, 1) + 1) / 2

    def render_edits(self, subjects: list[Subject], edited: RigParams, edits: Sequence[Edit], steps: int = 20,
                     inversion: bool = True, seed: int = 0, refine: int = 0) -> torch.Tensor:
        """One inversion per photo shared by its edits; an edit's ``appearance`` (a latent)
        replaces the photo's appearance latent."""
        src = RigParams.cat([s.params.to("cpu", torch.float32) for s in subjects])
        app = self.appearance([s.crop_image for s in subjects], src, steps, inversion, seed, refine)
        E = len(edits)
        app = app.repeat(E)
        for k, e in enumerate(edits):
            if e.appearance is not None:
                cond = self.condition(torch.as_tensor(e.appearance).reshape(1, -1))
                app.cond[k::E] = cond.to(app.cond.dtype)
        return self.render(edited, app, steps)


__all__ = ["DiffusionRenderer", "Appearance"]
