"""Editing real photos with a trained DiffusionRig model.

``DiffusionRenderer.from_pretrained(dir).edit(photo, edits=[...])``: the photo is fitted (or a
precomputed fit is loaded), its crop is DDIM-inverted under its own buffers and appearance latent
(deterministic), then decoded once per edit under the edited rig's buffers. Photos and edits run
as GPU batches; one inversion per photo is shared by all its edits. Results come at crop size and
pasted back into the original photo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from portraitrig.methods.diffusionrig.engine import DDIMEngine
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams

ParamsFn = Callable[[RigParams], RigParams]
PARAM_SUFFIXES = (".safetensors", ".npz")


@dataclass
class Edit:
    """One edit: a rig change and/or another appearance latent. ``params_fn`` None = unchanged
    rig; ``latent`` (latent_dim,) replaces the photo's appearance latent."""

    name: str
    params_fn: ParamsFn | None = None
    latent: torch.Tensor | None = None


@dataclass
class Subject:
    """A photo ready for editing: its aligned crop, rig parameters (batch 1) and, if known,
    the crop placement and the original image (for paste-back)."""

    source: str
    crop_image: np.ndarray                  # (S, S, 3) uint8
    params: RigParams
    crop: object | None = None              # capture.types.Crop
    original: np.ndarray | None = None      # (H, W, 3) uint8


@dataclass
class EditResult:
    source: str
    names: list[str]                         # edit names, in order
    crops: list[np.ndarray]                  # (S, S, 3) uint8 per edit, at the fit's crop size
    pasted: list[np.ndarray | None]          # per edit, pasted into the original (None if unknown)
    params: list[RigParams]                  # edited params per edit
    input_crop: np.ndarray = field(repr=False, default=None)


def load_subject(item, rigger=None) -> Subject:
    """A Subject from a FitResult, a Subject, a ``portraitrig fit`` parameter file (its
    ``<id>.crop.png`` beside it) or a photo path / RGB array (fitted with ``rigger``)."""
    from portraitrig.capture.types import Crop

    if isinstance(item, Subject):
        return item
    if hasattr(item, "params") and hasattr(item, "crop_image"):  # pipeline.FitResult
        return Subject(item.source, item.crop_image, item.params, item.crop, getattr(item, "image", None))
    if isinstance(item, (str, Path)) and Path(item).suffix in PARAM_SUFFIXES:
        path = Path(item)
        params, extras, _ = RigParams.load(path, with_extras=True)
        crop_png = path.with_name(path.name[: -len(path.suffix)] + ".crop.png")
        if not crop_png.exists():
            raise InputError(path, f"no crop image {crop_png.name} beside it (run `portraitrig fit --save-crops`)")
        from portraitrig.io.images import read_image

        crop_image = read_image(crop_png)
        crop, original = None, None
        if "crop_affine" in extras and "image_size" in extras:
            crop = Crop(extras["crop_affine"].double().numpy(), crop_image.shape[0],
                        tuple(int(v) for v in extras["image_size"].tolist()))
            if params.sources and params.sources[0]:
                from portraitrig.io.sources import load_source

                try:  # a photo or a video frame; gone or unreadable: no paste-back, edits still run
                    original = load_source(params.sources[0])
                except InputError:
                    original = None
        return Subject(params.sources[0] if params.sources else str(path), crop_image, params, crop, original)
    if rigger is None:
        from portraitrig.pipeline import Rigger

        rigger = Rigger(crop_size=256)
    return load_subject(rigger.fit_image(item), rigger)


def _resize_u8(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 3, size, size) (antialiased)."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class DiffusionRenderer:
    """A trained model + the rig renderer; edits photos (see the module docstring).

    fast: bf16 + compile + one CUDA graph per loop (default: on CUDA). max_batch: largest GPU
    batch of one DDIM loop."""

    def __init__(self, model: DiffusionRigModel, device="cpu", fast: bool | None = None, face_model=None,
                 max_batch: int = 16, rigger=None, compile: bool = True):
        from portraitrig.methods.diffusionrig.method import RigBuffers

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.size = model.config.image_size
        self.fast = self.device.type == "cuda" if fast is None else fast
        self.compile = compile
        self.max_batch = max_batch
        self.buffers_of = RigBuffers(self.config.buffers, self.size, self.device, face_model)
        self.face_model = self.buffers_of.renderer.model
        self._rigger = rigger
        self._engines: dict[tuple, DDIMEngine] = {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", **kw) -> "DiffusionRenderer":
        return cls(DiffusionRigModel.from_pretrained(directory, device=device), device=device, **kw)

    @property
    def rigger(self):
        if self._rigger is None:
            from portraitrig.pipeline import Rigger

            self._rigger = Rigger(crop_size=max(256, self.size), model=self.face_model.to("cpu"))
        return self._rigger

    def engine(self, steps: int, refine: int = 0, clip: bool = False) -> DDIMEngine:
        """The DDIM engine for these settings (engines of one model share its weights)."""
        key = (steps, refine, clip)
        if key not in self._engines:
            self._engines[key] = DDIMEngine(self.model, steps, fast=self.fast, compile=self.compile,
                                            refine=refine, clip=clip)
        return self._engines[key]

    # ---------------------------------------------------------------- pieces
    def subject(self, item) -> Subject:
        """A Subject from a photo (fitted here), a fit parameter file, a FitResult or a Subject."""
        if isinstance(item, np.ndarray) or (isinstance(item, (str, Path)) and Path(item).suffix not in PARAM_SUFFIXES):
            return load_subject(item, self.rigger)
        return load_subject(item)

    def images_to_model(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(S, S, 3) uint8 crops -> (B, 3, size, size) float in [-1, 1] on the device."""
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return _resize_u8(x, self.size) * 2 - 1

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
    def buffers(self, params: RigParams) -> torch.Tensor:
        return self.buffers_of(params.to(self.device, torch.float32))

    def _batched(self, steps: int, direction: str, x, buf, cond, refine: int = 0, clip: bool = False) -> torch.Tensor:
        eng = self.engine(steps, refine, False) if direction == "invert" else self.engine(steps, 0, clip)
        outs = [eng(direction, x[i:i + self.max_batch], buf[i:i + self.max_batch], cond[i:i + self.max_batch])
                for i in range(0, x.shape[0], self.max_batch)]
        return torch.cat(outs)

    # ---------------------------------------------------------------- editing
    @torch.no_grad()
    def edit(self, items, edits: Sequence[Edit] = (), steps: int = 20, inversion: bool = True, seed: int = 0,
             paste: bool = True, feather: float = 0.1, refine: int = 0) -> list[EditResult] | EditResult:
        """Apply every edit to every photo. ``items``: one or a list of photos / fits / Subjects.
        Without ``inversion`` the start noise is drawn from ``seed`` (sampling mode, predicted
        clean images clipped to [-1, 1] at every step); ``refine``
        adds fixed-point iterations to each inversion step (closer reconstructions).
        Returns one EditResult per photo (a single one for a single item)."""
        single = not isinstance(items, (list, tuple))
        subjects = [self.subject(it) for it in ([items] if single else items)]
        edits = list(edits) or [Edit("reconstruction")]
        E = len(edits)
        src_params = RigParams.cat([s.params.to("cpu", torch.float32) for s in subjects])
        x0 = self.images_to_model([s.crop_image for s in subjects])
        latent = self.latent([s.crop_image for s in subjects])
        cond_src = self.condition(latent)
        if inversion:
            xT = self._batched(steps, "invert", x0, self.buffers(src_params), cond_src, refine)
        else:
            g = torch.Generator(device=self.device).manual_seed(seed)
            xT = torch.randn(x0.shape, device=self.device, generator=g)
        # decode batch: photo-major (p0e0, p0e1, ..., p1e0, ...)
        eparams, conds = [], []
        for p, s in enumerate(subjects):
            for e in edits:
                ep = e.params_fn(src_params[p]) if e.params_fn is not None else src_params[p]
                eparams.append(ep.to("cpu", torch.float32))
                conds.append(self.condition(e.latent.reshape(1, -1)) if e.latent is not None else cond_src[p:p + 1])
        ep_all = RigParams.cat(eparams)
        out = self._batched(steps, "sample", xT.repeat_interleave(E, 0), self.buffers(ep_all), torch.cat(conds),
                            clip=not inversion)
        results = []
        for p, s in enumerate(subjects):
            S = s.crop_image.shape[0]
            imgs = _resize_u8((out[p * E:(p + 1) * E].clamp(-1, 1) + 1) / 2, S)
            crops = [(im.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8) for im in imgs]
            pasted = [self._paste(s, c, feather) if paste else None for c in crops]
            results.append(EditResult(s.source, [e.name for e in edits], crops, pasted,
                                      eparams[p * E:(p + 1) * E], s.crop_image))
        return results[0] if single else results

    @staticmethod
    def _paste(s: Subject, crop_image: np.ndarray, feather: float):
        if s.original is None or s.crop is None:
            return None
        from portraitrig.capture.align import paste_back

        return paste_back(s.original, crop_image, s.crop, feather=feather)


def side_by_side(result: EditResult) -> np.ndarray:
    """(S, S * (1 + edits), 3) uint8: input crop | each edit."""
    return np.concatenate([result.input_crop] + result.crops, axis=1)
