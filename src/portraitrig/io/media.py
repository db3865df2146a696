"""Video + audio files with PyAV (FFmpeg): write H.264/AAC MP4, read and mux audio, resample
frame rates, compose compare frames.

Frames are (H, W, 3) uint8 RGB. Audio is float32 ``(channels, samples)`` in [-1, 1] with a
sample rate in Hz. Every file is written atomically (a temporary file beside the target,
renamed when complete): an error or exception leaves no partial output.
"""
from __future__ import annotations

import contextlib
import functools
import math
from fractions import Fraction
from pathlib import Path
import numpy as np

from portraitrig.errors import InputError
from portraitrig.io.atomic import atomic_path

# sample rates the AAC encoder accepts; other rates are resampled to 48 kHz
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_H264_CANDIDATES = ("libx264", "libopenh264", "h264")
_LAYOUTS = {1: "mono", 2: "stereo"}


def _open_input(path: str | Path):
    """Open a media file for reading with PyAV; InputError (naming the file) when it cannot be."""
    import av

    p = Path(path)
    if not p.exists():
        raise InputError(path, "file not found")
    if p.is_dir():
        raise InputError(path, "is a directory, not a media file")
    if p.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        c = av.open(str(p), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot open media file (corrupt, truncated, or unsupported format: {_short(e)})") from e
    if not (c.streams.video or c.streams.audio):
        c.close()
        raise InputError(path, "no video or audio stream (corrupt, truncated, or unsupported file)")
    return c


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def as_fraction(fps: float | int | Fraction | str) -> Fraction:
    """A frame rate as an exact fraction: 25 -> 25, 29.97 -> 2997/100, 30000/1001 (float) -> 30000/1001."""
    f = Fraction(fps) if isinstance(fps, (int, Fraction, str)) else Fraction(float(fps)).limit_denominator(1001)
    if f <= 0:
        raise ValueError(f"frame rate must be > 0, got {fps}")
    return f


@functools.lru_cache(maxsize=None)
def h264_encoder() -> str:
    """Name of the first H.264 encoder of the bundled FFmpeg that opens (libx264, then
    libopenh264, then FFmpeg's default H.264 encoder); ``"mpeg4"`` (MPEG-4 part 2) if none does."""
    import av

    for name in _H264_CANDIDATES:
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, "yuv420p", Fraction(1, 25)
            ctx.open()
            return ctx.codec.name
        except (av.FFmpegError, ValueError, OSError):
            continue
    return "mpeg4"


def _planar_audio(samples) -> np.ndarray:
    a = np.asarray(samples, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] not in _LAYOUTS:
        raise ValueError(f"audio must be (samples,) or (channels, samples) with 1 or 2 channels, got {a.shape}")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0))


def _resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """(C, n) float32 at ``rate`` Hz -> (C, m) float32 at ``new_rate`` Hz (FFmpeg's resampler)."""
    import av

    layout = _LAYOUTS[samples.shape[0]]
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=new_rate)
    out = [f.to_ndarray() for f in resampler.resample(frame) + resampler.resample(None)]
    return np.ascontiguousarray(np.concatenate(out, axis=1), np.float32)


class _AudioTrack:
    """AAC audio stream fed from an in-memory signal, written up to a time on request (so that
    audio and video packets interleave as they are muxed)."""

    def __init__(self, container, samples, rate: int):
        samples = _planar_audio(samples)
        rate = int(rate)
        if rate <= 0:
            raise ValueError(f"sample rate must be > 0, got {rate}")
        if rate not in AAC_RATES:
            samples, rate = _resample(samples, rate, 48000), 48000
        self.samples, self.rate, self.pos = samples, rate, 0
        self.layout = _LAYOUTS[samples.shape[0]]
        self.container = container
        self.stream = container.add_stream("aac", rate=rate, layout=self.layout)
        self.stream.bit_rate = 96000 * samples.shape[0]

    def write_until(self, t_s: float) -> None:
        """Encode the signal up to ``t_s`` seconds (or its end)."""
        import av

        end = min(self.samples.shape[1], max(self.pos, int(round(t_s * self.rate))))
        if end <= self.pos:
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(self.samples[:, self.pos:end]),
                                           format="fltp", layout=self.layout)
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.pos, Fraction(1, self.rate)
        self.pos = end
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self, end_s: float) -> None:
        """Encode up to ``end_s`` seconds (the video's length: longer audio is cut) and flush."""
        self.write_until(end_s)
        for packet in self.stream.encode(None):
            self.container.mux(packet)


class VideoWriter:
    """Write RGB frames to an H.264 (yuv420p) MP4/MOV/MKV, with optional AAC audio, atomically.

    ``fps``: frames per second (float, int or exact Fraction, e.g. ``Fraction(30000, 1001)``).
    ``size``: ``(width, height)`` in pixels, or None to take it from the first frame. Odd sizes
    are padded by one edge-replicated column/row to even (yuv420p needs even sizes).
    ``audio``: ``(samples, sample_rate)``, samples (channels, n) or (n,) float in [-1, 1]; it is
    cut at the video's length. ``crf``: quality for libx264 (0 best .. 51 worst, 18 visually
    near-lossless); other encoders get an equivalent bit rate. ``preset``: libx264 speed/size
    trade-off ("ultrafast" .. "veryslow").

    Use as a context manager; the file appears at ``path`` only when the block ends without an
    exception (and at least one frame was written)::

        with VideoWriter("out/result.mp4", 25, audio=(wave, 48000)) as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(self, path: str | Path, fps: float | Fraction, size: tuple[int, int] | None = None,
                 audio: tuple[np.ndarray, int] | None = None, crf: int = 18, preset: str = "medium"):
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (width, height) >= 1, got {size}")
        self.path, self.fps, self.crf, self.preset = Path(path), as_fraction(fps), int(crf), preset
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if audio is not None:
            _planar_audio(audio[0])  # fail early on a bad shape
        self._audio_in = audio
        self.frames_written = 0
        self.encoder = h264_encoder()
        self._stream = self._audio = self._container = None
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc_type, exc, tb)

    def _start(self, width: int, height: int) -> None:
        import av

        mp4 = self.path.suffix.lower() in (".mp4", ".mov", ".m4v")
        self._container = av.open(str(self._tmp), "w", options={"movflags": "faststart"} if mp4 else {})
        s = self._container.add_stream(self.encoder, rate=self.fps)
        s.width, s.height, s.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        s.time_base = 1 / self.fps
        cc = s.codec_context
        cc.colorspace, cc.color_range = 6, 1  # BT.601 matrix (swscale's RGB->YUV), limited range
        if s.codec_context.codec.name == "libx264":
            s.options = {"crf": str(self.crf), "preset": self.preset}
        else:  # approximate crf with a bit rate (bits per pixel per frame)
            s.bit_rate = int(s.width * s.height * float(self.fps) * 0.2 * 2 ** ((18 - self.crf) / 6))
        self._stream = s
        if self._audio_in is not None:
            self._audio = _AudioTrack(self._container, *self._audio_in)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (H, W must match ``size``)."""
        import av

        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
        if self.size is None:
            self.size = (f.shape[1], f.shape[0])
        if (f.shape[1], f.shape[0]) != self.size:
            raise ValueError(f"frame is {f.shape[1]}x{f.shape[0]}, the video is {self.size[0]}x{self.size[1]}")
        if self._container is None:
            self._start(*self.size)
        if f.shape[0] % 2 or f.shape[1] % 2:
            f = np.pad(f, ((0, f.shape[0] % 2), (0, f.shape[1] % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
        vf.pts, vf.time_base = self.frames_written, 1 / self.fps
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
        if self._audio is not None:
            self._audio.write_until(float(self.frames_written / self.fps))

    def close(self) -> None:
        """Flush the encoders and move the finished file to ``path``."""
        if self._stack is None:
            return
        try:
            if self.frames_written == 0:
                raise ValueError(f"{self.path}: no frame was written")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.finish(float(self.frames_written / self.fps))
            self._container.close()
            self._container = None
        except BaseException as e:
            self._abort(type(e), e, e.__traceback__)
            raise
        stack, self._stack = self._stack, None
        stack.close()

    def _abort(self, exc_type, exc, tb) -> None:
        """Drop the partial file."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)


def read_audio(path: str | Path, sample_rate: int | None = None,
               channels: int | None = None) -> tuple[np.ndarray, int] | None:
    """The first audio track of a media file as float32 ``(channels, n)`` in [-1, 1] and its
    sample rate (Hz), optionally resampled to ``sample_rate`` / remixed to ``channels``.
    None when the file has no audio track; InputError when it cannot be read."""
    import av

    with _open_input(path) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        rate = int(sample_rate or s.codec_context.sample_rate)
        n_ch = int(channels or s.codec_context.channels)
        if rate <= 0 or n_ch <= 0:
            raise InputError(path, "audio track has no sample rate or no channels")
        expected_s = (float(s.duration * s.time_base) if s.duration else
                      c.duration / 1e6 if c.duration and c.duration > 0 else 0.0)
        resampler = av.AudioResampler(format="fltp", layout=_LAYOUTS.get(n_ch, n_ch), rate=rate)
        chunks = []
        try:
            for frame in c.decode(s):
                frame.pts = None  # timestamps are not needed: samples are concatenated
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
        except (av.FFmpegError, ValueError) as e:
            raise InputError(path, f"cannot decode audio ({_short(e)})") from e
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((n_ch, 0), np.float32)
    got_s = samples.shape[1] / rate
    if expected_s > 0 and got_s < 0.98 * expected_s - 0.05:
        raise InputError(path, f"audio stops at {got_s:.2f} s of {expected_s:.2f} s (truncated or corrupt file)")
    return np.ascontiguousarray(samples, np.float32), rate


def mux_audio(video_path: str | Path, audio_source_path: str | Path, out_path: str | Path,
              offset_s: float = 0.0, trim: bool = True) -> Path:
    """Write ``out_path``: the video stream of ``video_path`` (copied, not re-encoded) with the
    first audio track of ``audio_source_path`` (re-encoded to AAC), replacing any audio it had.

    ``offset_s``: time in the audio source (seconds) that plays with the first video frame;
    negative values delay the audio by inserting silence. ``trim``: cut the audio at the
    video's end. ``out_path`` may equal ``video_path``. InputError when the audio source has no
    audio or a file cannot be read."""
    import av

    with _open_input(video_path) as src:
        if not src.streams.video:
            raise InputError(video_path, "has no video stream")
        got = read_audio(audio_source_path)
        if got is None:
            raise InputError(audio_source_path, "has no audio track")
        if got[0].shape[0] > 2:  # AAC here is mono or stereo: let FFmpeg downmix
            got = read_audio(audio_source_path, channels=2)
        samples, rate = got
        shift = int(round(offset_s * rate))
        if shift >= 0:
            samples = samples[:, shift:]
        else:
            samples = np.concatenate([np.zeros((samples.shape[0], -shift), np.float32), samples], axis=1)
        vin = src.streams.video[0]
        with atomic_path(out_path) as tmp, av.open(str(tmp), "w") as out:
            vout = out.add_stream_from_template(vin)
            track = _AudioTrack(out, samples, rate)
            end_s = 0.0
            try:
                for packet in src.demux(vin):
                    if packet.dts is None:
                        continue
                    t0 = float((packet.pts if packet.pts is not None else packet.dts) * vin.time_base)
                    end_s = max(end_s, t0 + float((packet.duration or 0) * vin.time_base))
                    packet.stream = vout
                    out.mux(packet)
                    track.write_until(t0)
            except av.FFmpegError as e:
                raise InputError(video_path, f"cannot copy the video stream ({_short(e)})") from e
            if vin.duration:
                end_s = max(end_s, float(vin.duration * vin.time_base))
            track.finish(end_s if trim else track.samples.shape[1] / track.rate)
    return Path(out_path)


def resample_indices(n_src: int, fps_src: float | Fraction, fps_dst: float | Fraction,
                     duration_s: float | None = None) -> list[int]:
    """For each output frame ``k`` (shown at ``k / fps_dst`` s), the source frame on screen at
    that time: the latest one starting at or before it, ``floor(k * fps_src / fps_dst)``,
    clamped to ``n_src - 1``. Output length: ``ceil(duration_s * fps_dst)``, where
    ``duration_s`` defaults to ``n_src / fps_src``. Exact for rational rates (30000/1001)."""
    if n_src < 0:
        raise ValueError(f"n_src must be >= 0, got {n_src}")
    src, dst = as_fraction(fps_src), as_fraction(fps_dst)
    if n_src == 0:
        return []
    dur = Fraction(n_src) / src if duration_s is None else Fraction(float(duration_s))
    n_out = max(0, math.ceil(dur * dst - Fraction(1, 10**6)))  # tolerance for float durations
    return [min(int(k * src // dst), n_src - 1) for k in range(n_out)]


def side_by_side(*frames: np.ndarray, height: int | None = None, gap: int = 0) -> np.ndarray:
    """Place (H, W, 3) uint8 RGB frames left to right, each resized (aspect kept) to ``height``
    (default: the first frame's height), separated by ``gap`` black pixels."""
    import cv2

    if not frames:
        raise ValueError("side_by_side needs at least one frame")
    h = int(height or frames[0].shape[0])
    parts: list[np.ndarray] = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frame {i} must be (H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
        if f.shape[0] != h:
            w = max(1, round(f.shape[1] * h / f.shape[0]))
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if f.shape[0] > h else cv2.INTER_LINEAR)
        if i and gap:
            parts.append(np.zeros((h, gap, 3), np.uint8))
        parts.append(f)
    return np.concatenate(parts, axis=1)

