"""Contracts of the capture stage: landmarks and aligned crops.

Coordinate convention used everywhere in portraitrig (see DEVELOPERS.md):
pixel coordinates are continuous, x to the right, y down, the top-left corner of the top-left
pixel is (0, 0), so the centre of pixel (row i, column j) is (j + 0.5, i + 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Landmarks:
    """478 MediaPipe landmarks of one face in one image.

    points: (478, 3) float32. x, y in image pixels; z in the same pixel units, relative depth as
        MediaPipe gives it (smaller = closer to the camera), centred near the head.
    score: detection/presence confidence in [0, 1].
    box: (x0, y0, x1, y1) face box in pixels (from the landmarks' extent).
    image_size: (width, height) of the image the points refer to.
    n_faces: how many faces were found in the image (this one is the largest).
    """

    points: np.ndarray
    score: float
    box: tuple[float, float, float, float]
    image_size: tuple[int, int]
    n_faces: int = 1

    def transformed(self, affine: np.ndarray, size: tuple[int, int]) -> "Landmarks":
        """Landmarks mapped by a 2x3 similarity ``affine`` (z scaled by its scale)."""
        a = np.asarray(affine, dtype=np.float64)
        scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
        xy = self.points[:, :2].astype(np.float64) @ a[:, :2].T + a[:, 2]
        z = self.points[:, 2:3].astype(np.float64) * scale
        pts = np.concatenate([xy, z], axis=1).astype(np.float32)
        x0, y0 = pts[:, 0].min(), pts[:, 1].min()
        x1, y1 = pts[:, 0].max(), pts[:, 1].max()
        return Landmarks(pts, self.score, (float(x0), float(y0), float(x1), float(y1)), size, self.n_faces)


@dataclass
class Crop:
    """An aligned square crop of an image.

    affine: (2, 3) float64 map from original-image pixel coordinates to crop pixel coordinates
        (a similarity: rotation, uniform scale, translation).
    size: side of the square crop in pixels (256 default; 512, 1024 available).
    image_size: (width, height) of the original image.
    """

    affine: np.ndarray
    size: int
    image_size: tuple[int, int]
    meta: dict = field(default_factory=dict)

    @property
    def inverse(self) -> np.ndarray:
        """(2, 3) map from crop pixels back to original-image pixels."""
        a = np.vstack([self.affine, [0.0, 0.0, 1.0]])
        return np.linalg.inv(a)[:2]

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.affine[:, :2]))))

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) crop pixel coordinates to original-image pixel coordinates."""
        inv = self.inverse
        return np.asarray(xy, dtype=np.float64) @ inv[:, :2].T + inv[:, 2]

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) original-image pixel coordinates to crop pixel coordinates."""
        return np.asarray(xy, dtype=np.float64) @ self.affine[:, :2].T + self.affine[:, 2]
