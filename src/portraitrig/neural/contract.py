"""The neural-renderer contract every method satisfies (DiffusionRig, the video renderer, the avatar).

A :class:`NeuralRenderer` consumes rig buffers (``buffers``, see :mod:`portraitrig.render.spec`)
and turns :class:`~portraitrig.face.params.RigParams` into images of its person:

- ``appearance(crops, params)``: what the renderer keeps of given photos (DiffusionRig: the
  appearance latent and the inverted noise; a person-specific renderer: nothing or the frame's
  background), batched;
- ``render(params, appearance)``: images ``(B, 3, S, S)`` in [0, 1];
- ``edit(photos, [Edit(name, params_fn), ...])``: each photo's appearance once, each edit's
  params rendered, results at crop size and pasted back into the original photo. Edits are the
  rig-level edit functions (:mod:`portraitrig.edits`, :mod:`portraitrig.editspec`);
- ``save_pretrained(dir)`` / ``from_pretrained(dir)``: the model-folder format
  (:mod:`portraitrig.neural.modelio`: safetensors + JSON naming the method and its version).

A method registers its config, training method and renderer in :mod:`portraitrig.methods`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams

ParamsFn = Callable[[RigParams], RigParams]
PARAM_SUFFIXES = (".safetensors", ".npz")


@dataclass
class Edit:
    """One edit: a rig change and/or another appearance. ``params_fn`` None = unchanged rig;
    ``appearance``: a method-specific override (DiffusionRig: a (latent_dim,) latent)."""

    name: str
    params_fn: ParamsFn | None = None
    appearance: Any = None


@dataclass
class Subject:
    """A photo ready for rendering: its aligned crop, rig parameters (batch 1) and, if known,
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


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, size, size) (antialiased bilinear)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [0, 1] -> list of (H, W, 3) uint8."""
    x = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(x)


class NeuralRenderer(ABC):
    """A trained person renderer: RigParams (+ appearance) -> images. See the module docstring."""

    method: ClassVar[str]        # registry name, written into model folders
    version: ClassVar[int]       # bumped when the model-folder contents change meaning
    buffers: tuple[str, ...]     # the rig buffers it consumes
    size: int                    # output size in pixels
    device: torch.device
    face_model: Any

    # ---------------------------------------------------------------- persistence
    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model folder (:func:`portraitrig.neural.modelio.write_model_folder`)."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", **options) -> "NeuralRenderer":
        """Load a model folder written by ``save_pretrained`` (refuses another method's folder)."""

    # ---------------------------------------------------------------- rendering
    @abstractmethod
    def appearance(self, crops: Sequence[np.ndarray], params: RigParams, **options) -> Any:
        """What the renderer keeps of these photos ((S, S, 3) uint8 crops with their fits)."""

    @abstractmethod
    def render(self, params: RigParams, appearance: Any = None, **options) -> torch.Tensor:
        """Images (B, 3, size, size) in [0, 1] of ``params`` (batch B) with ``appearance``."""

    def render_edits(self, subjects: list[Subject], edited: RigParams, edits: Sequence[Edit],
                     **options) -> torch.Tensor:
        """All edits of all subjects, photo-major (p0e0, p0e1, ..., p1e0, ...) -> (P*E, 3, S, S).
        The default: each subject's appearance once, repeated for its edits."""
        src = RigParams.cat([s.params.to("cpu", torch.float32) for s in subjects])
        app = self.appearance([s.crop_image for s in subjects], src, **options)
        if any(e.appearance is not None for e in edits):
            raise ValueError(f"the {self.method} renderer takes no per-edit appearance")
        return self.render(edited, self.repeat_appearance(app, len(edits)), **options)

    def repeat_appearance(self, appearance: Any, n: int) -> Any:
        """Each subject's appearance repeated ``n`` times (subject-major)."""
        if appearance is None:
            return None
        if isinstance(appearance, torch.Tensor):
            return appearance.repeat_interleave(n, 0)
        return appearance.repeat(n)

    # ---------------------------------------------------------------- photos
    def subject(self, item) -> Subject:
        """A Subject from a photo (fitted here), a fit parameter file, a FitResult or a Subject."""
        if isinstance(item, np.ndarray) or (isinstance(item, (str, Path)) and Path(item).suffix not in PARAM_SUFFIXES):
            return load_subject(item, self.rigger)
        return load_subject(item)

    @property
    def rigger(self):
        if getattr(self, "_rigger", None) is None:
            from portraitrig.pipeline import Rigger

            self._rigger = Rigger(crop_size=max(256, self.size), model=self.face_model.to("cpu"))
        return self._rigger

    @torch.no_grad()
    def edit(self, items, edits: Sequence[Edit] = (), paste: bool = True, feather: float = 0.1,
             **options) -> list[EditResult] | EditResult:
        """Apply every edit to every photo. ``items``: one or a list of photos / fits / Subjects;
        ``options`` go to the method (DiffusionRig: steps, inversion, seed, refine). Returns one
        EditResult per photo (a single one for a single item)."""
        single = not isinstance(items, (list, tuple))
        subjects = [self.subject(it) for it in ([items] if single else items)]
        edits = list(edits) or [Edit("reconstruction")]
        E = len(edits)
        eparams = []
        for s in subjects:
            p = s.params.to("cpu", torch.float32)
            for e in edits:
                eparams.append((e.params_fn(p) if e.params_fn is not None else p).to("cpu", torch.float32))
        out = self.render_edits(subjects, RigParams.cat(eparams), edits, **options)
        results = []
        for i, s in enumerate(subjects):
            crops = to_uint8(resize_images(out[i * E:(i + 1) * E].float(), s.crop_image.shape[0]))
            pasted = [self._paste(s, c, feather) if paste else None for c in crops]
            results.append(EditResult(s.source, [e.name for e in edits], crops, pasted, eparams[i * E:(i + 1) * E],
                                      s.crop_image))
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


__all__ = ["NeuralRenderer", "Edit", "Subject", "EditResult", "load_subject", "side_by_side", "resize_images",
           "to_uint8", "PARAM_SUFFIXES"]
