"""portraitrig.io.media: H.264/AAC writing, audio read/mux, frame-rate resampling, compare frames."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from portraitrig.errors import InputError
from portraitrig.io.media import (VideoWriter, h264_encoder, mux_audio, read_audio, resample_indices,
                                  side_by_side)
from portraitrig.io.video import iter_video_frames, video_info

FPS, W, H, RATE = 25, 64, 64, 44100


def _frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Brightness encodes i; a red block on the left checks the RGB order."""
    f = np.full((h, w, 3), 8 * (i % 25) + 20, np.uint8)
    f[:, :16] = [200, 0, 0]
    return f


def _tone(freq: float, seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    x = x.mean(0) if x.ndim == 2 else x
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def _write(path, n=FPS, fps=FPS, audio=None, w=W, h=H):
    with VideoWriter(path, fps, audio=audio) as vw:
        for i in range(n):
            vw.write(_frame(i, w, h))
    return path


def test_encoder_is_h264_when_available():
    name = h264_encoder()
    assert name in ("libx264", "libopenh264", "h264", "mpeg4")


@pytest.mark.parametrize("channels", [1, 2])
def test_write_with_tone_round_trip(tmp_path, channels):
    p = _write(tmp_path / "clip.mp4", audio=(_tone(440, 1.0, channels=channels), RATE))
    info = video_info(p)
    assert (info.frame_count, info.width, info.height) == (FPS, W, H)
    assert info.fps_exact == Fraction(FPS) and info.duration_s == pytest.approx(1.0)
    assert info.has_audio and info.audio.sample_rate == RATE and info.audio.channels == channels
    assert info.audio.codec == "aac" and info.audio.duration_s == pytest.approx(1.0, abs=0.05)
    frames = list(iter_video_frames(p))
    assert len(frames) == FPS
    for f in frames:
        assert f.image.shape == (H, W, 3)
        assert abs(float(f.image[:, 32:].mean()) - (8 * f.index + 20)) < 4
        assert f.image[:, 2:12, 0].mean() > 170 and f.image[:, 2:12, 2].mean() < 40
    samples, rate = read_audio(p)
    assert rate == RATE and samples.shape[0] == channels and samples.dtype == np.float32
    assert samples.shape[1] == pytest.approx(RATE, rel=0.03)
    assert _peak_hz(samples, rate) == pytest.approx(440, abs=5)
    assert 0.25 < float(np.sqrt(np.mean(samples[:, 2000:-2000] ** 2))) < 0.45  # 0.5 amplitude sine: 0.354


def test_audio_is_cut_at_video_end_and_odd_rates_resampled(tmp_path):
    p = _write(tmp_path / "clip.mp4", n=10, audio=(_tone(440, 2.0, rate=20000), 20000))  # 0.4 s video
    samples, rate = read_audio(p)
    assert rate == 48000  # 20 kHz is not an AAC rate
    assert samples.shape[1] / rate == pytest.approx(0.4, abs=0.03)
    assert _peak_hz(samples, rate) == pytest.approx(440, abs=8)
    mono16k, r16 = read_audio(p, sample_rate=16000, channels=1)
    assert r16 == 16000 and mono16k.shape[0] == 1 and _peak_hz(mono16k, r16) == pytest.approx(440, abs=8)


def test_odd_size_padded_to_even(tmp_path):
    p = _write(tmp_path / "odd.mp4", n=3, w=63, h=47)
    info = video_info(p)
    assert (info.width, info.height) == (64, 48) and not info.has_audio
    img = next(iter_video_frames(p)).image
    assert abs(float(img[:46, 20:62].mean()) - 20) < 4


def test_rational_fps(tmp_path):
    p = _write(tmp_path / "ntsc.mp4", n=6, fps=Fraction(30000, 1001))
    info = video_info(p)
    assert info.fps_exact == Fraction(30000, 1001) and info.frame_count == 6
    assert [round(f.time_s, 4) for f in iter_video_frames(p)][:3] == [0.0, 0.0334, 0.0667]


def test_atomic_on_exception(tmp_path):
    p = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(p, FPS, audio=(_tone(440, 1.0), RATE)) as vw:
            for i in range(5):
                vw.write(_frame(i))
            raise RuntimeError("renderer failed")
    assert list(tmp_path.iterdir()) == []
    _write(p, n=4)
    before = p.read_bytes()
    with pytest.raises(ValueError):  # a bad frame mid-way: the old file stays as it was
        with VideoWriter(p, FPS) as vw:
            vw.write(_frame(0))
            vw.write(_frame(1, w=32))
    assert p.read_bytes() == before and list(tmp_path.iterdir()) == [p]


def test_no_frames_no_file(tmp_path):
    with pytest.raises(ValueError, match="no frame"):
        with VideoWriter(tmp_path / "empty.mp4", FPS):
            pass
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_rejected(tmp_path):
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "x.mp4", FPS) as vw:
            vw.write(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "x.mp4", FPS, audio=(np.zeros((3, 100), np.float32), RATE))
    assert list(tmp_path.iterdir()) == []


def test_mux_round_trip_with_offset(tmp_path):
    video = _write(tmp_path / "video.mp4")  # 1 s, no audio
    assert read_audio(video) is None
    driver_audio = np.concatenate([_tone(440, 1.0), _tone(880, 1.0)], axis=1)  # 880 Hz from 1 s on
    driver = _write(tmp_path / "driver.mp4", n=50, audio=(driver_audio, RATE))
    out = mux_audio(video, driver, tmp_path / "out" / "result.mp4")
    info = video_info(out)
    assert info.frame_count == FPS and info.has_audio and (info.width, info.height) == (W, H)
    samples, rate = read_audio(out)
    assert samples.shape[1] / rate == pytest.approx(1.0, abs=0.05)  # trimmed to the video
    assert _peak_hz(samples, rate) == pytest.approx(440, abs=5)
    frames = list(iter_video_frames(out))  # video copied: same pictures
    assert len(frames) == FPS and abs(float(frames[7].image[:, 32:].mean()) - (8 * 7 + 20)) < 4

    late = read_audio(mux_audio(video, driver, tmp_path / "late.mp4", offset_s=1.0))
    assert _peak_hz(late[0], late[1]) == pytest.approx(880, abs=5)

    delayed, rate = read_audio(mux_audio(video, driver, tmp_path / "delayed.mp4", offset_s=-0.5))
    assert float(np.abs(delayed[:, : int(0.4 * rate)]).max()) < 0.02  # silence first
    assert float(np.abs(delayed[:, int(0.6 * rate): int(0.9 * rate)]).max()) > 0.3


def test_mux_in_place_replaces_audio(tmp_path):
    clip = _write(tmp_path / "clip.mp4", audio=(_tone(440, 1.0), RATE))
    driver = _write(tmp_path / "driver.mp4", audio=(_tone(660, 1.0, channels=2), RATE))
    mux_audio(clip, driver, clip)
    samples, rate = read_audio(clip)
    assert samples.shape[0] == 2 and _peak_hz(samples, rate) == pytest.approx(660, abs=5)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["clip.mp4", "driver.mp4"]


def test_mux_errors_name_the_file(tmp_path):
    video = _write(tmp_path / "video.mp4", n=3)
    silent = _write(tmp_path / "silent.mp4", n=3)
    with pytest.raises(InputError) as ei:
        mux_audio(video, silent, tmp_path / "out.mp4")
    assert str(ei.value).startswith(str(silent))
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n" * 40)
    with pytest.raises(InputError) as ei:
        mux_audio(bad, silent, tmp_path / "out.mp4")
    assert str(ei.value).startswith(str(bad))
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("make", ["missing", "zero", "text", "head_only", "half"])
def test_read_audio_unreadable(tmp_path, make):
    p = tmp_path / "bad.mp4"
    if make == "zero":
        p.write_bytes(b"")
    elif make == "text":
        p.write_text("this is not a video\n" * 50)
    elif make in ("head_only", "half"):  # the index is at the front (faststart): cut in it / the data
        _write(p, audio=(_tone(440, 1.0), RATE))
        data = p.read_bytes()
        p.write_bytes(data[:300] if make == "head_only" else data[: len(data) // 2])
    # video_info does not decode: a file cut in its data is caught when the frames are read
    for call in (read_audio, video_info if make != "half" else lambda q: list(iter_video_frames(q))):
        with pytest.raises(InputError) as ei:
            call(p)
        assert str(ei.value).startswith(str(p))


def test_resample_indices_known_answers():
    assert resample_indices(25, 25, 30) == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13, 14,
                                            15, 15, 16, 17, 18, 19, 20, 20, 21, 22, 23, 24]
    assert resample_indices(30, 30, 25) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20,
                                            21, 22, 24, 25, 26, 27, 28]
    assert resample_indices(24, 24, 24) == list(range(24))
    assert resample_indices(24, 24.0, 24.0, duration_s=0.5) == list(range(12))
    assert resample_indices(10, 25, 25, duration_s=0.6) == list(range(10)) + [9] * 5  # hold the last
    ntsc = resample_indices(30, Fraction(30000, 1001), 30)  # 1.001 s: 31 output frames
    assert len(ntsc) == 31 and ntsc[:3] == [0, 0, 1] and ntsc[-1] == 29
    assert resample_indices(30, 29.97002997, 30) == ntsc  # float NTSC rate taken as 30000/1001
    assert resample_indices(0, 25, 30) == []
    with pytest.raises(ValueError):
        resample_indices(5, 0, 25)


def test_side_by_side():
    a = np.full((64, 48, 3), 10, np.uint8)
    b = np.full((32, 32, 3), 200, np.uint8)
    out = side_by_side(a, b, gap=4)
    assert out.shape == (64, 48 + 4 + 64, 3) and out.dtype == np.uint8
    assert out[:, :48].max() == 10 and out[:, 48:52].max() == 0 and out[:, 52:].min() == 200
    assert side_by_side(a, b, height=32).shape == (32, 24 + 32, 3)
    with pytest.raises(ValueError):
        side_by_side(a, a.astype(np.float32))
