"""Chunked video fitting (Rigger.fit_chunks): a video fitted chunk by chunk with its identity held
fixed gives the same parameters as one fit of all its frames, smoothing included."""
import numpy as np
import pytest
import torch

from portraitrig.capture.types import Crop, Landmarks
from portraitrig.face.base import ndc_to_pixels
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams, euler_to_matrix, matrix_to_axis_angle
from portraitrig.fit.geometry import landmarks_ndc
from portraitrig.pipeline import Capture, Rigger

S = 64


@pytest.fixture(scope="module")
def rigger():
    return Rigger(crop_size=S, model=load_default_model(), detector=object())


def _captures(model, n, seed=0):
    """n frames of one person turning and talking (landmarks made by the model), noisy crops."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n)
    p = RigParams.neutral(model, batch=n)
    ident = 0.5 * torch.randn(1, model.n_id, generator=g)
    R = euler_to_matrix(0.4 * torch.sin(6 * t), 0.1 * torch.cos(5 * t), 0.05 * t)
    p = p.replace(rotation=matrix_to_axis_angle(R), identity=ident.expand(n, -1).clone(),
                  expression=0.5 * torch.sin(t[:, None] * torch.arange(1, model.n_expr + 1) * 0.3))
    y = landmarks_ndc(p, model).detach()
    pts = torch.cat([ndc_to_pixels(y[..., :2], S), y[..., 2:] * (S / 2)], -1)
    pts = pts + 0.3 * torch.randn(pts.shape, generator=g)  # landmark jitter: smoothing has work to do
    rng = np.random.default_rng(seed)
    caps = []
    for i in range(n):
        lm = Landmarks(pts[i].numpy().astype(np.float32), 1.0, (0.0, 0.0, S, S), (S, S))
        img = np.clip(150 + 40 * rng.standard_normal((S, S, 3)), 0, 255).astype(np.uint8)
        caps.append(Capture(f"v.mp4#frame={i}", None, lm, Crop(np.eye(2, 3), S, (S, S)), img, lm,
                            np.ones((S, S), bool)))
    return caps


def _stack(results, name):
    return torch.cat([getattr(r.params, name) for r in results])


def test_chunks_match_one_fit_of_the_whole_video(rigger):
    caps = _captures(rigger.model, 17)
    identity = rigger.video_identity(caps[::4])
    whole = rigger.fit_captures(caps, smooth_sigma=1.0, identity=identity)
    chunks = list(rigger.fit_chunks(enumerate(caps), identity, smooth_sigma=1.0, chunk_frames=4))
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4]
    assert [len(c.results) for c in chunks] == [4, 4, 4, 4, 1]
    assert [o for c in chunks for o, _ in c.captures] == list(range(17))
    parts = [r for c in chunks for r in c.results]
    for name in ("rotation", "expression", "scale", "translation", "light", "gaze"):
        assert torch.allclose(_stack(parts, name), _stack(whole, name), atol=2e-4), name
    # identity and albedo are the given ones in every frame
    assert torch.allclose(_stack(parts, "identity"), identity.identity.expand(17, -1), atol=1e-6)
    assert torch.allclose(_stack(parts, "albedo"), identity.albedo.expand(17, -1, -1), atol=1e-6)
    # the smoothing ran across chunk borders: without context the border frames differ
    alone = rigger.fit_captures(caps[4:8], smooth_sigma=1.0, identity=identity)
    assert (_stack(alone, "expression")[0] - _stack(whole[4:8], "expression")[0]).abs().max() > 1e-3

    # resuming at chunk 3 gives the same chunks 3, 4 (earlier frames are only context)
    later = list(rigger.fit_chunks(enumerate(caps), identity, smooth_sigma=1.0, chunk_frames=4, start_chunk=3))
    assert [c.index for c in later] == [3, 4]
    assert torch.allclose(_stack(later[0].results, "expression"), _stack(chunks[3].results, "expression"), atol=1e-5)


def test_chunks_with_frames_missing_and_a_failed_solve(rigger, monkeypatch):
    caps = _captures(rigger.model, 10, seed=1)
    identity = rigger.video_identity(caps[::3])
    present = [(o, c) for o, c in enumerate(caps) if not 3 <= o < 6]  # chunk 1 has no face at all
    chunks = list(rigger.fit_chunks(iter(present), identity, smooth_sigma=0.0, chunk_frames=3))
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert chunks[1].captures == [] and chunks[1].results == []
    assert [len(c.results) for c in chunks] == [3, 0, 3, 1]

    calls = []
    real = Rigger.fit_captures

    def flaky(self, captures, **kw):
        calls.append(len(captures))
        if len(calls) == 2:
            raise RuntimeError("solver exploded")
        return real(self, captures, **kw)

    monkeypatch.setattr(Rigger, "fit_captures", flaky)
    chunks = list(rigger.fit_chunks(enumerate(caps), identity, chunk_frames=4))
    assert [c.error is not None for c in chunks] == [False, True, False]
    assert len(chunks[1].captures) == 4 and chunks[1].results == [] and len(chunks[2].results) == 2
    with pytest.raises(ValueError):
        list(rigger.fit_chunks(enumerate(caps), identity, chunk_frames=0))


def test_frames_without_a_face_are_smoothed_as_the_video_ran(rigger):
    """Frames left out (no face) are a gap in time: the smoothing does not join the frames on
    either side of it as if they were adjacent, chunked or not."""
    caps = _captures(rigger.model, 17, seed=2)
    identity = rigger.video_identity(caps[::4])
    present = [(o, c) for o, c in enumerate(caps) if not 6 <= o < 10]   # frames 6-9 without a face
    chunks = list(rigger.fit_chunks(iter(present), identity, smooth_sigma=1.0, chunk_frames=4))
    parts = [r for c in chunks for r in c.results]
    whole = rigger.fit_captures([c for _, c in present], smooth_sigma=1.0, identity=identity,
                                times=[o for o, _ in present])
    for name in ("rotation", "expression", "translation"):
        assert torch.allclose(_stack(parts, name), _stack(whole, name), atol=2e-4), name
    # the gap is wider than the smoothing's reach: each side is smoothed as if alone
    left = rigger.fit_captures([c for o, c in present if o < 6], smooth_sigma=1.0, identity=identity)
    assert torch.allclose(_stack(whole[:6], "expression"), _stack(left, "expression"), atol=1e-5)
    # taken as adjacent frames, the frames beside the gap are pulled towards the other side
    adjacent = rigger.fit_captures([c for _, c in present], smooth_sigma=1.0, identity=identity)
    assert (_stack(adjacent, "expression")[5] - _stack(whole, "expression")[5]).abs().max() > 1e-3
