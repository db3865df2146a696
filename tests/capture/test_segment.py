"""portraitrig.capture.segment: MediaPipe selfie segmentation on a real portrait (scikit-image's
astronaut) and masks warped into aligned crops."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from portraitrig.capture.segment import PersonSegmenter, crop_person_mask, mask_to_crop
from portraitrig.capture.types import Crop
from portraitrig.errors import InputError

# astronaut (512 x 512): inside the face, on the torso, and the two top corners (background)
FACE = (slice(70, 190), slice(190, 270))
TORSO = (slice(260, 480), slice(80, 330))
CORNERS = ((slice(0, 32), slice(0, 32)), (slice(0, 32), slice(-32, None)))


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def segmenter():
    s = PersonSegmenter()
    yield s
    s.close()


@pytest.fixture(scope="module")
def astro_mask(segmenter, astronaut):
    return segmenter.segment(astronaut, "astronaut.png")


def test_astronaut_person_inside_background_outside(astro_mask):
    m = astro_mask
    assert m.shape == (512, 512) and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert m[FACE].mean() > 0.95 and m[TORSO].mean() > 0.95
    for c in CORNERS:
        assert m[c].max() < 0.05
    # the person is a large part of the picture, not all of it
    assert 0.3 < (m > 0.5).mean() < 0.8


def test_bad_images_name_the_file(segmenter):
    for bad in (np.zeros((16, 16), np.uint8), np.zeros((16, 16, 4), np.uint8), np.zeros((16, 16, 3), np.float32),
                np.zeros((1, 1, 3), np.uint8)):
        with pytest.raises(InputError, match="^frame_7.png: "):
            segmenter.segment(bad, "frame_7.png")


def test_close_and_context_manager(astronaut):
    small = np.ascontiguousarray(astronaut[::4, ::4])
    with PersonSegmenter("landscape") as s:
        a = s.segment(small)
        s.close()
        b = s.segment(small)  # the graph is made again
    assert s._graph is None
    assert a.shape == (128, 128) and np.abs(a - b).max() < 1e-3
    with pytest.raises(ValueError, match="unknown segmentation model"):
        PersonSegmenter("portrait")


def test_mask_to_crop_follows_the_affine():
    # a bright rectangle, cropped by a scale-0.5 map shifted by (-10, -20) crop pixels
    m = np.zeros((100, 120), np.float32)
    m[40:60, 50:90] = 1.0  # rows 40..60, columns 50..90
    crop = Crop(np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]]), 32, (120, 100))
    c = mask_to_crop(m, crop)
    assert c.shape == (32, 32) and c.dtype == np.float32
    inside = c > 0.5
    rows, cols = np.nonzero(inside)
    # expected: columns 0.5*50-10 .. 0.5*90-10 = 15..35 (cut at 32), rows 0.5*40-20 .. 0.5*60-20 = 0..10
    assert rows.min() == 0 and abs(rows.max() + 1 - 10) <= 1
    assert abs(cols.min() - 15) <= 1 and cols.max() == 31
    with pytest.raises(ValueError, match="crop is of a 120x100 image"):
        mask_to_crop(m[:50], crop)


def test_crop_person_mask_agrees_with_whole_image(segmenter, astronaut, astro_mask):
    # a 128 px crop of a 300 px square around the face (centre 227, 125)
    s = 128 / 300
    crop = Crop(np.array([[s, 0.0, -(227 - 150) * s], [0.0, s, -(125 - 150) * s]]), 128, (512, 512))
    a = crop_person_mask(segmenter, astronaut, crop, path="astronaut.png")
    b = mask_to_crop(astro_mask, crop)
    assert a.shape == (128, 128) and a.dtype == np.float32
    iou = ((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum()
    assert iou > 0.9
    assert a[56:72, 56:72].mean() > 0.95 and a[:12, :12].max() < 0.05
    with pytest.raises(InputError, match="^astronaut.png: image is 256x256"):
        crop_person_mask(segmenter, astronaut[::2, ::2].copy(), crop, path="astronaut.png")


def test_crop_past_the_frame_edge_sees_no_mirrored_person(segmenter, astronaut):
    # the astronaut cut off at the shoulders (a face near the bottom of the frame, as in a selfie
    # video): the crop and the segmentation window reach far below the frame. A mirrored window
    # showed the model a second, upside-down person there.
    s = 128 / 300
    img = np.ascontiguousarray(astronaut[:200])
    crop = Crop(np.array([[s, 0.0, -(227 - 150) * s], [0.0, s, 0.0]]), 128, (512, 200))
    a = crop_person_mask(segmenter, img, crop, path="cut.png")
    whole = crop_person_mask(segmenter, astronaut, Crop(crop.affine, 128, (512, 512)), path="astronaut.png")
    bottom = int(np.floor(s * 200))                      # the first crop row below the frame
    inside, ref = a[:bottom] > 0.5, whole[:bottom] > 0.5
    assert (inside & ref).sum() / (inside | ref).sum() > 0.97   # in the frame: as if it were not cut
    assert a[:40, :12].max() < 0.1 and a[:40, -12:].max() < 0.1   # background beside the head
    # crop rows below the frame take the mask of the rows they mirror, as the crop's pixels do
    for k in (4, 8, 16):
        np.testing.assert_allclose(a[bottom + k], a[bottom - k - 1], atol=0.15)
