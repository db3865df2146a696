"""The trained avatar as a :class:`~portraitrig.neural.contract.NeuralRenderer`.

``render(params)`` ray-marches the radiance field for each item's rig (pose, expression, gaze;
zero deformation code unless ``frames`` names training frames) over the learned background,
or transparent (``background="none"``, with ``rgba=True`` the opacity as a 4th channel), or
over given images. Novel views: :meth:`AvatarRenderer.render_views` turns the head relative to
the camera about its own centre (:func:`portraitrig.edits.rotate_head`), clamped to
``MAX_YAW`` / ``MAX_PITCH``, with a note when a view leaves what the training video covered.

The model folder (:mod:`portraitrig.neural.modelio`): ``model.safetensors`` (field, codes,
background, occupancy grid) and ``config.json`` (network config and the reference rig: the
first training frame's parameters, what named controls and drivers start from).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from portraitrig.face.params import RigParams
from portraitrig.methods.avatar.config import AvatarConfig
from portraitrig.methods.avatar.field import AvatarModel, frame_inputs
from portraitrig.methods.avatar.rays import RigFrames, ortho_rays, pixel_ndc
from portraitrig.methods.avatar.render import render_rays
from portraitrig.neural.contract import NeuralRenderer
from portraitrig.neural.views import MAX_PITCH, MAX_YAW, HeadAvatar, with_alpha  # noqa: F401  (re-exported)



class AvatarRenderer(HeadAvatar, NeuralRenderer):
    method = "avatar"
    kind = "an avatar"
    version = 1
    buffers: tuple[str, ...] = ()

    def __init__(self, model: AvatarModel, config: AvatarConfig, face_model, device, reference: RigParams):
        self.model, self.config, self.face_model = model, config, face_model
        self.device = torch.device(device)
        self.size = config.image_size
        self.reference = reference.to(self.device, torch.float32)[0:1]

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", **options) -> "AvatarRenderer":
        model, mc, fm, ref = cls.read_folder(directory, AvatarConfig, lambda mc, fm: AvatarModel(mc), device)
        return cls(model, mc, fm, device, ref)

    # ---------------------------------------------------------------- rendering
    @torch.no_grad()
    def render(self, params: RigParams, appearance: Any = None, *, background: str | torch.Tensor = "learned",
               rgba: bool = False, occupancy: bool = True, frames: torch.Tensor | None = None,
               chunk: int | None = None, size: int | None = None, return_depth: bool = False,
               **options) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] (B, 4 with ``rgba``: straight colour + opacity) of
        ``params``. ``background``: "learned", "none" (black, i.e. premultiplied) or images
        (B, 3, S, S); ``occupancy``: skip empty space (False: query every sample, the reference
        path); ``frames``: (B,) training-frame ids whose deformation codes to use (default none);
        ``size``: render at another resolution (the field is continuous; default the model's).
        With ``return_depth`` also the (B, 1, S, S) expected depth (camera units, 0 where empty)."""
        mc, dev, S = self.config, self.device, size or self.size
        params = params.to(dev, torch.float32)
        B = len(params)
        frame = (frames.to(dev).long() if frames is not None else torch.full((B,), -1, dtype=torch.long, device=dev))
        rig = RigFrames(params, self.face_model, mc, frame=frame)
        ndc = pixel_ndc(S, dev)
        chunk = chunk or (1 << 14 if dev.type == "cuda" else 1 << 12)
        images, depths = [], []
        for b in range(B):
            one = rig.take(torch.tensor([b], device=dev))
            parts = []
            for a in range(0, S * S, chunk):
                parts.append(self._render_chunk(one, ndc[a:a + chunk], occupancy))
            rgb = torch.cat([p[0] for p in parts]).T.reshape(3, S, S)
            acc = torch.cat([p[1] for p in parts]).reshape(1, S, S)
            depths.append(torch.cat([p[2] for p in parts]).reshape(1, S, S))
            if isinstance(background, torch.Tensor):
                img = rgb + (1 - acc) * background[b].to(dev, torch.float32)
            elif background == "learned":
                img = rgb + (1 - acc) * self.model.background(ndc).T.reshape(3, S, S)
            elif background == "none":
                img = rgb
            else:
                raise ValueError(f"background must be 'learned', 'none' or images, got {background!r}")
            if rgba:
                img = with_alpha(img, rgb, acc, background)
            images.append(img.clamp(0, 1))
        out = torch.stack(images)
        return (out, torch.stack(depths)) if return_depth else out

    def _render_chunk(self, rig: RigFrames, ndc: torch.Tensor, occupancy: bool):
        mc, model = self.config, self.model
        origins, dirs = ortho_rays(ndc)
        R = ndc.shape[0]
        near, far = rig.near.expand(R), rig.far.expand(R)
        zero = torch.zeros(1, dtype=torch.long, device=ndc.device)

        def query(pts, ids):
            head = rig.to_head(pts, zero.expand(pts.shape[0]))
            cond, frame = frame_inputs(rig, head, zero.expand(pts.shape[0]), mc)
            out = model(head, cond, frame, mc.deform_alpha)
            return out["sigma"] * rig.scale[0, 0], out["rgb"]  # per model unit -> per camera unit

        def occupied(pts, ids):
            return model.occupied(rig.to_head(pts, zero.expand(pts.shape[0])))

        res = render_rays(query, origins, dirs, near, far, mc.samples, occupied=occupied if occupancy else None)
        return res["rgb"], res["opacity"], res["depth"]


__all__ = ["AvatarRenderer", "MAX_YAW", "MAX_PITCH"]
