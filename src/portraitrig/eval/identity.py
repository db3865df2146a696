"""Identity metrics: dlib's 128-d face embedding (ResNet, "dlib_face_recognition_resnet_model_v1")
and verification figures (ROC AUC, EER, accuracy at dlib's 0.6 threshold).

Distances are Euclidean between embeddings: dlib calls two faces the same person when the
distance is below 0.6 (99.38% on LFW). Faces are found with dlib's HOG frontal detector (the face
overlapping a given box, else the best-scoring one); when it finds none, the given face box
(e.g. from MediaPipe landmarks) or, for an aligned crop, the box
where an FFHQ-style alignment puts the face is used instead. :class:`FaceEmbedding` records
which one was used (``source``: "hog", "box" or "aligned").

Model files come from the ``face_recognition_models`` package (located without importing it:
its ``__init__`` needs ``pkg_resources``).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from portraitrig.errors import InputError, NoFaceError

SAME_PERSON_THRESHOLD = 0.6  # dlib's threshold on the Euclidean embedding distance
# Where dlib's HOG box falls in an FFHQ/CelebA-HQ aligned crop, as fractions of its side
# (x0, y0, x1, y1); measured on CelebA-HQ crops (std about 0.02).
ALIGNED_FACE_BOX = (0.18, 0.30, 0.78, 0.90)


def model_path(name: str) -> Path:
    """Path of a model file shipped by ``face_recognition_models`` (e.g.
    "dlib_face_recognition_resnet_model_v1.dat")."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed (pip install 'portraitrig[eval]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ImportError(f"{path} is missing from face_recognition_models")
    return path


@dataclass
class FaceEmbedding:
    """vector: (128,) float64 embedding; box: (x0, y0, x1, y1) pixels of the face used;
    source: "hog" (detected), "box" (given box) or "aligned" (aligned-crop default box);
    score: HOG detector score (nan unless source is "hog")."""

    vector: np.ndarray
    box: tuple[float, float, float, float]
    source: str
    score: float = float("nan")


def as_rgb_uint8(image, path=None) -> np.ndarray:
    """(H, W, 3) uint8 contiguous RGB from uint8 or float [0, 1] gray/RGB/RGBA arrays."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 8:
        raise InputError(path, f"expected an (H, W, 3) image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def _rect(box):
    """dlib.rectangle (inclusive corners) of a continuous (x0, y0, x1, y1) pixel box."""
    import dlib

    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x0, y0, max(x1 - 1, x0), max(y1 - 1, y0))


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class IdentityEncoder:
    """dlib face embedder; models load on first use and the object is reusable (not thread-safe).

    upsample: HOG pyramid upsampling (1 finds faces down to about 40 px).
    max_detect_side: detection runs on a copy whose longer side is at most this many pixels
        (the embedding always uses the full-resolution image).
    landmarks: 5 or 68 (shape predictor that aligns the face chip; dlib recommends 5).
    jitter: dlib's num_jitters (0 = one pass; 10 is ~10x slower and slightly more accurate).
    fallback: when HOG finds no face and no box is given: "aligned" uses ALIGNED_FACE_BOX
        (the image is taken to be an aligned crop), "none" raises NoFaceError.
    """

    def __init__(self, upsample: int = 1, max_detect_side: int = 640, landmarks: int = 5,
                 jitter: int = 0, fallback: str = "none"):
        if landmarks not in (5, 68):
            raise ValueError("landmarks must be 5 or 68")
        if fallback not in ("none", "aligned"):
            raise ValueError("fallback must be 'none' or 'aligned'")
        self.upsample, self.max_detect_side = upsample, max_detect_side
        self.landmarks, self.jitter, self.fallback = landmarks, jitter, fallback
        self._models = None

    def _load(self):
        if self._models is None:
            import dlib

            shape = ("shape_predictor_5_face_landmarks.dat" if self.landmarks == 5
                     else "shape_predictor_68_face_landmarks.dat")
            self._models = (dlib.get_frontal_face_detector(),
                            dlib.shape_predictor(str(model_path(shape))),
                            dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat"))))
        return self._models

    def detect(self, image) -> list[tuple[tuple[float, float, float, float], float]]:
        """HOG faces of an image: [((x0, y0, x1, y1) pixels, score)], best score first."""
        img = as_rgb_uint8(image)
        det = self._load()[0]
        h, w = img.shape[:2]
        f = min(1.0, self.max_detect_side / max(h, w))
        small = img
        if f < 1.0:
            from PIL import Image

            small = np.asarray(Image.fromarray(img).resize((round(w * f), round(h * f)), Image.BILINEAR))
        rects, scores, _ = det.run(small, self.upsample, 0.0)
        out = [((r.left() / f, r.top() / f, (r.right() + 1) / f, (r.bottom() + 1) / f), float(s))
               for r, s in zip(rects, scores)]
        return sorted(out, key=lambda t: -t[1])

    def encode(self, image, box: Sequence[float] | None = None) -> FaceEmbedding:
        """Embedding of the main face (best HOG score). ``box`` (x0, y0, x1, y1) pixels, optional:
        picks the HOG face that overlaps it most, and is used itself when no HOG face overlaps it."""
        img = as_rgb_uint8(image)
        _, predictor, net = self._load()
        faces = self.detect(img)
        if faces and box is not None:
            faces = [f for f in sorted(faces, key=lambda t: -_iou(t[0], box)) if _iou(f[0], box) > 0]
        score = float("nan")
        if faces:
            used, score = faces[0]
            source = "hog"
        elif box is not None:
            used, source = tuple(float(v) for v in box), "box"
        elif self.fallback == "aligned":
            h, w = img.shape[:2]
            b = ALIGNED_FACE_BOX
            used, source = (b[0] * w, b[1] * h, b[2] * w, b[3] * h), "aligned"
        else:
            raise NoFaceError(None, "no face found by dlib's HOG detector")
        shape = predictor(img, _rect(used))
        vec = np.asarray(net.compute_face_descriptor(img, shape, self.jitter), dtype=np.float64)
        return FaceEmbedding(vec, tuple(float(v) for v in used), source, score)

    def embed(self, image, box: Sequence[float] | None = None) -> np.ndarray:
        """(128,) embedding of the main face (see :meth:`encode`)."""
        return self.encode(image, box).vector

    def shape68(self, image, box: Sequence[float]) -> np.ndarray:
        """(68, 2) dlib landmarks (pixels, iBUG 300-W order) inside a face box."""
        img = as_rgb_uint8(image)
        if self.landmarks != 68:
            raise ValueError("shape68 needs IdentityEncoder(landmarks=68)")
        s = self._load()[1](img, _rect(box))
        return np.array([[p.x + 0.5, p.y + 0.5] for p in s.parts()], dtype=np.float64)


def identity_distance(a, b) -> np.ndarray:
    """Euclidean distance between embeddings (..., 128) -> (...); < 0.6 means same person."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def identity_similarity(a, b) -> np.ndarray:
    """Cosine similarity between embeddings (..., 128) -> (...) in [-1, 1]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


# ---------------------------------------------------------------------- verification
def roc_auc(scores, labels) -> float:
    """ROC AUC of ``scores`` (higher = more likely positive) for boolean ``labels``: the
    Mann-Whitney U statistic with average ranks for ties. nan if a class is empty."""
    s, y = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): predicting positive when score >= threshold, thresholds falling;
    starts at (0, 0) with threshold +inf."""
    s, y = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / max(y.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~y).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def equal_error_rate(scores, labels) -> tuple[float, float]:
    """(EER, score threshold at the EER), linearly interpolated on the ROC curve where
    false-positive rate = false-negative rate."""
    fpr, tpr, thr = roc_curve(scores, labels)
    fnr = 1 - tpr
    d = fpr - fnr  # rises from -1 to +1
    i = int(np.argmax(d >= 0))
    if i == 0 or d[i] == 0:
        return float(fpr[i]), float(thr[i])
    t = -d[i - 1] / (d[i] - d[i - 1])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    lo = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), float(lo + t * (thr[i] - lo))


def verify(pairs, labels, threshold: float = SAME_PERSON_THRESHOLD) -> dict:
    """Verification figures for embedding pairs.

    pairs: (N, 2, 128) embeddings, or (N,) distances already computed.
    labels: (N,) bool, True = same person.
    Returns auc (ROC AUC of -distance), eer, eer_distance (threshold at the EER),
    accuracy_at_<threshold>, tpr/fpr at the threshold, best_accuracy and its threshold,
    the number of positives/negatives and mean distances per class.
    """
    p = np.asarray(pairs, np.float64)
    d = identity_distance(p[:, 0], p[:, 1]) if p.ndim == 3 else p.ravel()
    y = np.asarray(labels, bool).ravel()
    if d.shape != y.shape:
        raise ValueError(f"{d.shape[0]} pairs but {y.shape[0]} labels")
    eer, eer_score = equal_error_rate(-d, y)
    same = d < threshold
    fpr, tpr, thr = roc_curve(-d, y)  # same person when distance <= -thr
    acc = (tpr * y.sum() + (1 - fpr) * (~y).sum()) / max(y.size, 1)
    k = int(np.argmax(acc))
    return {
        "n_positive": int(y.sum()), "n_negative": int((~y).sum()),
        "auc": roc_auc(-d, y), "eer": eer, "eer_distance": -eer_score,
        f"accuracy_at_{threshold:g}": float(np.mean(same == y)),
        f"tpr_at_{threshold:g}": float(same[y].mean()) if y.any() else float("nan"),
        f"fpr_at_{threshold:g}": float(same[~y].mean()) if (~y).any() else float("nan"),
        "best_accuracy": float(acc[k]), "best_threshold": float(-thr[k]),
        "mean_distance_positive": float(d[y].mean()) if y.any() else float("nan"),
        "mean_distance_negative": float(d[~y].mean()) if (~y).any() else float("nan"),
    }


__all__ = ["SAME_PERSON_THRESHOLD", "ALIGNED_FACE_BOX", "FaceEmbedding", "IdentityEncoder",
           "as_rgb_uint8", "model_path", "identity_distance", "identity_similarity", "roc_auc",
           "roc_curve", "equal_error_rate", "verify"]
