"""Video frames with OpenCV (FFmpeg backend): mp4 / mov / avi / mkv / webm ...; container
metadata (exact frame rate, audio track) with PyAV. Writing and audio: :mod:`portraitrig.io.media`.

Timestamps come from the decoder (``CAP_PROP_POS_MSEC`` of each frame), so variable-frame-rate
files get their real times; only when the backend reports none is ``index / fps`` used.
Frames are read sequentially (skipped frames are grabbed but not colour-converted): seeking by
frame number is inexact for many codecs, sequential reading is exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from portraitrig.errors import InputError


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` (0-based count of decoded frames), ``time_s`` (presentation time,
    seconds), ``image`` (H, W, 3) uint8 RGB."""

    index: int
    time_s: float
    image: np.ndarray


@dataclass
class AudioInfo:
    """An audio track: ``sample_rate`` (Hz), ``channels``, ``duration_s`` (0 when unknown),
    ``codec`` (FFmpeg name, e.g. "aac")."""

    sample_rate: int
    channels: int
    duration_s: float
    codec: str


@dataclass
class VideoInfo:
    """Container metadata. ``frame_count`` is the container's count (estimated from duration x
    fps where the container has none, e.g. mkv/webm); ``fps`` the nominal rate and
    ``fps_exact`` the same as an exact fraction (30000/1001), None when unknown;
    ``width``/``height`` in pixels; ``duration_s`` = frame_count / fps (else the container's
    duration); ``audio`` the first audio track, None when there is none."""

    frame_count: int
    fps: float
    width: int
    height: int
    duration_s: float
    fps_exact: Fraction | None = None
    audio: AudioInfo | None = None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def _open(path: str | Path):
    import cv2

    p = Path(path)
    if not p.exists():
        raise InputError(path, "file not found")
    if p.is_dir():
        raise InputError(path, "is a directory, not a video file")
    if p.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise InputError(path, "cannot open video (corrupt, truncated, or unsupported format)")
    return cap


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, fps, size, duration and audio track of a video, without decoding it."""
    from portraitrig.io.media import _open_input

    with _open_input(path) as c:
        if not c.streams.video:
            raise InputError(path, "no video stream in the file")
        v = c.streams.video[0]
        w, h = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
        rate = v.guessed_rate or v.average_rate or v.base_rate
        rate = Fraction(rate) if rate else None
        fps = float(rate) if rate else 0.0
        length = (float(v.duration * v.time_base) if v.duration else
                  c.duration / 1e6 if c.duration and c.duration > 0 else 0.0)
        n = max(int(v.frames or 0), 0)
        if n == 0 and fps > 0:
            n = int(round(length * fps))
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = AudioInfo(int(a.codec_context.sample_rate or 0), int(a.codec_context.channels or 0),
                              float(a.duration * a.time_base) if a.duration else 0.0, a.codec_context.name)
    if w <= 0 or h <= 0:
        raise InputError(path, "video has no readable picture size")
    return VideoInfo(n, fps, w, h, n / fps if n and fps > 0 else length, rate, audio)


def iter_video_frames(path: str | Path, stride: int = 1, start: int = 0,
                      max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Yield frames ``start, start + stride, ...`` (at most ``max_frames``) as RGB uint8.

    Raises InputError when the file cannot be opened or yields no frame, and - after yielding
    what it could read - when decoding stops well before the container's frame count
    (truncated / corrupt file); the message names the frame where it stopped."""
    yield from iter_video(path, stride=stride, start=start, max_frames=max_frames)


def iter_video(path: str | Path, stride: int = 1, start: int = 0, max_frames: int | None = None,
               want: Callable[[int], bool] | None = None) -> Iterator[VideoFrame]:
    """Like :func:`iter_video_frames`; frames whose index fails ``want(index)`` are skipped
    without colour conversion (used to resume batch jobs)."""
    import cv2

    if stride < 1 or start < 0 or (max_frames is not None and max_frames < 0):
        raise ValueError("stride must be >= 1, start >= 0, max_frames >= 0")
    cap = _open(path)
    try:
        count = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        index, emitted, last_t = -1, 0, -1.0
        while max_frames is None or emitted < max_frames:
            if not cap.grab():
                _check_end(path, index, count)
                return
            index += 1
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            t = msec / 1000.0 if (msec > 0 or index == 0) else -1.0
            if t <= last_t and index > 0:  # backend gave no usable time stamp
                t = index / fps if fps > 0 else float(index)
            last_t = t
            if index < start or (index - start) % stride:
                continue
            if want is not None and not want(index):
                emitted += 1
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                raise InputError(path, f"cannot decode frame {index} (corrupt video data)")
            emitted += 1
            yield VideoFrame(index, float(t), _to_rgb(bgr))
    finally:
        cap.release()


def _check_end(path, last_index: int, count: int) -> None:
    read = last_index + 1
    if read == 0:
        raise InputError(path, "no frame could be decoded (corrupt, truncated, or unsupported video)")
    if count > 0 and read < count - max(2, round(0.02 * count)):
        raise InputError(path, f"decoding stopped at frame {read} of {count} (truncated or corrupt video)")


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    import cv2

    if bgr.dtype != np.uint8:
        bgr = np.clip(np.rint(bgr.astype(np.float32) / 257.0), 0, 255).astype(np.uint8)
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
