"""portraitrig.capture: MediaPipe landmarks on a real portrait (scikit-image's astronaut),
FFHQ alignment and paste-back."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from portraitrig.capture.align import (LEFT_EYE_CONTOUR, MOUTH_CORNERS, RIGHT_EYE_CONTOUR, align_face,
                                       face_mask, ffhq_crop, paste_back, warp_affine)
from portraitrig.capture.detector import LandmarkDetector, MediaPipeFaceMesh, detect_largest
from portraitrig.capture.types import Landmarks
from portraitrig.errors import NoFaceError

# astronaut (512 x 512): the face lies inside this box (x0, y0, x1, y1), eyes near y = 100
FACE_BOX = (160, 50, 295, 200)


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def detector():
    d = MediaPipeFaceMesh()
    yield d
    d.close()


@pytest.fixture(scope="module")
def astro_lm(detector, astronaut):
    return detector.detect_largest(astronaut, "astronaut")


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _inside(points, box, margin=0.0) -> bool:
    x0, y0, x1, y1 = box
    p = np.asarray(points)
    return bool(((p[:, 0] >= x0 - margin) & (p[:, 0] <= x1 + margin)
                 & (p[:, 1] >= y0 - margin) & (p[:, 1] <= y1 + margin)).all())


# ------------------------------------------------------------------ detector
def test_astronaut_one_face(detector, astronaut, astro_lm):
    assert isinstance(detector, LandmarkDetector)
    faces = detector.detect(astronaut)
    assert len(faces) == 1 and faces[0].n_faces == 1
    lm = astro_lm
    assert lm.points.shape == (478, 3) and lm.points.dtype == np.float32
    assert lm.image_size == (512, 512)
    assert 0.5 < lm.score <= 1.0
    assert _inside(lm.points, FACE_BOX)
    x0, y0, x1, y1 = lm.box
    assert np.isclose(x0, lm.points[:, 0].min()) and np.isclose(y1, lm.points[:, 1].max())
    r_iris, l_iris = lm.points[468], lm.points[473]  # subject's right eye is on the image left
    assert 185 < r_iris[0] < 220 and 230 < l_iris[0] < 265
    assert 90 < r_iris[1] < 115 and 90 < l_iris[1] < 115
    mouth = lm.points[list(MOUTH_CORNERS)].mean(0)
    assert 125 < mouth[1] < 170 and r_iris[0] < mouth[0] < l_iris[0]
    assert np.abs(lm.points[:, 2]).max() < 0.5 * (x1 - x0)  # z in pixels, same scale as x


def test_crop_path_agrees_with_plain_face_mesh(astronaut, astro_lm):
    """Our detect-then-crop path maps points back to the same pixels Face Mesh gives on the
    whole image (checks the crop transform and the pixel convention)."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        res = fm.process(astronaut)
    ref = np.array([(q.x * 512, q.y * 512, q.z * 512) for q in res.multi_face_landmarks[0].landmark])
    err = np.linalg.norm(astro_lm.points[:, :2] - ref[:, :2], axis=1)
    assert np.median(err) < 2.0 and err.max() < 8.0
    assert np.corrcoef(astro_lm.points[:, 2], ref[:, 2])[0, 1] > 0.95


def test_points_scale_with_image(detector, astronaut, astro_lm):
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    lm2 = detector.detect_largest(big)
    assert lm2.image_size == (1024, 1024)
    err = np.linalg.norm(lm2.points[:, :2] / 2 - astro_lm.points[:, :2], axis=1)
    assert np.median(err) < 1.5


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face(detector, kind):
    img = np.zeros((240, 320, 3), np.uint8) if kind == "blank" else \
        np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert detector.detect(img) == []
    with pytest.raises(NoFaceError) as ei:
        detector.detect_largest(img, path="empty.png")
    assert str(ei.value).startswith("empty.png: no face found")
    with pytest.raises(NoFaceError):
        detect_largest(img, "x.png", detector=detector)


def test_two_faces_largest_first(detector, astronaut):
    canvas = np.full((600, 1000, 3), 128, np.uint8)
    canvas[50:562, 0:512] = astronaut
    canvas[100:400, 600:900] = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    faces = detector.detect(canvas)
    assert len(faces) == 2 and all(f.n_faces == 2 for f in faces)
    big, small = faces
    area = lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])  # noqa: E731
    assert area(big) > 2 * area(small)
    assert _inside(big.points, (FACE_BOX[0], FACE_BOX[1] + 50, FACE_BOX[2], FACE_BOX[3] + 50))
    s = 300 / 512
    small_box = (600 + FACE_BOX[0] * s, 100 + FACE_BOX[1] * s, 600 + FACE_BOX[2] * s, 100 + FACE_BOX[3] * s)
    assert _inside(small.points, small_box, margin=3)
    assert detect_largest(canvas, detector=detector).box == big.box


def test_small_face_in_large_canvas(detector, astronaut):
    canvas = np.full((1200, 1600, 3), 128, np.uint8)
    canvas[500:620, 700:820] = cv2.resize(astronaut, (120, 120), interpolation=cv2.INTER_AREA)
    lm = detector.detect_largest(canvas)
    s = 120 / 512
    box = (700 + FACE_BOX[0] * s, 500 + FACE_BOX[1] * s, 700 + FACE_BOX[2] * s, 500 + FACE_BOX[3] * s)
    assert _inside(lm.points, box, margin=2)
    assert lm.points[468, 0] < lm.points[473, 0]


def test_video_mode_tracks(astronaut):
    with MediaPipeFaceMesh(video=True) as d:
        prev = None
        for dx in range(0, 12, 4):  # the face moves right by 4 px per frame
            frame = np.ascontiguousarray(np.roll(astronaut, dx, axis=1))
            (lm,) = d.detect(frame)
            assert lm.score > 0.5 and _inside(lm.points, (FACE_BOX[0] + dx, *FACE_BOX[1:3], FACE_BOX[3]), 12)
            if prev is not None:
                shift = np.median(lm.points[:, 0] - prev.points[:, 0])
                assert 2 < shift < 6
            prev = lm


def _count_runs(detector, monkeypatch) -> list[tuple[int, int]]:
    """Record the (height, width) of every image the face-detection graphs see."""
    seen = []
    real = detector._boxes

    def spy(graph, image):
        seen.append(image.shape[:2])
        return real(graph, image)

    monkeypatch.setattr(detector, "_boxes", spy)
    return seen


def test_tile_search_is_bounded(monkeypatch):
    img = cv2.resize(np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8), (1600, 1200),
                     interpolation=cv2.INTER_LINEAR)
    with MediaPipeFaceMesh(max_tiles=20) as d:
        seen = _count_runs(d, monkeypatch)
        assert d.detect(img) == []
    # whole image twice (short + full range), then the 15 tiles of 600 px; the 77 of 300 px
    # would pass the budget, so the search stops
    assert len(seen) == 2 + 15 and seen[2:] == [(600, 600)] * 15
    with MediaPipeFaceMesh(max_tiles=0) as d:
        seen = _count_runs(d, monkeypatch)
        assert d.detect(img) == [] and len(seen) == 2


def test_huge_images_are_searched_downscaled(astronaut, monkeypatch):
    canvas = np.full((2400, 3200, 3), 128, np.uint8)
    canvas[1500:1900, 2200:2600] = cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA)
    with MediaPipeFaceMesh(work_pixels=1200 * 900) as d:
        seen = _count_runs(d, monkeypatch)
        lm = d.detect_largest(canvas)
    assert all(h * w <= 1200 * 900 for h, w in seen)  # the search never saw the full image
    s = 400 / 512  # landmarks come back in the full image's pixels
    box = (2200 + FACE_BOX[0] * s, 1500 + FACE_BOX[1] * s, 2200 + FACE_BOX[2] * s, 1500 + FACE_BOX[3] * s)
    assert lm.image_size == (3200, 2400) and _inside(lm.points, box, margin=3)
    assert lm.points[468, 0] < lm.points[473, 0]


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        MediaPipeFaceMesh(work_pixels=0)
    with pytest.raises(ValueError):
        MediaPipeFaceMesh(max_tiles=-1)


def test_rejects_bad_arrays(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10, 3), np.float32))


# ------------------------------------------------------------------ alignment
def _synthetic_landmarks(eye_l, eye_r, mouth_l, mouth_r, image_size=(400, 300)) -> Landmarks:
    pts = np.zeros((478, 3), np.float32)
    pts[:, :2] = (np.asarray(eye_l) + np.asarray(mouth_r)) / 2
    pts[list(RIGHT_EYE_CONTOUR), :2] = eye_l
    pts[list(LEFT_EYE_CONTOUR), :2] = eye_r
    pts[MOUTH_CORNERS[0], :2] = mouth_l
    pts[MOUTH_CORNERS[1], :2] = mouth_r
    pts[:, 2] = np.linspace(-5, 5, 478)
    return Landmarks(pts, 1.0, (0, 0, 1, 1), image_size)


@pytest.mark.parametrize("angle", [0.0, 25.0, -60.0])
def test_ffhq_crop_geometry(angle):
    """Frontal proportions: eye distance 50, eyes-to-mouth 60 -> side = max(100, 108) * 2."""
    c = np.array([200.0, 150.0])
    t = np.radians(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = [c + rot @ v for v in ([-25, 0], [25, 0], [-20, 60], [20, 60])]
    lm = _synthetic_landmarks(*pts)
    crop = ffhq_crop(lm, 256)
    e = crop.to_crop(np.stack(pts))
    assert e[0, 1] == pytest.approx(e[1, 1], abs=1e-4)  # eye line horizontal
    assert e[1, 0] - e[0, 0] == pytest.approx(50 * 256 / 216, rel=1e-5)  # side = 2 * 1.8 * 60
    assert crop.scale == pytest.approx(256 / 216, rel=1e-5)
    centre = crop.to_crop(c + rot @ np.array([0.0, 6.0]))  # eye midpoint + 0.1 * eye-to-mouth
    np.testing.assert_allclose(centre, [128, 128], atol=1e-3)
    np.testing.assert_allclose(crop.to_image(crop.to_crop(np.stack(pts))), np.stack(pts), atol=1e-6)


def test_align_landmarks_and_valid_mask(astronaut, astro_lm):
    al = align_face(astronaut, astro_lm, 256)
    assert al.image.shape == (256, 256, 3) and al.image.dtype == np.uint8
    assert al.valid.shape == (256, 256) and al.valid.all()
    np.testing.assert_allclose(al.landmarks.points[:, :2], al.crop.to_crop(astro_lm.points[:, :2]), atol=1e-3)
    np.testing.assert_allclose(al.landmarks.points[:, 2], astro_lm.points[:, 2] * al.crop.scale, rtol=1e-5)
    assert al.landmarks.image_size == (256, 256)
    # the crop pixels are the image resampled: compare a landmark's colour patch both ways
    eyes = al.landmarks.points[[468, 473], :2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 4
    back = paste_back(astronaut, al.image, al.crop)
    assert _psnr(back, astronaut) > 35


@pytest.mark.parametrize("size", [256, 512, 1024, 100])
def test_align_sizes(astronaut, astro_lm, size):
    al = align_face(astronaut, astro_lm, size)
    assert al.image.shape == (size, size, 3) and al.crop.size == size
    ref = cv2.resize(align_face(astronaut, astro_lm, 256).image, (size, size), interpolation=cv2.INTER_AREA)
    assert _psnr(al.image, ref) > 24


def test_align_bad_size(astronaut, astro_lm):
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError):
            align_face(astronaut, astro_lm, bad)


def test_face_near_border_padding(astronaut, astro_lm):
    img = np.ascontiguousarray(astronaut[70:, 150:])  # face touches the top-left corner
    lm = astro_lm.transformed(np.array([[1.0, 0, -150], [0, 1.0, -70]]), (img.shape[1], img.shape[0]))
    al = align_face(img, lm, 256)
    assert 0.3 < al.valid.mean() < 0.95
    assert not al.valid[0, 0] and al.valid[200, 200]
    inv = al.crop.to_image(np.array([[0.5, 0.5], [200.5, 200.5]]))
    assert (inv[0] < 0).any() and (inv[1] >= 0).all()
    # padding is filled (reflected + blurred), not black
    assert al.image[~al.valid].mean() > 60


@pytest.mark.parametrize("border", [cv2.BORDER_CONSTANT, cv2.BORDER_REFLECT_101, cv2.BORDER_REPLICATE])
def test_warp_affine_matches_opencv_on_whole_image(astronaut, border):
    """Processing only the needed region (and the half-pixel shift) changes nothing: same
    result as cv2.warpAffine on the whole image with the centre-convention matrix."""
    t = np.radians(20)
    s = 0.8
    a = np.array([[s * np.cos(t), -s * np.sin(t), -60.0], [s * np.sin(t), s * np.cos(t), -150.0]])
    out = warp_affine(astronaut, a, (200, 150), border=border, interp=cv2.INTER_LINEAR)
    m = a.copy()
    m[:, 2] += a[:, :2] @ [0.5, 0.5] - 0.5
    ref = cv2.warpAffine(astronaut, m, (200, 150), flags=cv2.INTER_LINEAR, borderMode=border)
    np.testing.assert_array_equal(out, ref)
    # continuous convention: the centre of image pixel (row 100, col 300) lands at a(300.5, 100.5)
    marker = np.zeros((512, 512, 3), np.uint8)
    marker[100, 300] = 255
    q = a[:, :2] @ [300.5, 100.5] + a[:, 2]
    hot = warp_affine(marker, a, (200, 150), interp=cv2.INTER_LINEAR)[..., 0].astype(float)
    ys, xs = np.nonzero(hot)
    w = hot[ys, xs]
    np.testing.assert_allclose([np.sum(w * (xs + 0.5)) / w.sum(), np.sum(w * (ys + 0.5)) / w.sum()], q, atol=0.3)


def test_downscale_is_antialiased():
    yy, xx = np.mgrid[0:800, 0:800]
    checker = (((xx + yy) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    s = 0.1
    out = warp_affine(img, np.array([[s, 0, 0], [0, s, 0]]), (80, 80))
    assert abs(float(out[2:-2, 2:-2].mean()) - 127.5) < 4 and out[2:-2, 2:-2].std() < 4
    naive = cv2.warpAffine(img, np.array([[s, 0, 0], [0, s, 0]]), (80, 80), flags=cv2.INTER_LINEAR)
    assert abs(float(naive.mean()) - 127.5) > 100  # what we avoid: every sample on one colour


# ------------------------------------------------------------------ paste back
def test_paste_back_round_trip_exact_outside(astronaut, astro_lm):
    al = align_face(astronaut, astro_lm, 512)  # enlarging crop: the round trip is near lossless
    out = paste_back(astronaut, al.image, al.crop)
    fm = face_mask(512)
    m = warp_affine(fm, al.crop.inverse, (512, 512), interp=cv2.INTER_LINEAR)
    touched = m > 0
    np.testing.assert_array_equal(out[~touched], astronaut[~touched])
    core = m > 0.999
    assert core.sum() > 5000 and _psnr(out[core], astronaut[core]) > 38


def test_paste_back_replaces_face_softly(astronaut, astro_lm):
    al = align_face(astronaut, astro_lm, 256)
    white = np.full_like(al.image, 255)
    out = paste_back(astronaut, white, al.crop)
    nose = astro_lm.points[1, :2].astype(int)
    assert (out[nose[1], nose[0]] == 255).all()
    assert (out[5, 5] == astronaut[5, 5]).all()
    m = (out.astype(int) - astronaut).any(-1)
    x0, y0, x1, y1 = FACE_BOX
    assert m[y0:y1, x0:x1].mean() > 0.5 and m.mean() < 0.2
    # soft edge: some pixels strictly between the original and white
    frac = (out.astype(float) - astronaut) / np.maximum(255.0 - astronaut, 1)
    assert ((frac > 0.1) & (frac < 0.9)).any(-1).sum() > 200


def test_paste_back_custom_mask_and_float(astronaut, astro_lm):
    al = align_face(astronaut, astro_lm, 256)
    mask = np.zeros((256, 256), bool)
    mask[64:192, 64:192] = True
    out = paste_back(astronaut, np.zeros((256, 256, 3), np.float32), al.crop, mask=mask, feather=0.0)
    centre = al.crop.to_image(np.array([128.0, 128.0])).astype(int)
    assert (out[centre[1], centre[0]] == 0).all()
    corner = al.crop.to_image(np.array([10.0, 10.0])).astype(int)
    assert (out[corner[1], corner[0]] == astronaut[corner[1], corner[0]]).all()
    with pytest.raises(ValueError):
        paste_back(astronaut, np.zeros((10, 10, 3), np.uint8), al.crop)
