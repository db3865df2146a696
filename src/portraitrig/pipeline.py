"""Image/video -> aligned crop + RigParams: the Python API behind ``portraitrig fit``.

capture (decode, MediaPipe landmarks, FFHQ crop) -> geometry fit (pose, identity, expression,
gaze) -> photometric fit (SH light, albedo). For an album or a video of one person the
identity and albedo are shared by all frames (``Rigger.fit_album``); a video's parameters can be
smoothed over time without lag (``Rigger.fit_video``).

Long videos are fitted in bounded memory (``Rigger.iter_video``): a video of at most
``chunk_frames`` kept frames is one joint solve; a longer one gets its identity and albedo once,
from ``IDENTITY_SAMPLE`` frames spread over the whole video, and is then fitted chunk by chunk
with them held fixed. Each chunk is solved with the few neighbouring frames the smoothing
reaches (:func:`portraitrig.fit.smooth.support_radius`) on both sides, so the smoothed result
runs on across chunk borders as if the video were one piece; only the current chunk's crops are
in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from portraitrig.capture.types import Crop, Landmarks
from portraitrig.errors import InputError
from portraitrig.face.base import FaceModel, ndc_to_pixels, pixels_to_ndc, posed_vertices
from portraitrig.face.params import RigParams

ImageLike = "str | Path | np.ndarray"

VIDEO_CHUNK = 100      # kept frames per chunk of a long video (and the most one joint solve takes)
IDENTITY_SAMPLE = 32   # frames spread over a long video that give its identity and albedo
APPEARANCE_BATCH = 25  # frames per light solve when the albedo is known (bounds memory)


@dataclass
class Capture:
    """What the capture stage produced for one image."""

    source: str
    image: np.ndarray | None   # original RGB uint8 (batch jobs drop it once captured)
    landmarks: Landmarks       # in original-image pixels
    crop: Crop
    crop_image: np.ndarray     # (S, S, 3) uint8
    crop_landmarks: Landmarks  # in crop pixels
    valid: np.ndarray          # (S, S) bool: crop pixels that came from inside the image


@dataclass
class FitResult:
    """One fitted image: its crop, landmarks and rig parameters (batch of one)."""

    source: str
    params: RigParams
    crop: Crop
    crop_image: np.ndarray
    landmarks: Landmarks
    crop_landmarks: Landmarks
    valid: np.ndarray
    landmark_error: float      # mean 2D landmark error of the fit, % of inter-ocular distance
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_faces(self) -> int:
        return self.landmarks.n_faces

    def vertices_crop(self, model: FaceModel) -> np.ndarray:
        """(V, 3) fitted mesh vertices: x, y in crop pixels, depth in crop pixels."""
        v = posed_vertices(model, self.params.to(model.faces.device))[0].detach().cpu().double()
        xy = ndc_to_pixels(v[:, :2], self.crop.size)
        z = v[:, 2:] * (self.crop.size / 2)
        return torch.cat([xy, z], 1).numpy()

    def vertices_image(self, model: FaceModel) -> np.ndarray:
        """(V, 3) fitted mesh vertices projected to original-image pixel coordinates (x, y) with
        depth in original-image pixel units (z)."""
        v = self.vertices_crop(model)
        xy = self.crop.to_image(v[:, :2])
        return np.concatenate([xy, v[:, 2:] / self.crop.scale], 1)

    def extras(self, model: FaceModel) -> dict[str, np.ndarray]:
        """Arrays saved beside the parameters by ``portraitrig fit``."""
        return {
            "crop_affine": self.crop.affine.astype(np.float64),
            "image_size": np.asarray(self.crop.image_size, dtype=np.int64),
            "vertices_image": self.vertices_image(model).astype(np.float32),
            "landmarks_image": self.landmarks.points.astype(np.float32),
            "landmarks_crop": self.crop_landmarks.points.astype(np.float32),
        }


@dataclass
class VideoChunk:
    """Chunk ``index`` of a video: its kept frames with ordinals ``index * chunk_frames`` up to
    ``(index + 1) * chunk_frames - 1`` (ordinal = frame index // stride). ``captures``:
    (ordinal, Capture) of its frames with a face; ``results``: their fits, in the same order
    (empty when the chunk's solve failed, then ``error`` says why)."""

    index: int
    captures: list[tuple[int, Capture]]
    results: list[FitResult]
    error: Exception | None = None


def kept_frame_count(path: str | Path, stride: int = 1, max_frames: int | None = None) -> int:
    """How many frames a fit of this video keeps: every ``stride``-th, at most ``max_frames``.
    From the container's frame count, or by reading the video through when it gives none."""
    from portraitrig.io.video import iter_video, video_info

    n = video_info(path).frame_count
    if n <= 0:  # no count in the container: read it through, converting no frame
        seen: list[int] = []
        for _ in iter_video(path, want=lambda i: seen.append(i) is not None):
            pass
        n = len(seen)
    kept = -(-n // stride)
    return kept if max_frames is None else min(kept, max_frames)


class Rigger:
    """Fits the portrait rig to images and videos.

    crop_size: side of the FFHQ-style aligned crop (256 default; 512, 1024).
    photometric: also estimate SH lighting and albedo (otherwise defaults are kept).
    """

    def __init__(self, crop_size: int = 256, device: str | torch.device = "cpu",
                 model: FaceModel | None = None, detector=None, photometric: bool = True):
        if crop_size < 32:
            raise ValueError(f"crop_size must be at least 32, got {crop_size}")
        self.crop_size = int(crop_size)
        self.device = torch.device(device)
        if model is None:
            from portraitrig.face.model import load_default_model

            model = load_default_model()
        self.model = model.to(self.device)
        self._detector = detector
        self._owns_detector = detector is None
        self.photometric = photometric
        self.last_skipped: list[tuple[int, str]] = []

    def close(self) -> None:
        """Release the landmark detector's MediaPipe graphs (if this rigger made them)."""
        if self._detector is not None and self._owns_detector:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> "Rigger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def detector(self):
        if self._detector is None:
            from portraitrig.capture.detector import MediaPipeFaceMesh

            self._detector = MediaPipeFaceMesh()
        return self._detector

    # ------------------------------------------------------------------ capture
    def capture(self, image, source: str | None = None) -> Capture:
        """Decode (if a path), detect the largest face, align the crop."""
        from portraitrig.capture.align import align_face
        from portraitrig.capture.detector import detect_largest
        from portraitrig.io.images import read_image

        if isinstance(image, (str, Path)):
            source = source or str(image)
            image = read_image(image)
        source = source or "<array>"
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(source, f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
        lm = detect_largest(image, path=source, detector=self.detector)
        aligned = align_face(image, lm, size=self.crop_size)
        return Capture(source, image, lm, aligned.crop, aligned.image, aligned.landmarks, aligned.valid)

    def capture_crop(self, crop_image: np.ndarray, source: str | None = None) -> Capture:
        """Capture an image that already IS an aligned square crop (a neural renderer's output,
        a saved ``.crop.png``): landmarks are found on it and it is NOT re-aligned, so the fit
        keeps its in-plane roll and placement. Resized to the rigger's crop size if needed."""
        import cv2

        from portraitrig.capture.detector import detect_largest

        source = source or "<crop>"
        img = np.asarray(crop_image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[0] != img.shape[1]:
            raise InputError(source, f"expected a square RGB uint8 crop, got {img.dtype} {img.shape}")
        S, n = self.crop_size, img.shape[0]
        lm = detect_largest(img, path=source, detector=self.detector)
        affine = np.array([[S / n, 0.0, 0.0], [0.0, S / n, 0.0]])
        crop_img = img if n == S else cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA if n > S else cv2.INTER_CUBIC)
        return Capture(source, img, lm, Crop(affine, S, (n, n)), crop_img, lm.transformed(affine, (S, S)),
                       np.ones((S, S), dtype=bool))

    def fit_crop(self, crop_image: np.ndarray, source: str | None = None) -> FitResult:
        """Fit an already aligned crop (see :meth:`capture_crop`)."""
        return self.fit_captures([self.capture_crop(crop_image, source)], keep_images=True)[0]

    # ------------------------------------------------------------------ fitting
    def fit_captures(self, captures: Sequence[Capture], shared: bool = False,
                     smooth_sigma: float = 0.0, keep_images: bool = False,
                     identity: RigParams | None = None, times: Sequence[int] | None = None) -> list[FitResult]:
        """Fit the rig to captured faces. ``shared``: one identity and albedo for all (one
        person); ``smooth_sigma`` > 0: zero-lag temporal smoothing (frames; for video), over
        the captures' frame numbers ``times`` (increasing; frames without a face left out
        between them) when given, else as consecutive frames.
        ``identity``: known identity and albedo of the person (batch 1, e.g. from
        :meth:`video_identity`), held fixed: each face then gets only its pose, expression,
        gaze and light, independently of the others (up to the smoothing)."""
        from portraitrig.fit.geometry import fit_landmarks, landmark_error

        if not captures:
            return []
        S = self.crop_size
        pts = torch.from_numpy(np.stack([c.crop_landmarks.points for c in captures]).astype(np.float32))
        ndc = torch.cat([pixels_to_ndc(pts[..., :2], S), pts[..., 2:] * (2.0 / S)], -1).to(self.device)
        params = fit_landmarks(ndc, self.model, shared_identity=shared,
                               identity=None if identity is None else identity.identity[0])
        if smooth_sigma > 0 and len(captures) > 2:
            from portraitrig.fit.smooth import smooth_params

            params = smooth_params(params, sigma_frames=smooth_sigma, times=times)
        if identity is not None:
            params = params.replace(albedo=identity.albedo[:1].to(params.albedo).expand(len(captures), -1, -1))
        if self.photometric:
            from portraitrig.fit.photometric import fit_appearance

            # a known albedo leaves the frames independent: solved a few at a time (memory)
            step = len(captures) if identity is None else APPEARANCE_BATCH
            parts = []
            for i in range(0, len(captures), step):
                part = captures[i:i + step]
                imgs = torch.from_numpy(np.stack([c.crop_image for c in part])).to(self.device)
                imgs = imgs.permute(0, 3, 1, 2).float() / 255.0
                valid = torch.from_numpy(np.stack([c.valid for c in part])).to(self.device)
                parts.append(fit_appearance(imgs, params[i:i + step], self.model, shared_albedo=shared,
                                            valid_mask=valid, fit_albedo=identity is None))
            params = parts[0] if len(parts) == 1 else RigParams.cat(parts)
        params = params.replace(crop_size=S, sources=[c.source for c in captures])
        errors = landmark_error(params, self.model, ndc).detach().cpu().numpy()
        return [
            FitResult(c.source, params[i].detach(), c.crop, c.crop_image, c.landmarks, c.crop_landmarks,
                      c.valid, float(errors[i]), c.image if keep_images else None)
            for i, c in enumerate(captures)
        ]

    def fit_image(self, image, source: str | None = None) -> FitResult:
        """Fit one photo (path or RGB uint8 array)."""
        return self.fit_captures([self.capture(image, source)], keep_images=True)[0]

    def fit_images(self, images: Iterable, shared: bool = False) -> list[FitResult]:
        """Fit several photos; ``shared=True`` treats them as an album of one person.
        Raises on the first bad input; batch jobs use ``capture`` per item instead."""
        return self.fit_captures([self.capture(im) for im in images], shared=shared, keep_images=True)

    def fit_album(self, images: Iterable) -> list[FitResult]:
        """An album of one person: identity and albedo shared by all photos."""
        return self.fit_images(images, shared=True)

    def video_identity(self, captures: Sequence[Capture]) -> RigParams:
        """Identity and albedo (RigParams of batch 1) of the one person in ``captures``: a joint
        fit of them all (give a sample of frames spread over the video)."""
        if not captures:
            raise ValueError("video_identity needs at least one capture")
        return self.fit_captures(captures, shared=True)[0].params

    def sample_video(self, path: str | Path, stride: int = 1, max_frames: int | None = None,
                     n: int = IDENTITY_SAMPLE, kept: int | None = None) -> list[Capture]:
        """Captures (original image dropped) of ``n`` kept frames spread evenly over the video
        (``kept``: its kept frame count, :func:`kept_frame_count` when None); frames without a
        face are left out, and a video that breaks off gives the frames read before."""
        from portraitrig.io.video import iter_video

        kept = kept_frame_count(path, stride, max_frames) if kept is None else kept
        picks = set(np.linspace(0, max(kept - 1, 0), min(n, max(kept, 1))).round().astype(int).tolist())
        caps = []
        try:
            for f in iter_video(path, stride=stride, max_frames=max_frames, want=lambda i: i // stride in picks):
                try:
                    caps.append(replace(self.capture(f.image, f"{path}#frame={f.index}"), image=None))
                except InputError:
                    continue
        except InputError:
            if not caps:
                raise
        return caps

    def fit_chunks(self, captures: Iterable[tuple[int, Capture]], identity: RigParams,
                   smooth_sigma: float = 0.0, chunk_frames: int = VIDEO_CHUNK,
                   start_chunk: int = 0) -> Iterator[VideoChunk]:
        """Fit a video chunk by chunk, its identity and albedo held fixed (``identity``, batch 1).

        captures: (ordinal, Capture) in increasing ordinal order (ordinal = index of the kept
        frame; frames without a face left out); it is read lazily, and only the current chunk
        plus the smoothing's reach on each side is kept. Chunks from ``start_chunk`` on are
        yielded in order (earlier ordinals serve only as the smoothing's context), one for
        every chunk up to the last capture, empty ones included. A failed solve is reported
        in its chunk's ``error``; the next chunks go on."""
        from portraitrig.fit.smooth import support_radius

        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        r = support_radius(smooth_sigma)
        window: list[tuple[int, Capture]] = []

        def solve(k: int) -> VideoChunk:
            lo, hi = k * chunk_frames, (k + 1) * chunk_frames
            context = [(o, c) for o, c in window if lo - r <= o < hi + r]
            mine = [(o, c) for o, c in context if lo <= o < hi]
            if not mine:
                return VideoChunk(k, [], [])
            try:
                res = self.fit_captures([c for _, c in context], smooth_sigma=smooth_sigma, identity=identity,
                                        times=[o for o, _ in context])
            except Exception as exc:  # a failed solve fails its chunk, not the video
                return VideoChunk(k, mine, [], exc)
            return VideoChunk(k, mine, [f for (o, _), f in zip(context, res) if lo <= o < hi])

        k = start_chunk
        for o, cap in captures:
            if o < k * chunk_frames - r:
                continue
            while o >= (k + 1) * chunk_frames + r:  # chunk k and its right context are complete
                yield solve(k)
                k += 1
                window = [(q, c) for q, c in window if q >= k * chunk_frames - r]
            window.append((o, cap))
        while window and window[-1][0] >= k * chunk_frames:
            yield solve(k)
            k += 1
            window = [(q, c) for q, c in window if q >= k * chunk_frames - r]

    def iter_video(self, path: str | Path, stride: int = 1, max_frames: int | None = None,
                   smooth_sigma: float = 1.0, chunk_frames: int = VIDEO_CHUNK) -> Iterator[VideoChunk]:
        """Fit every ``stride``-th frame of a one-person video, chunk by chunk (see the module
        doc): memory stays bounded however long the video. Frames without a face are skipped
        (``self.last_skipped`` lists them with the reason); a failed chunk raises its error."""
        from portraitrig.io.video import iter_video_frames

        self.last_skipped = []
        sigma = smooth_sigma / max(stride, 1)
        kept = kept_frame_count(path, stride, max_frames)

        def captures() -> Iterator[tuple[int, Capture]]:
            for f in iter_video_frames(path, stride=stride, max_frames=max_frames):
                try:
                    yield f.index // stride, replace(self.capture(f.image, f"{path}#frame={f.index}"), image=None)
                except InputError as err:
                    self.last_skipped.append((f.index, str(err)))

        if kept <= chunk_frames:
            caps = list(captures())
            if not caps:
                raise InputError(path, "no face found in any frame")
            yield VideoChunk(0, caps, self.fit_captures([c for _, c in caps], shared=True, smooth_sigma=sigma,
                                                        times=[o for o, _ in caps]))
            return
        sample = self.sample_video(path, stride, max_frames, kept=kept)
        if not sample:
            raise InputError(path, f"no face found in any of the {IDENTITY_SAMPLE} frames sampled for the identity")
        identity = self.video_identity(sample)
        del sample
        for ch in self.fit_chunks(captures(), identity, sigma, chunk_frames):
            if ch.error is not None:
                raise ch.error
            yield ch

    def fit_video(self, path: str | Path, stride: int = 1, max_frames: int | None = None,
                  smooth_sigma: float = 1.0, chunk_frames: int = VIDEO_CHUNK) -> list[FitResult]:
        """Every ``stride``-th frame of a one-person video: shared identity/albedo, smoothed
        (in chunks for a long video: :meth:`iter_video`). Frames where no face is found are
        skipped (``self.last_skipped`` lists them with the reason)."""
        results = [r for ch in self.iter_video(path, stride, max_frames, smooth_sigma, chunk_frames)
                   for r in ch.results]
        if not results:
            raise InputError(path, "no face found in any frame")
        return results


# ---------------------------------------------------------------------- one video, many processes
_WORKER_RIGGER: dict = {}


def _init_fit_worker() -> None:
    torch.set_num_threads(1)


def _fit_video_chunk(task: dict) -> tuple[int, list[FitResult], list[tuple[int, str]], str | None]:
    """Worker: chunk ``task["k"]`` of a video (its frames plus the smoothing's context on each
    side), fitted with the identity held fixed. Returns (k, fits, skipped frames, error)."""
    from portraitrig.fit.smooth import support_radius
    from portraitrig.io.video import iter_video

    key = (task["crop_size"], task["photometric"])
    rigger = _WORKER_RIGGER.get(key)
    if rigger is None:
        rigger = _WORKER_RIGGER[key] = Rigger(crop_size=task["crop_size"], photometric=task["photometric"])
    k, cf, stride, path = task["k"], task["chunk_frames"], task["stride"], task["path"]
    r = support_radius(task["sigma"])
    lo, hi = k * cf - r, (k + 1) * cf + r
    caps, skipped = [], []
    for f in iter_video(path, stride=stride, max_frames=task["max_frames"], want=lambda i: lo <= i // stride < hi):
        o = f.index // stride
        if not lo <= o < hi:
            continue
        try:
            caps.append((o, replace(rigger.capture(f.image, f"{path}#frame={f.index}"), image=None)))
        except InputError as err:
            if k * cf <= o < (k + 1) * cf:
                skipped.append((f.index, str(err)))
    ch = next(rigger.fit_chunks(caps, task["identity"], task["sigma"], cf, start_chunk=k), None)
    if ch is None or ch.index != k:
        return k, [], skipped, None
    return k, ch.results, skipped, None if ch.error is None else f"{ch.error.__class__.__name__}: {ch.error}"


def fit_video_parallel(path: str | Path, workers: int, rigger: Rigger | None = None, stride: int = 1,
                       max_frames: int | None = None, smooth_sigma: float = 1.0,
                       chunk_frames: int = VIDEO_CHUNK, map_fn=None) -> tuple[list[FitResult], list[tuple[int, str]]]:
    """Fit one video in ``workers`` processes: its identity and albedo from ``IDENTITY_SAMPLE``
    frames spread over it (in this process, by ``rigger``), then chunks of at most
    ``chunk_frames`` kept frames (fewer, so every worker gets one, on a short video), each
    solved with the smoothing's context frames from both sides, as :meth:`Rigger.iter_video`
    does for a long video, so the result matches a serial fit with the same chunks. Returns
    (fits in frame order, frames without a face as (frame index, reason)). ``map_fn``: how the
    chunks are run (default: a pool of spawned processes, one torch thread each)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    own = rigger is None
    rigger = rigger or Rigger()
    try:
        kept = kept_frame_count(path, stride, max_frames)
        if kept == 0:
            raise InputError(path, "no frame could be decoded")
        cf = max(1, min(chunk_frames, -(-kept // workers)))
        sample = rigger.sample_video(path, stride, max_frames, kept=kept)
        if not sample:
            raise InputError(path, f"no face found in any of the {IDENTITY_SAMPLE} frames sampled for the identity")
        identity = rigger.video_identity(sample).to("cpu")
    finally:
        if own:
            rigger.close()
    sigma = smooth_sigma / max(stride, 1)
    tasks = [{"path": str(path), "k": k, "chunk_frames": cf, "stride": stride, "max_frames": max_frames,
              "sigma": sigma, "identity": identity, "crop_size": rigger.crop_size, "photometric": rigger.photometric}
             for k in range(-(-kept // cf))]
    if map_fn is None and workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_fit_worker) as pool:
            done = list(pool.map(_fit_video_chunk, tasks))
    else:
        done = list((map_fn or map)(_fit_video_chunk, tasks))
    results, skipped = [], []
    for k, fits, skip, error in sorted(done, key=lambda d: d[0]):
        if error is not None:
            raise InputError(path, f"the fit of frames {k * cf * stride}..{((k + 1) * cf - 1) * stride} failed ({error})")
        results += fits
        skipped += skip
    if not results:
        raise InputError(path, "no face found in any frame")
    return results, skipped


__all__ = ["Capture", "FitResult", "Rigger", "VideoChunk", "kept_frame_count", "fit_video_parallel", "VIDEO_CHUNK",
           "IDENTITY_SAMPLE"]
