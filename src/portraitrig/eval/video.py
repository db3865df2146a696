"""Temporal stability of generated videos.

* Landmark jitter: the residual of a (T, N, 2) landmark track after its intended motion is
  removed by a centred Savitzky-Golay filter (zero lag, keeps motion up to the window's
  polynomial order), as RMS in % of the inter-ocular distance (IOD). Also the RMS of second
  differences (acceleration), which needs no filter choice.
* Flicker: mean absolute frame-to-frame difference (8-bit levels, 0..255) in pixels that a mask
  marks static (background away from the face).
"""
from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

# eye corners (outer, inner) per eye, for the IOD of common landmark layouts
EYE_CORNERS_BY_COUNT = {478: ((33, 133), (362, 263)), 468: ((33, 133), (362, 263)),
                        68: ((36, 39), (42, 45))}


def inter_ocular_track(points: np.ndarray) -> np.ndarray:
    """(T,) distance between eye centres of a (T, N, 2|3) track of MediaPipe (468/478) or dlib/
    300-W (68) landmarks."""
    p = np.asarray(points, np.float64)[..., :2]
    if p.shape[1] not in EYE_CORNERS_BY_COUNT:
        raise ValueError(f"no eye corners known for {p.shape[1]} landmarks; pass iod")
    (a, b), (c, d) = EYE_CORNERS_BY_COUNT[p.shape[1]]
    return np.linalg.norm((p[:, a] + p[:, b]) / 2 - (p[:, c] + p[:, d]) / 2, axis=-1)


def landmark_jitter(points, iod=None, window: int = 9, polyorder: int = 2) -> dict[str, float]:
    """Jitter of a (T, N, 2|3) pixel landmark track (x, y used).

    iod: scalar or (T,) inter-ocular distance in pixels; default from the eye corners.
    Returns ``jitter_pct_iod`` (RMS point distance to the Savitzky-Golay-smoothed track) and
    ``accel_pct_iod`` (RMS norm of second differences), both in % of the median IOD.
    """
    p = np.asarray(points, np.float64)
    if p.ndim != 3 or p.shape[0] < 3:
        raise ValueError(f"expected a (T >= 3, N, 2|3) track, got {p.shape}")
    p = p[..., :2]
    scale = float(np.median(inter_ocular_track(p) if iod is None else np.asarray(iod, np.float64)))
    if not scale > 0:
        raise ValueError("inter-ocular distance must be positive")
    T = p.shape[0]
    w = min(window, T if T % 2 else T - 1)
    out = {}
    if w > polyorder:
        smooth = savgol_filter(p, w, polyorder, axis=0, mode="interp")
        out["jitter_pct_iod"] = float(np.sqrt((np.linalg.norm(p - smooth, axis=-1) ** 2).mean()) / scale * 100)
    else:
        out["jitter_pct_iod"] = float("nan")
    acc = p[2:] - 2 * p[1:-1] + p[:-2]
    out["accel_pct_iod"] = float(np.sqrt((np.linalg.norm(acc, axis=-1) ** 2).mean()) / scale * 100)
    return out


def static_mask_from_boxes(boxes, size: tuple[int, int], margin: float = 0.5) -> np.ndarray:
    """(H, W) bool mask of pixels outside every face box grown by ``margin`` x its size on
    each side. boxes: (K, 4) x0, y0, x1, y1 pixels; size: (width, height)."""
    w, h = size
    m = np.ones((h, w), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
        c0, r0 = max(int(np.floor(x0 - dx)), 0), max(int(np.floor(y0 - dy)), 0)
        c1, r1 = min(int(np.ceil(x1 + dx)), w), min(int(np.ceil(y1 + dy)), h)
        m[r0:r1, c0:c1] = False
    return m


def flicker(frames, static_mask=None) -> float:
    """Mean abs difference between consecutive frames in static pixels, 8-bit levels.

    frames: (T, H, W[, 3]) array or an iterable of (H, W[, 3]) frames, uint8 (or float in
        [0, 1], scaled by 255); processed a pair at a time.
    static_mask: (H, W) or (T, H, W) bool/weights; default all pixels. For (T, H, W) a pixel
        counts between frames t and t+1 when both masks mark it (the smaller weight).
    """
    m_all = None if static_mask is None else np.asarray(static_mask, np.float32)
    total, weight, prev = 0.0, 0.0, None
    for t, f in enumerate(frames):
        f = np.asarray(f)
        x = f.astype(np.float32) * (1.0 if f.dtype == np.uint8 else 255.0)
        if prev is not None:
            d = np.abs(x - prev)
            if d.ndim == 3:
                d = d.mean(-1)
            if m_all is None:
                m = np.ones_like(d)
            elif m_all.ndim == 3:
                m = np.minimum(m_all[t - 1], m_all[t])
            else:
                m = m_all
            if m.shape != d.shape:
                raise ValueError(f"mask shape {m.shape} does not match frames {d.shape}")
            total += float((d * m).sum())
            weight += float(m.sum())
        prev = x
    if prev is None or t < 1:
        raise ValueError("flicker needs at least 2 frames")
    return total / weight if weight > 0 else float("nan")


__all__ = ["inter_ocular_track", "landmark_jitter", "static_mask_from_boxes", "flicker"]
