"""Face landmarks: the :class:`LandmarkDetector` protocol and its MediaPipe implementation.

:class:`MediaPipeFaceMesh` (mediapipe 0.10.14, legacy ``solutions`` API, models shipped in the
wheel) works in two steps for photos:

1. **find faces** with MediaPipe face detection, short-range and full-range models on the whole
   image; when neither finds a face, the full-range model is run on overlapping tiles (half,
   quarter, ... of the short side, down to ``min_tile`` px) so that faces only a few percent of
   a large image are found too (the search stops at the first tile size that finds any).
   The cost is bounded: images of more than ``work_pixels`` (16.8 MP) are searched on a copy
   downscaled to that size (boxes are mapped back), and the tile search stops before a tile
   size that would take the runs past ``max_tiles`` (1024: a 12 MP photo is searched down to
   tiles of ~375 px, which find faces ~45 px wide; a 121 MP image costs what a 16.8 MP one
   does);
2. **landmarks per face**: a square around each detection box (``context`` x its size) is
   resampled to ``crop_px`` pixels and Face Mesh (``refine_landmarks=True``: 478 points) runs on
   it; the points are mapped back to the image. Face Mesh on the whole image alone misses faces
   smaller than ~15% of the frame; on the crop every face is large.

``Landmarks.score`` is the face-detection confidence of that face's box (the legacy Face Mesh
API has no per-face score). With ``video=True`` Face Mesh runs in tracking mode on whole frames
(landmarks follow the face from frame to frame); the score is then the confidence of the face
detection box overlapping the tracked face on the same frame, 0.0 when no detection confirms it
(the tracker kept the face alone). Frames where tracking finds nothing use the photo path.

Points are pixels: x = x_n W, y = y_n H, z = z_n W for MediaPipe's normalised output on an
image of W x H (see capture.types for the pixel convention).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from portraitrig.capture.align import warp_affine
from portraitrig.capture.types import Landmarks
from portraitrig.errors import NoFaceError

N_LANDMARKS = 478
WORK_PIXELS = 4096 * 4096  # larger images are searched for faces on a copy downscaled to this
MAX_TILES = 1024  # detector runs the tile search may make on one image


@runtime_checkable
class LandmarkDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Landmarks]:
        """All faces in an (H, W, 3) uint8 RGB image, largest (box area) first."""
        ...


class MediaPipeFaceMesh:
    """MediaPipe Face Mesh with a face-detection front end (see the module docstring).

    Graphs are created on first use and reused; one instance is not re-entrant (calls are
    serialised by a lock). Use one instance per video in ``video=True`` mode (it tracks), or
    call :meth:`reset` between videos."""

    def __init__(self, video: bool = False, max_faces: int = 4, min_confidence: float = 0.5,
                 crop_px: int = 384, context: float = 2.2, min_tile: int = 160,
                 work_pixels: int = WORK_PIXELS, max_tiles: int = MAX_TILES):
        if work_pixels < 1 or max_tiles < 0:
            raise ValueError("work_pixels must be >= 1 and max_tiles >= 0")
        self.video = video
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.crop_px = crop_px
        self.context = context
        self.min_tile = min_tile
        self.work_pixels = work_pixels
        self.max_tiles = max_tiles
        self._graphs: dict[str, object] = {}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- graphs
    def _graph(self, name: str):
        g = self._graphs.get(name)
        if g is None:
            mp = _mediapipe()
            with _quiet(fd=True):
                if name in ("fd_short", "fd_full"):  # model 0: faces within ~2 m, 1: within ~5 m
                    g = mp.solutions.face_detection.FaceDetection(
                        model_selection=int(name == "fd_full"), min_detection_confidence=self.min_confidence)
                elif name == "mesh_crop":
                    g = mp.solutions.face_mesh.FaceMesh(
                        static_image_mode=True, max_num_faces=3, refine_landmarks=True,
                        min_detection_confidence=self.min_confidence)
                else:  # mesh_track
                    g = mp.solutions.face_mesh.FaceMesh(
                        static_image_mode=False, max_num_faces=self.max_faces, refine_landmarks=True,
                        min_detection_confidence=self.min_confidence, min_tracking_confidence=0.5)
            self._graphs[name] = g
        return g

    def _run(self, name: str, image: np.ndarray):
        g = self._graph(name)
        with _quiet(fd=name not in self._used):  # the first call logs from C++ too
            res = g.process(image)
        self._used.add(name)
        return res

    def close(self) -> None:
        """Free the MediaPipe graphs (they are re-created on the next call)."""
        with self._lock:
            for g in self._graphs.values():
                g.close()
            self._graphs.clear()
            self._used.clear()

    def reset(self) -> None:
        """Forget tracking state (video mode): the next frame is treated as a new video."""
        with self._lock:
            g = self._graphs.pop("mesh_track", None)
            if g is not None:
                g.close()
            self._used.discard("mesh_track")

    def __enter__(self) -> "MediaPipeFaceMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- detection
    def detect(self, image: np.ndarray) -> list[Landmarks]:
        """All faces (at most ``max_faces``) in an (H, W, 3) uint8 RGB image, largest first;
        each carries ``n_faces`` = the number returned."""
        image = _check_image(image)
        with self._lock:
            faces = self._detect_video(image) if self.video else []
            if not faces:
                faces = self._detect_photo(image)
        faces = _dedupe(faces)[: self.max_faces]
        for f in faces:
            f.n_faces = len(faces)
        return faces

    def detect_largest(self, image: np.ndarray, path: str | Path | None = None) -> Landmarks:
        """The largest face; NoFaceError naming ``path`` when there is none."""
        return detect_largest(image, path, self)

    def find_faces(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Face boxes [(score, (x0, y0, x1, y1) pixels)], best score first (step 1 above)."""
        image = _check_image(image)
        with self._lock:
            return self._find_faces(image)

    def _find_faces(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        h, w = image.shape[:2]
        work = image
        if h * w > self.work_pixels:  # search a downscaled copy: the cost no longer grows with the image
            import cv2

            f = (self.work_pixels / (h * w)) ** 0.5
            size = (max(int(w * f), 1), max(int(h * f), 1))
            work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        boxes = self._search(work)
        if work is not image:
            back = np.array([w / work.shape[1], h / work.shape[0]] * 2)
            boxes = [(s, b * back) for s, b in boxes]
        return boxes

    def _search(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Boxes on the whole image, else on ever smaller tiles (at most ``max_tiles`` runs)."""
        boxes = self._boxes("fd_short", image) + self._boxes("fd_full", image)
        h, w = image.shape[:2]
        tile, runs = min(h, w) // 2, 0
        while not boxes and tile >= self.min_tile:
            step = max(tile // 2, 1)
            ys, xs = _starts(h, tile, step), _starts(w, tile, step)
            runs += len(ys) * len(xs)
            if runs > self.max_tiles:
                break
            for y in ys:
                for x in xs:
                    part = np.ascontiguousarray(image[y:y + tile, x:x + tile])
                    boxes += [(s, b + [x, y, x, y]) for s, b in self._boxes("fd_full", part)]
            tile //= 2
        return _nms(boxes, 0.3)

    def _boxes(self, graph: str, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        h, w = image.shape[:2]
        res = self._run(graph, image)
        out = []
        for d in res.detections or []:
            r = d.location_data.relative_bounding_box
            box = np.array([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h])
            if r.width > 0 and r.height > 0:
                out.append((float(d.score[0]), box))
        return out

    def _detect_photo(self, image: np.ndarray) -> list[Landmarks]:
        h, w = image.shape[:2]
        faces = []
        for score, box in self._find_faces(image)[: 2 * self.max_faces]:
            side = self.context * max(box[2] - box[0], box[3] - box[1])
            s = self.crop_px / side
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            affine = np.array([[s, 0.0, self.crop_px / 2 - s * cx], [0.0, s, self.crop_px / 2 - s * cy]])
            crop = warp_affine(image, affine, (self.crop_px, self.crop_px))
            res = self._run("mesh_crop", crop)
            pts = _closest_to_centre(_mesh_points(res, self.crop_px, self.crop_px), self.crop_px)
            if pts is None:
                continue
            inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
            faces.append(_landmarks(pts, score, (w, h)).transformed(inv, (w, h)))
        return faces

    def _detect_video(self, image: np.ndarray) -> list[Landmarks]:
        h, w = image.shape[:2]
        tracked = _mesh_points(self._run("mesh_track", image), w, h)
        if not tracked:
            return []
        boxes = self._boxes("fd_full", image)
        faces = []
        for pts in tracked:
            lm = _landmarks(pts, 0.0, (w, h))
            ious = [(_iou(np.array(lm.box), b), s) for s, b in boxes]
            lm.score = max((s for iou, s in ious if iou > 0.3), default=0.0)
            faces.append(lm)
        return faces


_DEFAULT: MediaPipeFaceMesh | None = None


def default_detector() -> MediaPipeFaceMesh:
    """A shared photo-mode detector, created on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MediaPipeFaceMesh()
    return _DEFAULT


def detect_largest(image: np.ndarray, path: str | Path | None = None,
                   detector: LandmarkDetector | None = None) -> Landmarks:
    """The largest face in ``image`` (by ``detector``, default :func:`default_detector`);
    NoFaceError naming ``path`` when there is none."""
    faces = (detector or default_detector()).detect(image)
    if not faces:
        h, w = image.shape[:2]
        raise NoFaceError(path, f"no face found (image {w}x{h} px)")
    return faces[0]


# -------------------------------------------------------------------- helpers
def _mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet(fd=False):
        import mediapipe as mp
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover
        pass
    return mp


@contextlib.contextmanager
def _quiet(fd: bool):
    """Silence protobuf's deprecation warnings here only; with ``fd`` also the C++ log lines
    MediaPipe/TFLite write straight to file descriptor 2 while graphs start."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"google\.protobuf")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"google\.protobuf")
        if not fd:
            yield
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {a.shape} {a.dtype}")
    return np.ascontiguousarray(a)


def _mesh_points(res, w: int, h: int) -> list[np.ndarray]:
    out = []
    for f in res.multi_face_landmarks or []:
        p = np.array([(q.x, q.y, q.z) for q in f.landmark], dtype=np.float64)
        if len(p) == N_LANDMARKS:
            out.append(p * [w, h, w])
    return out


def _closest_to_centre(faces: list[np.ndarray], size: int) -> np.ndarray | None:
    best, best_d = None, 0.25 * size
    for p in faces:
        c = (p[:, :2].min(0) + p[:, :2].max(0)) / 2
        d = float(np.hypot(*(c - size / 2)))
        if d < best_d:
            best, best_d = p, d
    return best


def _landmarks(pts: np.ndarray, score: float, image_size: tuple[int, int]) -> Landmarks:
    x0, y0 = pts[:, :2].min(0)
    x1, y1 = pts[:, :2].max(0)
    return Landmarks(pts.astype(np.float32), float(score), (float(x0), float(y0), float(x1), float(y1)),
                     tuple(image_size))


def _starts(total: int, tile: int, step: int) -> list[int]:
    if total <= tile:
        return [0]
    s = list(range(0, total - tile + 1, step))
    if s[-1] != total - tile:
        s.append(total - tile)
    return s


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms(boxes: list[tuple[float, np.ndarray]], thresh: float) -> list[tuple[float, np.ndarray]]:
    kept: list[tuple[float, np.ndarray]] = []
    for s, b in sorted(boxes, key=lambda sb: -sb[0]):
        if all(_iou(b, k) <= thresh for _, k in kept):
            kept.append((s, b))
    return kept


def _area(lm: Landmarks) -> float:
    return (lm.box[2] - lm.box[0]) * (lm.box[3] - lm.box[1])


def _dedupe(faces: list[Landmarks]) -> list[Landmarks]:
    """Drop faces overlapping a higher-scored one (IoU > 0.5); sort by box area, largest first."""
    kept: list[Landmarks] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(_iou(np.array(f.box), np.array(k.box)) <= 0.5 for k in kept):
            kept.append(f)
    return sorted(kept, key=_area, reverse=True)
