"""Robust still-image decoding to ``(H, W, 3) uint8`` RGB.

Handled: JPEG (incl. CMYK / Adobe-inverted CMYK, converted through the embedded ICC profile
when there is one; RGB in another colour space than sRGB, such as a phone's Display P3,
converted to sRGB through its embedded profile), PNG (8- and 16-bit gray / RGB / RGBA, palette with transparency), WebP,
TIFF/BMP/GIF (first frame) and anything else Pillow opens; EXIF orientation is applied.

Conventions:
- Transparency (RGBA, LA, palette + tRNS) is composited over **white**.
- 16-bit data is scaled to 8 bits by rounding ``v / 257``; 32-bit integer gray ("I") is read
  as 16-bit when it lies in 0..65535, otherwise min-max stretched; float gray ("F") in [0, 1]
  is scaled by 255, otherwise min-max stretched.
- Truncated or corrupt files are errors (the whole image is decoded, never a partial one).
- Images of more than :data:`MAX_PIXELS` pixels (about 179 megapixels, e.g. 13,000 x 13,000;
  Pillow's own refusal point) are refused from their header, before decoding; larger
  images up to that decode without Pillow's DecompressionBombWarning.
Every failure raises :class:`portraitrig.errors.InputError` naming the file.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
from pathlib import Path

import numpy as np

from portraitrig.errors import InputError

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm",
    ".pgm", ".pnm",
})
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 2 * 89_478_485  # width x height above which images are refused (= Pillow's error limit)


def is_video(path: str | Path) -> bool:
    """True when the file name has a video extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_file_bytes(path: str | Path) -> bytes:
    """The bytes of a regular, non-empty file, or InputError saying why not."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, "file not found")
    if p.is_dir():
        raise InputError(path, "is a directory, not a file")
    if not p.is_file():
        raise InputError(path, "is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read file ({e.strerror or e})") from e
    if not data:
        raise InputError(path, "empty file (0 bytes)")
    return data


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3) uint8`` RGB, upright per its EXIF orientation."""
    data = read_file_bytes(path)
    return decode_image(data, path)


def decode_image(data: bytes, path: str | Path | None = None) -> np.ndarray:
    """Decode encoded image bytes (see :func:`read_image`); ``path`` only names errors."""
    from PIL import Image

    with warnings.catch_warnings():  # sizes up to MAX_PIXELS are accepted: no bomb warning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return _decode(data, path)
        except Image.DecompressionBombError as e:
            raise InputError(path, _too_large(str(e))) from None


def _decode(data: bytes, path) -> np.ndarray:
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(path, _unidentified_problem(data, path)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"corrupt image header ({e})") from e
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise InputError(path, _too_large(f"{w} x {h} px = {w * h / 1e6:.0f} megapixels"))
    try:
        # Force a full decode: a truncated file raises here (LOAD_TRUNCATED_IMAGES is False by
        # default; we check that nobody switched it on, since partial images must not pass).
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise InputError(path, "refusing to decode: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set")
        im.load()
        orientation = im.getexif().get(0x0112, 1)
        if _is_16bit_png(data):
            im.close()
            arr = _decode_png16(data, path)
            return _orient(arr, orientation)
        if orientation in range(2, 9):  # otherwise exif_transpose would only copy
            im = ImageOps.exif_transpose(im)
        return _to_rgb8(im, path)
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise InputError(path, f"corrupt or truncated image data ({e})") from e


def _too_large(detail: str) -> str:
    m = re.search(r"\((\d+) pixels\)", detail)  # Pillow's "Image size (N pixels) exceeds limit ..."
    if m:
        detail = f"{int(m.group(1)) / 1e6:.0f} megapixels"
    return f"image too large: {detail}, the limit is {MAX_PIXELS / 1e6:.0f} megapixels"


def _unidentified_problem(data: bytes, path) -> str:
    if path is not None and is_video(path):
        return "is a video file, not an image (read it with portraitrig.io.video)"
    head = data[:512]
    try:
        head.decode("utf-8")
        return "not an image: the file contains text"
    except UnicodeDecodeError:
        return "not an image, or an unsupported image format"


def _is_16bit_png(data: bytes) -> bool:
    # IHDR is always the first chunk: signature(8) len(4) 'IHDR'(4) w(4) h(4) depth(1) colour(1)
    return data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[12:16] == b"IHDR" and data[24] == 16


def _decode_png16(data: bytes, path) -> np.ndarray:
    """16-bit PNG via OpenCV (Pillow drops to 8 bits by truncation for 16-bit RGB)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(path, "corrupt or truncated 16-bit PNG data")
    a = arr.astype(np.float32) / 65535.0 if arr.dtype == np.uint16 else arr.astype(np.float32) / 255.0
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] in (3, 4):  # BGR(A) -> RGB(A)
        a = np.concatenate([a[..., 2::-1], a[..., 3:]], axis=2)
    if a.shape[2] in (2, 4):
        a = _over_white(a[..., :-1], a[..., -1:])
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return _float_to_u8(a)


def _to_rgb8(im, path) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        _to_srgb(im)
    if mode == "RGB":
        return _rgb_pixels(im)
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(im), dtype=np.uint8).copy()
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("PA", "La", "RGBa"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA"):
        a = np.asarray(im, dtype=np.float32) / 255.0
        rgb = _over_white(a[..., :-1], a[..., -1:])
        if rgb.shape[2] == 1:
            rgb = np.repeat(rgb, 3, axis=2)
        return _float_to_u8(rgb)
    if mode.startswith("I;16") or mode in ("I", "F"):
        g = _gray_to_unit(np.asarray(im), mode)
        return _float_to_u8(np.repeat(g[..., None], 3, axis=2))
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise InputError(path, f"unsupported image mode {mode!r}") from e


def _rgb_pixels(im) -> np.ndarray:
    """An RGB image's pixels as a new (H, W, 3) uint8 array, copied in bands of ~16 MB:
    ``np.asarray(im)`` would briefly hold two more full copies (Pillow's byte chunks and
    their join), which for a 100-megapixel photo is 600 MB."""
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, (16 << 20) // (3 * max(w, 1)))
    for y in range(0, h, rows):
        out[y:y + rows] = np.asarray(im.crop((0, y, w, min(h, y + rows))), dtype=np.uint8)
    return out


def _embedded_profile(im):
    """The image's embedded ICC profile (ImageCms) and sRGB's, or None when it has none or it
    cannot be read."""
    icc = im.info.get("icc_profile")
    if not icc:
        return None
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB")
    except Exception:  # a broken profile: none
        return None


def _to_srgb(im) -> None:
    """An RGB(A) image with an embedded ICC profile other than sRGB's (Display P3 from phones,
    Adobe RGB from cameras) converted to sRGB in place; a profile that cannot be read or does
    not describe RGB leaves the pixels as they are."""
    profiles = _embedded_profile(im)
    if profiles is None:
        return
    from PIL import ImageCms

    src, srgb = profiles
    try:
        name = ImageCms.getProfileDescription(src).strip().lower()
    except ImageCms.PyCMSError:
        name = ""
    if name.startswith("srgb"):        # already sRGB: no conversion (and no rounding)
        return
    try:
        ImageCms.profileToProfile(im, src, srgb, inPlace=True)
    except Exception:  # a non-RGB profile: the pixels as they are
        pass


def _cmyk_to_rgb(im):
    """CMYK -> RGB through the embedded ICC profile when present, else Pillow's formula."""
    profiles = _embedded_profile(im)
    if profiles is not None:
        from PIL import ImageCms

        try:
            return ImageCms.profileToProfile(im, *profiles, outputMode="RGB")
        except Exception:  # a profile that does not fit: the plain conversion below
            pass
    return im.convert("RGB")


def _gray_to_unit(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    if mode.startswith("I;16"):
        return a / 65535.0
    lo, hi = (0.0, 65535.0) if mode == "I" else (0.0, 1.0)
    if a.size and (a.min() < lo or a.max() > hi or not np.isfinite(a).all()):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(a.min()), float(a.max())
        if hi <= lo:
            return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return rgb * alpha + (1.0 - alpha)


def _float_to_u8(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, like ImageOps.exif_transpose."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].transpose(1, 0, 2),
        8: lambda x: np.rot90(x, 1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(a)) if op else a
