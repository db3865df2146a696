import math

import pytest
import torch

from portraitrig.face.controls import apply_controls, measure_controls
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle
from portraitrig.retarget import hold_missing, neutral_frame, retarget


@pytest.fixture(scope="module")
def fm():
    return load_default_model()


def person(fm, n, seed):
    g = torch.Generator().manual_seed(seed)
    p = RigParams.neutral(fm, n)
    return p.replace(identity=torch.randn(1, fm.n_id, generator=g).expand(n, -1).clone(),
                     light=p.light + 0.1 * torch.randn(1, 9, 3, generator=g))


def yaw(deg, n=1):
    r = torch.tensor(math.radians(deg))
    return matrix_to_axis_angle(euler_to_matrix(r, torch.zeros(()), torch.zeros(())).reshape(1, 3, 3).expand(n, 3, 3))


def test_absolute_copies_motion_and_keeps_identity(fm):
    src, tgt = person(fm, 4, 0), person(fm, 1, 1)
    g = torch.Generator().manual_seed(2)
    src = src.replace(expression=torch.randn(4, fm.n_expr, generator=g), rotation=0.1 * torch.randn(4, 3, generator=g),
                      gaze=0.1 * torch.randn(4, 2, 2, generator=g))
    out = retarget(src, tgt, mode="absolute", model=fm)
    assert len(out) == 4
    torch.testing.assert_close(out.expression, src.expression)
    torch.testing.assert_close(out.rotation, src.rotation)
    torch.testing.assert_close(out.gaze, src.gaze)
    torch.testing.assert_close(out.identity, tgt.identity.expand(4, -1))
    torch.testing.assert_close(out.light, tgt.light.expand(4, -1, -1))
    torch.testing.assert_close(out.translation, tgt.translation.expand(4, -1))


def test_relative_adds_the_sources_changes(fm):
    g = torch.Generator().manual_seed(3)
    sref, tgt = person(fm, 1, 0), person(fm, 1, 1)
    sref = sref.replace(expression=0.5 * torch.randn(1, fm.n_expr, generator=g), rotation=yaw(5))
    tgt = tgt.replace(expression=0.5 * torch.randn(1, fm.n_expr, generator=g), rotation=yaw(-20),
                      scale=tgt.scale * 1.5, gaze=torch.full((1, 2, 2), 0.05))
    delta = 0.3 * torch.randn(3, fm.n_expr, generator=g)
    src = sref.repeat(3).replace(expression=sref.expression + delta,
                                 rotation=yaw(5 + 10, 3),
                                 translation=(sref.translation + torch.tensor([0.1, -0.05])).expand(3, -1),
                                 scale=sref.scale.expand(3, -1) * 1.2, gaze=torch.full((3, 2, 2), 0.2))
    out = retarget(src, tgt, sref, model=fm, keep_closures=False)
    torch.testing.assert_close(out.expression, tgt.expression + delta)
    ypr = out.euler_degrees()
    torch.testing.assert_close(ypr[:, 0], torch.full((3,), -10.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.scale, tgt.scale.expand(3, -1) * 1.2)
    # the NDC shift is carried over in proportion to the target's face size (1.5 x the source's)
    torch.testing.assert_close(out.translation, (tgt.translation + 1.5 * torch.tensor([0.1, -0.05])).expand(3, -1))
    torch.testing.assert_close(out.gaze, torch.full((3, 2, 2), 0.05 + 0.2))
    # head pose and gaze off: the target's are kept
    still = retarget(src, tgt, sref, head_pose=False, gaze=False, model=fm)
    torch.testing.assert_close(still.rotation, tgt.rotation.expand(3, -1))
    torch.testing.assert_close(still.translation, tgt.translation.expand(3, -1))
    torch.testing.assert_close(still.gaze, tgt.gaze.expand(3, -1, -1))


def test_relative_rotation_composes_in_camera_space(fm):
    sref, tgt = person(fm, 1, 0), person(fm, 1, 1)
    sref = sref.replace(rotation=torch.tensor([[0.1, 0.2, -0.1]]))
    tgt = tgt.replace(rotation=torch.tensor([[-0.2, 0.05, 0.1]]))
    d = torch.tensor([[0.0, 0.3, 0.1]])
    src = sref.replace(rotation=matrix_to_axis_angle(axis_angle_to_matrix(d) @ axis_angle_to_matrix(sref.rotation)))
    out = retarget(src, tgt, sref, model=fm)
    want = axis_angle_to_matrix(d) @ axis_angle_to_matrix(tgt.rotation)
    torch.testing.assert_close(axis_angle_to_matrix(out.rotation), want, atol=1e-5, rtol=0)


def test_blinks_and_mouth_closure_survive(fm):
    sref = apply_controls(person(fm, 1, 0), fm, jaw_open=0.5)           # source at rest: eyes open, mouth ajar
    tgt = apply_controls(person(fm, 1, 1), fm, eye_closed_left=0.4, eye_closed_right=0.4, jaw_open=0.9)
    amounts = torch.tensor([0.0, 0.5, 1.0])
    src = apply_controls(sref.repeat(3), fm, eye_closed_left=amounts, eye_closed_right=amounts,
                         jaw_open=-0.5 * amounts)                        # blinks while closing the mouth
    out = measure_controls(retarget(src, tgt, sref, model=fm), fm)
    ref = measure_controls(tgt, fm)
    for eye in ("eye_closed_left", "eye_closed_right"):
        torch.testing.assert_close(out[eye], ref[eye] + (1 - ref[eye]) * amounts, atol=1e-4, rtol=0)
        assert abs(float(out[eye][2]) - 1.0) < 1e-4                     # the full blink closes the target's eye
    assert abs(float(out["jaw_open"][2])) < 1e-4                        # the mouth closes fully
    assert abs(float(out["jaw_open"][0] - ref["jaw_open"][0])) < 1e-4   # at rest: the target's own
    # plain deltas would leave the eye short of closed and the mouth open
    plain = measure_controls(retarget(src, tgt, sref, model=fm, keep_closures=False), fm)
    assert float(plain["eye_closed_left"][2]) > 1.2 and float(plain["jaw_open"][2]) > 0.3


def test_neutral_frame_and_default_reference(fm):
    p = person(fm, 5, 0)
    p = apply_controls(p, fm, smile=torch.tensor([0.8, 0.5, 0.0, 0.7, 0.9]),
                       jaw_open=torch.tensor([0.5, 0.2, 0.0, 0.3, 0.6]))
    assert neutral_frame(p, fm) == 2
    tgt = person(fm, 1, 1)
    out = retarget(p, tgt, model=fm, keep_closures=False)
    torch.testing.assert_close(out.expression[2], tgt.expression[0], atol=1e-5, rtol=0)


def test_hold_missing():
    fm = load_default_model()
    p = RigParams.neutral(fm, 3)
    p = p.replace(scale=torch.tensor([[1.0], [2.0], [3.0]]))
    full, held = hold_missing(p, torch.tensor([False, True, False, True, True, False]))
    assert held == 3
    assert full.scale[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        hold_missing(p, torch.zeros(4, dtype=torch.bool))


def test_bad_mode(fm):
    p = person(fm, 2, 0)
    with pytest.raises(ValueError):
        retarget(p, p[0], mode="sideways")
