"""Avatar frames from a video: the crops' in-frame masks (where a crop shows its video frame, not
the mirrored padding past the frame's edge) are recorded, saved and kept by subsets; files made
before them read as all in the frame; the avatars' losses do not see the padding."""
import cv2
import numpy as np
import torch
from skimage import data

from portraitrig.neural.frames import Frames, frames_from_video, synthetic_frames


def test_frames_from_a_video_record_where_each_crop_shows_the_frame(tmp_path):
    face = cv2.resize(data.astronaut()[40:300, 60:320], (256, 256))     # the face near the frame's top edge
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(3):
        vw.write(cv2.cvtColor(np.roll(face, i * 2, axis=1), cv2.COLOR_RGB2BGR))
    vw.release()
    fr = frames_from_video(path, 64, 1, None, None)
    assert fr.valid.shape == (3, 64, 64) and fr.valid.dtype == torch.bool
    col = fr.valid[:, :, 32]
    assert not col[:, 0].any() and col[:, -1].all() and col[:, 32].all()   # the crops pass the top edge only
    fr.save(tmp_path / "f.safetensors", jpeg_quality=90)
    back = Frames.load(tmp_path / "f.safetensors")
    assert torch.equal(back.valid, fr.valid) and torch.equal(back.in_frame(), fr.valid)
    assert torch.equal(back.subset([2, 0]).in_frame(), fr.valid[[2, 0]])


def test_frames_without_in_frame_masks_are_in_the_frame_everywhere(tmp_path):
    fr = synthetic_frames(3, 32)
    assert fr.valid is None and fr.in_frame().all() and fr.in_frame().shape == (3, 32, 32)
    fr.save(tmp_path / "old.safetensors")
    back = Frames.load(tmp_path / "old.safetensors")
    assert back.valid is None and back.subset([1]).in_frame().shape == (1, 32, 32)


def _with_padding(n=6, size=32):
    fr = synthetic_frames(n, size)
    valid = torch.ones(n, size, size, dtype=torch.bool)
    valid[:, :, :6] = False                                               # a padded strip on the left
    fr.valid = valid
    return fr


def _loss(method, idx, seed=0):
    loss, _ = method.loss(method.model, idx, 0, torch.Generator().manual_seed(seed))
    return float(loss.detach())


def test_the_gaussian_avatars_loss_does_not_see_the_padding():
    from portraitrig.methods.splat.config import PRESETS
    from portraitrig.methods.splat.method import SplatMethod

    cfg = PRESETS["tiny"]()
    cfg.background_augment = 0.5
    m = SplatMethod(cfg, _with_padding(), "cpu", say=None)
    idx = torch.tensor([0, 1])
    before = _loss(m, idx)
    m.images[:, :, :, :6] = 255 - m.images[:, :, :, :6]                   # other content in the padding
    m.masks[:, :, :, :6] = 255 - m.masks[:, :, :, :6]
    assert abs(_loss(m, idx) - before) < 1e-6
    m.images[:, :, :, 10:16] = 255 - m.images[:, :, :, 10:16]             # in the frame: it counts
    assert abs(_loss(m, idx) - before) > 1e-3


def test_the_radiance_field_avatars_loss_does_not_see_the_padding():
    from portraitrig.methods.avatar.config import PRESETS
    from portraitrig.methods.avatar.method import AvatarMethod

    m = AvatarMethod(PRESETS["tiny"](), _with_padding(), "cpu", say=None)
    idx = torch.tensor([0, 1])
    before = _loss(m, idx)
    m.images[:, :, :6] = 0                                                 # (N, S, S, 3): columns 0..5
    m.masks[:, :, :6] = 255 - m.masks[:, :, :6]
    assert abs(_loss(m, idx) - before) < 1e-6
    m.images[:, :, 6:] = 0                                                 # in the frame: it counts
    assert abs(_loss(m, idx) - before) > 1e-3
