"""One video fitted in several processes (fit_video_parallel): the same chunks and the same
identity as a serial chunked fit, so the same parameters; frames without a face are reported.
The video is made here from scikit-image's astronaut (a real face MediaPipe finds), moving."""
import numpy as np
import pytest
import torch
from skimage import data

from portraitrig.errors import InputError
from portraitrig.io.media import VideoWriter
from portraitrig.pipeline import Rigger, fit_video_parallel

N = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    astro = np.ascontiguousarray(data.astronaut())
    path = tmp_path_factory.mktemp("par") / "astro.mp4"
    with VideoWriter(path, 25, crf=12) as w:
        for i in range(N):
            dx, dy = int(round(6 * np.sin(i / 2))), int(round(4 * np.cos(i / 3)))
            frame = astro[20 + dy:276 + dy, 110 + dx:366 + dx]
            if i == 5:
                frame = np.full_like(frame, 90)          # a frame without a face
            w.write(frame)
    return path


@pytest.fixture(scope="module")
def rigger():
    with Rigger() as r:
        yield r


def _stack(fits, name):
    return torch.cat([getattr(f.params, name) for f in fits])


def test_workers_fit_the_same_chunks_as_a_serial_fit(clip, rigger):
    serial = rigger.fit_video(clip, chunk_frames=4)          # 12 frames > 4: sampled identity, 3 chunks
    par, skipped = fit_video_parallel(clip, workers=3, rigger=rigger, chunk_frames=4, map_fn=map)
    assert [f.source for f in par] == [f.source for f in serial]
    assert len(par) == N - 1 and [i for i, _ in skipped] == [5]
    for name in ("rotation", "translation", "expression", "identity", "gaze"):
        torch.testing.assert_close(_stack(par, name), _stack(serial, name), atol=1e-3, rtol=0)


def test_spawned_processes_give_the_in_process_result(clip, rigger):
    here, _ = fit_video_parallel(clip, workers=2, rigger=rigger, map_fn=map)      # chunks of 6
    there, skipped = fit_video_parallel(clip, workers=2, rigger=rigger)          # 2 spawned processes
    assert [f.source for f in there] == [f.source for f in here] and [i for i, _ in skipped] == [5]
    torch.testing.assert_close(_stack(there, "expression"), _stack(here, "expression"), atol=1e-3, rtol=0)


def test_bad_videos(tmp_path, rigger):
    with pytest.raises(ValueError, match="workers"):
        fit_video_parallel(tmp_path / "x.mp4", workers=0, rigger=rigger)
    blank = tmp_path / "blank.mp4"
    with VideoWriter(blank, 25) as w:
        for _ in range(4):
            w.write(np.full((64, 64, 3), 40, np.uint8))
    with pytest.raises(InputError, match="blank.mp4.*no face"):
        fit_video_parallel(blank, workers=2, rigger=rigger, map_fn=map)
