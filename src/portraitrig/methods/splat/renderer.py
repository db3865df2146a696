"""The trained Gaussian avatar as a :class:`~portraitrig.neural.contract.NeuralRenderer`.

``render(params)`` poses the Gaussians with each item's rig (the mesh Gaussians follow its
expression and gaze, everything moves with its head pose) and rasterizes them over the learned
background, transparent (``background="none"``; ``rgba=True`` adds the opacity as a 4th
channel), or given images; at any ``size`` (the Gaussians are continuous). Novel views turn the
head relative to the camera (:class:`~portraitrig.neural.views.HeadAvatar`, shared with
the radiance-field avatar). ``backend``: "auto" (gsplat's CUDA kernels when on CUDA with gsplat
installed), "gsplat", or "torch" (the plain reference, any device). ``compile=True``: the posing
and projection compiled into one CUDA graph (:func:`portraitrig.accel.splat.compile_pose`; the
first render of each batch size and image size compiles: ~10 s on an H200).

The model folder (:mod:`portraitrig.neural.modelio`): ``model.safetensors`` (Gaussians, the
expression MLP, background) and ``config.json`` (config and the reference rig: the first
training frame's parameters, what named controls and drivers start from).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.methods.splat.config import SplatConfig
from portraitrig.methods.splat.gaussians import SplatModel, draw, pose, rig_tensors
from portraitrig.neural.contract import NeuralRenderer
from portraitrig.neural.views import HeadAvatar, with_alpha

class SplatRenderer(HeadAvatar, NeuralRenderer):
    method = "splat"
    kind = "a Gaussian avatar"
    version = 1
    buffers: tuple[str, ...] = ()

    def __init__(self, model: SplatModel, config: SplatConfig, face_model, device, reference: RigParams,
                 backend: str = "auto", compile: bool = False):
        if backend not in ("auto", "torch", "gsplat"):
            raise ValueError(f"backend must be auto, torch or gsplat, got {backend!r}")
        self.model, self.config, self.face_model = model, config, face_model
        self.device = torch.device(device)
        self.size = config.image_size
        self.backend = backend
        self.reference = reference.to(self.device, torch.float32)[0:1]
        self.compiled = bool(compile)
        self._pose = self._posed
        if self.compiled:
            from portraitrig.accel.splat import compile_pose

            self._pose = compile_pose(self._posed)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", backend: str = "auto", compile: bool = False,
                        **options) -> "SplatRenderer":
        model, mc, fm, ref = cls.read_folder(directory, SplatConfig, lambda mc, fm: SplatModel(mc, fm.faces.cpu()),
                                             device)
        check_binding(model, fm, Path(directory) / "model.safetensors")
        return cls(model, mc, fm, device, ref, backend=backend, compile=compile)

    def _posed(self, identity, expression, gaze, rotation, scale, translation, size: int) -> dict:
        """The items' Gaussians posed and projected (:func:`~portraitrig.methods.splat.gaussians.pose`)."""
        rig = rig_tensors(self.face_model, identity, expression, gaze, rotation, scale, translation)
        return pose(self.model, rig, size)

    # ---------------------------------------------------------------- rendering
    @torch.no_grad()
    def render(self, params: RigParams, appearance: Any = None, *, background: str | torch.Tensor = "learned",
               rgba: bool = False, size: int | None = None, batch: int = 8, **options) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] (B, 4 with ``rgba``: straight colour + opacity) of
        ``params``. ``background``: "learned", "none" (black, i.e. premultiplied) or images
        (B, 3, S, S); ``size``: render at another resolution (default the model's)."""
        S = size or self.size
        params = params.to(self.device, torch.float32)
        outs = []
        for a in range(0, len(params), batch):
            sl = slice(a, a + batch)
            p = params[sl]
            bg = background[sl].to(self.device, torch.float32) if isinstance(background, torch.Tensor) else background
            if self.compiled:   # the last call's outputs are used up: its graph memory may be reused
                torch.compiler.cudagraph_mark_step_begin()
            posed = self._pose(p.identity, p.expression, p.gaze, p.rotation, p.scale, p.translation, S)
            r = draw(self.model, posed, S, self.backend, background=bg)
            del posed
            img = r["image"]
            if rgba:
                img = with_alpha(img, r["rgb"], r["alpha"], background)
            outs.append(img.float().clamp(0, 1))
        return torch.cat(outs)


def check_binding(model: SplatModel, face_model, path) -> None:
    """The mesh binding a model folder stores must be the face model's: its triangles, parent
    indices in range, barycentric weights in [0, 1] summing to 1 (else an InputError naming the
    weights file: a damaged or hostile folder would otherwise fail deep inside rendering)."""
    faces = face_model.faces.to(model.faces.device)
    ok = (model.faces.shape == faces.shape and bool(torch.equal(model.faces, faces.long()))
          and bool(((model.face_index >= 0) & (model.face_index < faces.shape[0])).all())
          and bool(((model.bary >= -1e-6) & (model.bary <= 1 + 1e-6)).all())
          and bool(((model.bary.sum(-1) - 1).abs() < 1e-4).all()))
    if not ok:
        raise InputError(path, "the Gaussians' mesh binding (faces, face_index, bary) does not fit the face model")


__all__ = ["SplatRenderer", "check_binding"]
