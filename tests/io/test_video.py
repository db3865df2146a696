"""portraitrig.io.video: frames, stride, timestamps, broken files."""
from __future__ import annotations

import struct
from fractions import Fraction

import cv2
import numpy as np
import pytest

from portraitrig.errors import InputError
from portraitrig.io.video import VideoFrame, iter_video_frames, video_info

N, FPS, W, H = 20, 25.0, 64, 48


def _frame(i: int) -> np.ndarray:
    """RGB frame whose brightness encodes i, with a red block on the left (checks RGB order)."""
    f = np.full((H, W, 3), 7 * i + 20, np.uint8)
    f[:, :16] = [200, 0, 0]
    return f


def _write(path, fourcc: str, n=N) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert w.isOpened()
    for i in range(n):
        w.write(cv2.cvtColor(_frame(i), cv2.COLOR_RGB2BGR))
    w.release()


@pytest.fixture(params=[("mp4v", "mp4"), ("MJPG", "avi"), ("mp4v", "mov")])
def video(tmp_path, request):
    fourcc, ext = request.param
    p = tmp_path / f"clip.{ext}"
    _write(p, fourcc)
    return p


def test_all_frames(video):
    frames = list(iter_video_frames(video))
    assert len(frames) == N
    for k, f in enumerate(frames):
        assert isinstance(f, VideoFrame) and f.index == k
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert abs(float(f.image[:, 32:].mean()) - (7 * k + 20)) < 6
        assert f.image[:, :8, 0].mean() > 170 and f.image[:, :8, 2].mean() < 40  # RGB, not BGR
        assert f.time_s == pytest.approx(k / FPS, abs=1e-3)


def test_stride_start_max(video):
    frames = list(iter_video_frames(video, stride=3, start=2, max_frames=4))
    assert [f.index for f in frames] == [2, 5, 8, 11]
    assert [round(f.time_s, 3) for f in frames] == [0.08, 0.2, 0.32, 0.44]
    for f in frames:
        assert abs(float(f.image[:, 32:].mean()) - (7 * f.index + 20)) < 6
    assert [f.index for f in iter_video_frames(video, stride=7)] == [0, 7, 14]
    assert list(iter_video_frames(video, start=N + 5)) == []
    with pytest.raises(ValueError):
        next(iter_video_frames(video, stride=0))


def test_video_info(video):
    info = video_info(video)
    assert info.frame_count == N and info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (W, H)
    assert info.duration_s == pytest.approx(N / FPS)
    assert info.fps_exact == Fraction(25) and info.audio is None and not info.has_audio


@pytest.mark.parametrize("make", ["missing", "zero", "dir", "text"])
def test_unreadable(tmp_path, make):
    p = tmp_path / "bad.mp4"
    if make == "zero":
        p.write_bytes(b"")
    elif make == "dir":
        p.mkdir()
    elif make == "text":
        p.write_text("this is not a video\n" * 50)
    for call in (lambda: list(iter_video_frames(p)), lambda: video_info(p)):
        with pytest.raises(InputError) as ei:
            call()
        assert str(ei.value).startswith(str(p))


def test_truncated_mp4(tmp_path):
    p = tmp_path / "clip.mp4"
    _write(p, "mp4v")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # the index (moov) is written last: gone
    with pytest.raises(InputError) as ei:
        list(iter_video_frames(p))
    assert str(p) in str(ei.value)


def test_truncated_avi_yields_then_raises(tmp_path):
    p = tmp_path / "clip.avi"
    _write(p, "MJPG", n=30)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 6 // 10])
    got = []
    with pytest.raises(InputError) as ei:
        for f in iter_video_frames(p):
            got.append(f.index)
    assert 0 < len(got) < 30 and got == list(range(len(got)))
    assert str(p) in str(ei.value) and f"frame {len(got)}" in str(ei.value)


def _chunks(data: bytes, start: int, end: int):
    i = start
    while i + 8 <= end:
        size = struct.unpack("<I", data[i + 4:i + 8])[0]
        yield data[i:i + 4], i, size
        i += 8 + size + (size & 1)


def _drop_frames(src, dst, drop_after: set[int]) -> None:
    """Rewrite an OpenCV MJPG AVI with an empty (dropped-frame) video chunk after each frame in
    ``drop_after``: the decoder then skips one frame period there - a variable-rate file."""
    data = src.read_bytes()
    top = list(_chunks(data, 12, len(data)))
    frames = [data[o + 8:o + 8 + s] for cid, off, size in top
              if cid == b"LIST" and data[off + 8:off + 12] == b"movi"
              for c, o, s in _chunks(data, off + 12, off + 8 + size) if c == b"00dc"]
    movi, idx = bytearray(b"movi"), bytearray()
    for i, f in enumerate(frames):
        for payload in [f] + ([b""] if i in drop_after else []):
            idx += b"00dc" + struct.pack("<III", 0x10 if payload else 0, len(movi), len(payload))
            movi += b"00dc" + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)
    out = bytearray()
    for cid, off, size in top:
        body = bytearray(data[off:off + 8 + size + (size & 1)])
        if cid == b"LIST" and body[8:12] == b"movi":
            body = b"LIST" + struct.pack("<I", len(movi)) + movi
        elif cid == b"idx1":
            body = b"idx1" + struct.pack("<I", len(idx)) + idx
        out += body
    dst.write_bytes(b"RIFF" + struct.pack("<I", len(out) + 4) + b"AVI " + bytes(out))


def test_variable_frame_rate_uses_decoder_timestamps(tmp_path):
    _write(tmp_path / "cfr.avi", "MJPG", n=10)
    _drop_frames(tmp_path / "cfr.avi", tmp_path / "vfr.avi", {2, 5})
    frames = list(iter_video_frames(tmp_path / "vfr.avi"))
    assert [f.index for f in frames] == list(range(10))
    want = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]  # in frame periods: a gap after frames 2 and 5
    assert [f.time_s for f in frames] == pytest.approx([k / FPS for k in want], abs=1e-3)
    for f in frames:
        assert abs(float(f.image[:, 32:].mean()) - (7 * f.index + 20)) < 6
    strided = list(iter_video_frames(tmp_path / "vfr.avi", stride=4))
    assert [(f.index, round(f.time_s, 3)) for f in strided] == [(0, 0.0), (4, 0.2), (8, 0.4)]
