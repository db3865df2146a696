"""Person / background segmentation with MediaPipe Selfie Segmentation (shipped in the wheel).

:class:`PersonSegmenter` wraps the legacy ``mediapipe.solutions.selfie_segmentation`` graph
(mediapipe 0.10.14, models in ``mediapipe/modules/selfie_segmentation/``): model ``"general"``
(256 x 256 input) or ``"landscape"`` (144 x 256). ``segment`` gives the person probability of
every pixel of a whole image.

For a fitted crop, :func:`crop_person_mask` segments a context window around the crop (a
head-and-shoulders framing, the kind of picture the model is made for, at a resolution that
does not depend on how small the face is in the photo) and returns the mask in the crop's
pixels; :func:`mask_to_crop` warps a whole-image mask into a crop.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from portraitrig.capture.align import warp_affine
from portraitrig.capture.types import Crop
from portraitrig.errors import InputError

MODELS = {"general": 0, "landscape": 1}


class PersonSegmenter:
    """Person probability per pixel. One instance is not re-entrant (calls are serialised by a
    lock); the graph is created on first use and freed by :meth:`close` (or ``with``)."""

    def __init__(self, model: str = "general"):
        if model not in MODELS:
            raise ValueError(f"unknown segmentation model {model!r}; known: {', '.join(MODELS)}")
        self.model = model
        self._graph = None
        self._lock = threading.Lock()

    def segment(self, image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB image -> (H, W) float32 person probability in [0, 1].

        ``path`` names the image in the :class:`InputError` raised for a bad array."""
        img = _check_image(image, path)
        from portraitrig.capture.detector import _quiet

        with self._lock:
            first = self._graph is None
            if first:
                from portraitrig.capture.detector import _mediapipe

                mp = _mediapipe()
                with _quiet(fd=True):
                    self._graph = mp.solutions.selfie_segmentation.SelfieSegmentation(
                        model_selection=MODELS[self.model])
            with _quiet(fd=first):  # the first call logs from C++ too
                res = self._graph.process(img)
        mask = res.segmentation_mask
        if mask is None or mask.shape != img.shape[:2]:
            raise InputError(path or "<array>", "person segmentation returned no mask")
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        """Free the MediaPipe graph (it is re-created on the next call)."""
        with self._lock:
            if self._graph is not None:
                self._graph.close()
                self._graph = None

    def __enter__(self) -> "PersonSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mask_to_crop(mask: np.ndarray, crop: Crop) -> np.ndarray:
    """Whole-image (H, W) float mask -> (S, S) float32 mask in ``crop``'s pixels.

    Outside the image the mask is mirrored like the crop's own padding (``align_face``), so the
    mask goes with the crop's pixels there too."""
    import cv2

    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {m.shape}")
    if (m.shape[1], m.shape[0]) != tuple(crop.image_size):
        raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]}, the crop is of a {crop.image_size[0]}x"
                         f"{crop.image_size[1]} image")
    out = warp_affine(m, crop.affine, (crop.size, crop.size), border=cv2.BORDER_REFLECT_101,
                      interp=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def crop_person_mask(segmenter: PersonSegmenter, image: np.ndarray, crop: Crop, context: float = 2.0,
                     resolution: int = 512, path: str | Path | None = None) -> np.ndarray:
    """Person mask (S, S) float32 in [0, 1] of ``crop`` of ``image`` (H, W, 3) uint8.

    Segments a square window ``context`` times the crop's side, centred on the crop, resampled
    to ``resolution`` pixels, and cuts the crop out of the result. Where the window leaves the
    image it repeats the image's edge pixels: a mirrored border (the crop's own padding) shows
    the segmentation model a second, upside-down person below a face near the frame's edge and
    turns the background into blotches of "person". Crop pixels outside the image take the
    mask of the image pixel they mirror, as the crop's own pixels do (:func:`mask_to_crop`)."""
    import cv2

    img = _check_image(image, path)
    if (img.shape[1], img.shape[0]) != tuple(crop.image_size):
        raise InputError(path or "<array>", f"image is {img.shape[1]}x{img.shape[0]}, the crop is of a "
                         f"{crop.image_size[0]}x{crop.image_size[1]} image")
    if not context >= 1.0:
        raise ValueError(f"context must be >= 1, got {context!r}")
    S, R = crop.size, int(resolution)
    k = R / (context * S)  # crop pixels -> window pixels: w = k * (c + (context - 1) S / 2)
    shift = k * (context - 1) * S / 2
    to_window = np.concatenate([k * crop.affine[:, :2], (k * crop.affine[:, 2] + shift)[:, None]], 1)
    window = warp_affine(img, to_window, (R, R), border=cv2.BORDER_REPLICATE)
    m = segmenter.segment(window, path)
    # every crop pixel centre -> image (mirrored into it like the crop's padding) -> window pixels
    c = np.arange(S, dtype=np.float64) + 0.5
    xy = crop.to_image(np.stack(np.meshgrid(c, c), -1))
    xy = np.stack([_mirror(xy[..., 0], img.shape[1]), _mirror(xy[..., 1], img.shape[0])], -1)
    w = xy @ to_window[:, :2].T + to_window[:, 2] - 0.5        # OpenCV samples at integer pixel centres
    out = cv2.remap(m, w[..., 0].astype(np.float32), w[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0)


def _mirror(x: np.ndarray, n: int) -> np.ndarray:
    """Continuous pixel coordinates (pixel i spans [i, i + 1)) mirrored into [0, n] about the
    outer pixels' centres, as OpenCV's BORDER_REFLECT_101 mirrors pixels."""
    if n < 2:
        return np.full_like(x, n / 2)
    lo, hi = 0.5, n - 0.5                  # the first and last pixel centres
    period = 2 * (hi - lo)
    y = np.mod(x - lo, period)
    return lo + np.where(y > hi - lo, period - y, y)


def _check_image(image, path) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(path or "<array>", f"expected an (H, W, 3) uint8 RGB image, got {a.dtype} {a.shape}")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise InputError(path or "<array>", f"image is too small to segment ({a.shape[1]}x{a.shape[0]})")
    return np.ascontiguousarray(a)


__all__ = ["MODELS", "PersonSegmenter", "crop_person_mask", "mask_to_crop"]
