import io

import numpy as np
import pytest
from PIL import Image

from portraitrig.errors import NoFaceError
from portraitrig.eval.identity import (IdentityEncoder, equal_error_rate, identity_distance,
                                       identity_similarity, roc_auc, roc_curve, verify)

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def encoder():
    return IdentityEncoder()


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def hopper():
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _jpeg(a, quality=30):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _affine(a, angle_deg, scale):
    im = Image.fromarray(a)
    w, h = im.size
    im = im.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    return np.asarray(im.rotate(angle_deg, Image.BICUBIC, fillcolor=(128, 128, 128)))


def test_same_person_under_transforms(encoder, astronaut):
    ref = encoder.encode(astronaut)
    assert ref.source == "hog" and ref.vector.shape == (128,)
    copies = {
        "flip": np.ascontiguousarray(astronaut[:, ::-1]),
        "rotate_scale": _affine(astronaut, 7, 0.8),
        "brighter": np.clip(astronaut.astype(np.int16) * 1.25 + 15, 0, 255).astype(np.uint8),
        "jpeg": _jpeg(astronaut),
    }
    for name, img in copies.items():
        d = identity_distance(ref.vector, encoder.embed(img))
        assert d < 0.6, (name, d)


def test_different_person(encoder, astronaut, hopper):
    d = identity_distance(encoder.embed(astronaut), encoder.embed(hopper))
    assert d > 0.6
    assert identity_similarity(encoder.embed(hopper), encoder.embed(hopper)) == pytest.approx(1.0)


def test_fallbacks_are_recorded(encoder, astronaut):
    blank = np.full((128, 128, 3), 127, np.uint8)
    with pytest.raises(NoFaceError):
        encoder.encode(blank)
    e = encoder.encode(blank, box=(20, 20, 100, 100))
    assert e.source == "box" and e.vector.shape == (128,)
    # a given box picks the overlapping face and is not used when HOG finds one
    hog = encoder.encode(astronaut, box=(170, 70, 270, 170))
    assert hog.source == "hog" and abs(hog.box[0] - 175) < 10
    second = encoder.encode(astronaut, box=(120, 330, 220, 430))  # HOG's weaker second face
    assert second.source == "hog" and abs(second.box[1] - 335) < 10
    far = encoder.encode(astronaut, box=(400, 400, 500, 500))  # overlaps no HOG face
    assert far.source == "box" and far.box == (400.0, 400.0, 500.0, 500.0)
    assert IdentityEncoder(fallback="aligned").encode(blank).source == "aligned"


def test_auc_separable_and_random():
    y = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert roc_auc(np.r_[np.linspace(1, 2, 50), np.linspace(0, 0.9, 50)], y) == 1.0
    assert roc_auc(np.r_[np.linspace(0, 0.9, 50), np.linspace(1, 2, 50)], y) == 0.0
    rng = np.random.default_rng(0)
    assert abs(roc_auc(rng.normal(size=4000), rng.random(4000) < 0.5) - 0.5) < 0.03
    assert roc_auc(np.zeros(10), y[::10]) == 0.5  # all ties


def test_auc_equals_trapezoid_area():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + y, 1)  # with ties
    fpr, tpr, _ = roc_curve(s, y)
    assert roc_auc(s, y) == pytest.approx(np.trapezoid(tpr, fpr))


def test_eer_and_verify():
    # distances: positives 0.1..0.5, negatives 0.7..1.1 -> perfect at 0.6
    d = np.r_[np.linspace(0.1, 0.5, 20), np.linspace(0.7, 1.1, 20)]
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    v = verify(d, y)
    assert v["auc"] == 1.0 and v["eer"] == 0.0 and v["accuracy_at_0.6"] == 1.0
    assert v["best_accuracy"] == 1.0 and 0.5 <= v["best_threshold"] < 0.7
    # symmetric overlap: EER 25%
    s = np.r_[np.arange(4), np.arange(4) - 2.0]
    eer, _ = equal_error_rate(s, np.r_[np.ones(4, bool), np.zeros(4, bool)])
    assert eer == pytest.approx(0.25)
    emb = np.random.default_rng(2).normal(size=(6, 2, 128))
    assert verify(emb, [True, False] * 3)["n_positive"] == 3
