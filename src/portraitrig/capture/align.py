"""FFHQ-style face alignment and pasting results back into the original image.

The crop follows the FFHQ recipe (Karras et al., dataset tool): with eye centres e_l, e_r
(image left / right) and the mouth-corner midpoint m,

    e = (e_l + e_r) / 2,  d_eye = e_r - e_l,  d_mouth = m - e
    x = d_eye - rot90(d_mouth)  (normalised), scaled to max(2.0 |d_eye|, 1.8 |d_mouth|)
    y = rot90(x),  centre c = e + 0.1 d_mouth,  quad = c -/+ x -/+ y

and the quad is mapped onto the ``size x size`` crop (eye line horizontal). Eye centres are
the means of the 16 eye-contour landmarks (not the irises, so the crop does not move with the
gaze); mouth corners are landmarks 61 and 291.

Out-of-image area is filled like FFHQ: reflected image content, blended towards a blurred
copy with the distance from the image border (``AlignedFace.valid`` marks real pixels).
Strong downscaling is anti-aliased (area resampling) before the affine warp.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from portraitrig.capture.types import Crop, Landmarks

RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MOUTH_CORNERS = (61, 291)


@dataclass
class AlignedFace:
    """An aligned crop. image: (size, size, 3) uint8; crop: the transform; landmarks: in crop
    pixels; valid: (size, size) bool, True where the pixel came from inside the image."""

    image: np.ndarray
    crop: Crop
    landmarks: Landmarks
    valid: np.ndarray


def ffhq_quad(landmarks: Landmarks) -> np.ndarray:
    """(4, 2) FFHQ quad in image pixels: top-left, bottom-left, bottom-right, top-right."""
    pts = np.asarray(landmarks.points, dtype=np.float64)[:, :2]
    eye_l = pts[list(RIGHT_EYE_CONTOUR)].mean(0)  # subject's right eye = image left
    eye_r = pts[list(LEFT_EYE_CONTOUR)].mean(0)
    mouth = pts[list(MOUTH_CORNERS)].mean(0)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_crop(landmarks: Landmarks, size: int = 256) -> Crop:
    """The FFHQ crop transform (image pixels -> crop pixels) for these landmarks."""
    if int(size) != size or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    size = int(size)
    quad = ffhq_quad(landmarks)
    c = quad.mean(0)
    x = (quad[3] - quad[0]) / 2  # half-side vector along the crop's x axis
    half = float(np.hypot(*x))
    ux = x / half
    rot = np.array([[ux[0], ux[1]], [-ux[1], ux[0]]])
    lin = rot * (size / (2 * half))
    affine = np.concatenate([lin, (size / 2 - lin @ c)[:, None]], axis=1)
    return Crop(affine, size, tuple(landmarks.image_size), {"method": "ffhq", "quad": quad.tolist()})


def align_face(image: np.ndarray, landmarks: Landmarks, size: int = 256) -> AlignedFace:
    """FFHQ-aligned ``size x size`` crop of ``image`` (H, W, 3) uint8 for ``landmarks``."""
    import cv2

    h, w = image.shape[:2]
    if tuple(landmarks.image_size) != (w, h):
        raise ValueError(f"landmarks are for an image of size {landmarks.image_size}, got {(w, h)}")
    crop = ffhq_crop(landmarks, size)
    out = warp_affine(image, crop.affine, (crop.size, crop.size), border=cv2.BORDER_REFLECT_101)
    valid = crop_in_image(crop)
    if not valid.all():
        out = _soften_padding(out, valid)
    return AlignedFace(out, crop, landmarks.transformed(crop.affine, (crop.size, crop.size)), valid)


def warp_affine(image: np.ndarray, affine: np.ndarray, out_size: tuple[int, int],
                border: int | None = None, interp: int | None = None) -> np.ndarray:
    """Warp ``image`` by the 2x3 map ``affine`` (continuous pixel coordinates of the input ->
    of the output, see capture.types) into an image of ``out_size = (width, height)``.

    Only the input region the output needs is processed. When the map shrinks by more than 2x
    that region is first resized with ``cv2.INTER_AREA`` (box filter) to twice the output
    scale, so the result is not aliased (and less blurred than a full pre-shrink).
    Default border: constant 0; default interpolation: cubic when enlarging, linear otherwise."""
    import cv2

    if border is None:
        border = cv2.BORDER_CONSTANT
    a = np.asarray(affine, dtype=np.float64).copy()
    src, a = _needed_region(image, a, out_size, border)
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    if scale < 0.5:  # area-resize to twice the output scale, then warp at scale ~0.5
        h, w = src.shape[:2]
        nw, nh = max(int(round(w * 2 * scale)), 1), max(int(round(h * 2 * scale)), 1)
        src = cv2.resize(src, (nw, nh), interpolation=cv2.INTER_AREA)  # p_small = p * (nw/w, nh/h)
        a[:, 0] *= w / nw
        a[:, 1] *= h / nh
        scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    m = a.copy()  # OpenCV samples at integer pixel centres: shift by half a pixel both sides
    m[:, 2] += a[:, :2] @ np.array([0.5, 0.5]) - 0.5
    if interp is None:
        interp = cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_LINEAR
    return cv2.warpAffine(src, m, (int(out_size[0]), int(out_size[1])), flags=interp, borderMode=border,
                          borderValue=0)


def _needed_region(image: np.ndarray, a: np.ndarray, out_size, border: int):
    """Cut ``image`` to the part the output samples (plus a margin, plus what a reflecting
    border mirrors in); returns the cut image and the affine adjusted to it."""
    import cv2

    h, w = image.shape[:2]
    lin = np.vstack([a, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(lin)[:2]
    ow, oh = out_size
    corners = np.array([[0, 0], [ow, 0], [0, oh], [ow, oh]], dtype=np.float64) @ inv[:, :2].T + inv[:, 2]
    margin = 4.0 / max(float(np.sqrt(abs(np.linalg.det(a[:, :2])))), 1e-9) + 4.0
    x0, y0 = corners.min(0) - margin
    x1, y1 = corners.max(0) + margin
    if border in (cv2.BORDER_REFLECT, cv2.BORDER_REFLECT_101):  # keep what gets mirrored in
        x0, x1 = min(x0, 2 * w - x1), max(x1, -x0)
        y0, y1 = min(y0, 2 * h - y1), max(y1, -y0)
    ix0, iy0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    ix1, iy1 = min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h)
    if ix1 <= ix0 or iy1 <= iy0:  # the output sees nothing of the image
        ix0, iy0, ix1, iy1 = 0, 0, min(w, 1), min(h, 1)
    if (ix0, iy0, ix1, iy1) == (0, 0, w, h):
        return image, a
    a = a.copy()
    a[:, 2] += a[:, :2] @ np.array([ix0, iy0], dtype=np.float64)
    return image[iy0:iy1, ix0:ix1], a


def _valid_mask(inverse: np.ndarray, image_size: tuple[int, int], size: int) -> np.ndarray:
    """(size, size) bool: crop pixel centres that map inside the image."""
    c = np.arange(size, dtype=np.float64) + 0.5
    gx, gy = np.meshgrid(c, c)
    x = inverse[0, 0] * gx + inverse[0, 1] * gy + inverse[0, 2]
    y = inverse[1, 0] * gx + inverse[1, 1] * gy + inverse[1, 2]
    return (x >= 0) & (x < image_size[0]) & (y >= 0) & (y < image_size[1])


def crop_in_image(crop: Crop) -> np.ndarray:
    """(size, size) bool: the pixels of ``crop`` that show its image; the rest of a crop
    reaching past the image's edge is padding (mirrored in by :func:`align_face`)."""
    return _valid_mask(crop.inverse, tuple(crop.image_size), crop.size)


def _soften_padding(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Blend reflected padding towards a blurred copy, more so farther from the image."""
    import cv2

    size = img.shape[0]
    dist = cv2.distanceTransform((~valid).astype(np.uint8), cv2.DIST_L2, 3)
    pad = max(size * 0.1, 1.0)
    wgt = np.clip(dist / pad, 0.0, 1.0)[..., None]
    sigma = max(size * 0.02, 0.5)
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    out = img.astype(np.float32) * (1 - wgt) + blurred.astype(np.float32) * wgt
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def face_mask(size: int, feather: float = 0.1) -> np.ndarray:
    """(size, size) float32 soft mask of the face region of an FFHQ crop: an ellipse (centre
    (0.5, 0.52) size, semi-axes 0.40 x 0.47 size) that is 1 inside and fades to 0 over
    ``feather * size`` pixels at its edge."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    gx, gy = np.meshgrid(c, c)
    r = np.sqrt(((gx - 0.5) / 0.40) ** 2 + ((gy - 0.52) / 0.47) ** 2)
    dist_out = (r - 1.0) * 0.40  # ~ distance outside the ellipse, in crop sizes
    f = max(float(feather), 1e-6)
    t = np.clip(1.0 - (dist_out + f) / f, 0.0, 1.0)  # 1 inside, 0 at the ellipse edge
    return (t * t * (3 - 2 * t)).astype(np.float32)


def paste_back(original: np.ndarray, crop_image: np.ndarray, crop: Crop, mask: np.ndarray | None = None,
               feather: float = 0.1) -> np.ndarray:
    """Paste a crop-sized result back into ``original`` (H, W, 3) uint8 with a soft mask.

    crop_image: (size, size, 3) uint8 or float in [0, 1]. mask: (size, size) in [0, 1] or bool,
    feathered inward by ``feather * size`` pixels; None means :func:`face_mask`. Pixels where the
    mask maps to 0 are returned exactly as in ``original``. Returns (H, W, 3) uint8."""
    import cv2

    size = crop.size
    h, w = original.shape[:2]
    ci = np.asarray(crop_image)
    if ci.shape[:2] != (size, size):
        raise ValueError(f"crop_image must be {size}x{size}, got {ci.shape[:2]}")
    if ci.dtype != np.uint8:
        ci = np.clip(np.rint(ci.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    if mask is None:
        m = face_mask(size, feather)
    else:
        m = np.asarray(mask, dtype=np.float32)
        if feather > 0:
            rad = max(int(round(feather * size / 2)), 1)
            m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rad + 1, 2 * rad + 1)))
            m = cv2.GaussianBlur(m, (0, 0), rad / 2)
    inv = crop.inverse
    back = warp_affine(ci, inv, (w, h), border=cv2.BORDER_REPLICATE)
    mb = warp_affine(np.ascontiguousarray(m), inv, (w, h), interp=cv2.INTER_LINEAR)  # 0 outside
    mb = np.clip(mb, 0.0, 1.0)[..., None]
    out = original.astype(np.float32) * (1 - mb) + back.astype(np.float32) * mb
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    untouched = mb[..., 0] <= 0
    out[untouched] = original[untouched]
    return out
