import math

import numpy as np
import pytest
import torch

from portraitrig import edits
from portraitrig.errors import InputError
from portraitrig.face.base import posed_vertices
from portraitrig.face.params import RigParams
from portraitrig.light import sh
from synth_face import SynthFace


@pytest.fixture(scope="module")
def model():
    return SynthFace()


def _snapshot(p):
    return {k: v.clone() for k, v in p.tensors().items()}


def _unchanged(p, snap):
    return all(torch.equal(v, snap[k]) for k, v in p.tensors().items())


def test_relight_specs(model, tmp_path):
    p = RigParams.neutral(model, 2)
    snap = _snapshot(p)
    q = edits.relight(p, "left")
    assert _unchanged(p, snap) and q is not p
    assert torch.allclose(q.light, sh.preset("left").expand(2, 9, 3))
    assert torch.equal(q.albedo, p.albedo)
    assert torch.allclose(edits.relight(p, (30, 10)).light[1], sh.light_from_direction((30, 10)))
    assert torch.allclose(edits.relight(p, [0.0, 0.0, -1.0]).light[0], sh.light_from_direction((0, 0)), atol=1e-6)
    assert torch.allclose(edits.relight(p, dict(direction=(90, 0), colour=(1, 0, 0))).light[0],
                          sh.light_from_direction((90, 0), (1, 0, 0)))
    other = edits.relight(RigParams.neutral(model, 1), "top")
    assert torch.allclose(edits.relight(p, other).light, sh.preset("top").expand(2, 9, 3))
    per_item = torch.stack([sh.preset("left"), sh.preset("right")])
    assert torch.equal(edits.relight(p, per_item).light, per_item)
    from PIL import Image

    Image.fromarray(np.full((8, 16, 3), 200, np.uint8)).save(tmp_path / "env.png")
    env = edits.relight(p, tmp_path / "env.png").light
    assert torch.allclose(env[:, 0], torch.ones(2, 3), atol=1e-5)  # normalised constant map = ambient
    with pytest.raises(InputError):
        edits.relight(p, "no_such_preset")
    with pytest.raises(ValueError):
        edits.relight(p, torch.zeros(3, 9, 3))


def test_relight_keep_exposure_keeps_brightness_and_takes_direction():
    """Relative relighting: the face keeps the photo's mean brightness and colour balance
    (measured on rendered shading of the real face model), the light's direction is the new one."""
    from portraitrig.face.model import load_default_model
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    photo = sh.light_from_direction((20, 10), colour=(1.4, 1.1, 0.8), intensity=1.5, ambient=0.6)
    p = RigParams.neutral(fm, 1).replace(light=photo[None].clone())
    snap = _snapshot(p)
    rel = edits.relight(p, "left", keep_exposure=True)
    ab = edits.relight(p, "left")
    assert _unchanged(p, snap)
    assert torch.allclose(sh.mean_front_shading(rel.light), sh.mean_front_shading(p.light), rtol=1e-5)
    # the band-1 (direction) part points where the preset's does, in every channel
    d_rel, d_pre = rel.light[0, 1:4], sh.preset("left")[1:4]
    assert torch.allclose(torch.nn.functional.cosine_similarity(d_rel, d_pre, dim=0), torch.ones(3), atol=1e-5)

    def face_mean(q):
        b = render_buffers(q, fm, size=96, names=("shading", "mask"))
        m = b["mask"][0, 0] > 0.5
        return b["shading"][0][:, m].mean(1)

    m0, m_rel, m_abs = face_mean(p), face_mean(rel), face_mean(ab)
    assert torch.all((m_rel / m0 - 1).abs() < 0.15), (m0, m_rel)     # brightness and colour kept
    assert torch.any((m_abs / m0 - 1).abs() > 0.3), (m0, m_abs)      # the absolute preset is far off
    half = edits.relight(p, "left", keep_exposure=True, strength=0.5)
    assert torch.allclose(half.light, (p.light + rel.light) / 2, atol=1e-6)
    assert torch.equal(edits.relight(p, "left", strength=0.0).light, p.light)
    # a light from behind leaves the front unlit (mean shading < 0 here): the gain stops at 20x
    # and ambient makes up the exposure
    behind = sh.light_from_direction((180, 0), ambient=0.0)
    assert torch.all(sh.mean_front_shading(behind) < 0)
    back = edits.relight(p, behind, keep_exposure=True).light[0]
    assert torch.allclose(sh.mean_front_shading(back), sh.mean_front_shading(p.light[0]), rtol=1e-5)
    assert torch.allclose(back[1:], 20 * behind[1:], atol=1e-5)
    # a coloured light keeps its colour at the photo's luminance; a white one takes the photo's
    warm = edits.relight(p, "warm", keep_exposure=True).light[0]
    m_w, m_p, m_preset = (sh.mean_front_shading(x) for x in (warm, p.light[0], sh.preset("warm")))
    assert torch.allclose(m_w / m_w[0], m_preset / m_preset[0], atol=1e-5)
    lum = torch.tensor([0.2126, 0.7152, 0.0722])
    assert torch.allclose(m_w @ lum, m_p @ lum, rtol=1e-5)
    assert not torch.allclose(m_w, m_p, rtol=0.02)


def test_set_expression(model):
    p = RigParams.neutral(model, 2)
    snap = _snapshot(p)
    q = edits.set_expression(p, torch.tensor([0.5, -1.0]))
    assert _unchanged(p, snap)
    assert torch.equal(q.expression, torch.tensor([[0.5, -1.0], [0.5, -1.0]]))
    src = RigParams.neutral(model, 1)
    src.expression = torch.tensor([[1.0, 2.0]])
    assert torch.equal(edits.set_expression(p, from_params=src).expression, torch.tensor([[1.0, 2.0]] * 2))
    r = edits.set_expression(q, model=model, smile=0.5)  # SynthFace control 'smile' = basis 0
    assert torch.allclose(r.expression, torch.tensor([[1.0, -1.0]] * 2))
    with pytest.raises(ValueError):
        edits.set_expression(p, torch.zeros(3))
    # the mesh follows
    assert not torch.allclose(posed_vertices(model, q), posed_vertices(model, p))


def test_rotate_head_composes_in_head_space_and_keeps_centre(model):
    p = RigParams.neutral(model, 1)
    p.rotation = torch.tensor([[0.0, 0.0, 0.3]])  # rolled head
    snap = _snapshot(p)
    q = edits.rotate_head(p, yaw=20, model=model)
    assert _unchanged(p, snap)
    expect = p.rotation_matrix() @ __import__("portraitrig.face.params", fromlist=["x"]).euler_to_matrix(
        torch.tensor(math.radians(20)), torch.tensor(0.0), torch.tensor(0.0))
    assert torch.allclose(q.rotation_matrix(), expect, atol=1e-5)
    # the head centre (centroid of the canonical mesh) projects to the same place
    X = model.canonical(p.identity, p.expression, p.gaze)
    c = X.mean(1)

    def proj(pp):
        return (pp.scale * (pp.rotation_matrix() @ c[..., None])[..., 0])[:, :2] + pp.translation

    assert torch.allclose(proj(q), proj(p), atol=1e-5)
    # yaw +20 (right-hand rule about the head's own y axis) turns the frontal apex towards the
    # head's -x (image left for an upright head)
    v0, v1 = posed_vertices(model, p)[0, 0], posed_vertices(model, q)[0, 0]
    d = (v1 - v0)[:2]
    x_axis = p.rotation_matrix()[0, :2, 0]  # head x axis in the image
    assert float(d @ x_axis) < -0.05
    # explicit centre: the origin stays put
    r = edits.rotate_head(p, pitch=-15, roll=5, centre=(0, 0, 0))
    assert torch.equal(r.translation, p.translation)


def test_move_in_image_moves_every_projected_point_by_the_map(model):
    p = RigParams.neutral(model, 2)
    p.rotation = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.25, -0.1]])
    p.expression = p.expression + 0.3
    snap = _snapshot(p)
    th, k = math.radians(-11.0), 1.07
    M = k * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    d = torch.tensor([[0.05, -0.02], [-0.1, 0.08]])
    q = edits.move_in_image(p, M, d)
    assert _unchanged(p, snap)
    before, after = posed_vertices(model, p), posed_vertices(model, q)
    torch.testing.assert_close(after[..., :2], before[..., :2] @ M.T + d[:, None], atol=2e-5, rtol=0)
    torch.testing.assert_close(after[..., 2], k * before[..., 2], atol=2e-5, rtol=0)   # depth scales with the head
    torch.testing.assert_close(q.expression, p.expression)
    # one map per item
    M2 = torch.stack([M, torch.eye(2)])
    r = edits.move_in_image(p, M2, torch.zeros(2))
    torch.testing.assert_close(posed_vertices(model, r)[1], before[1], atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="similarity"):
        edits.move_in_image(p, torch.zeros(2, 2), d)


def test_gaze(model):
    p = RigParams.neutral(model, 2)
    q = edits.set_gaze(p, 10, -5)
    assert torch.allclose(q.gaze, torch.deg2rad(torch.tensor([10.0, -5.0])).expand(2, 2, 2))
    assert torch.equal(p.gaze, torch.zeros(2, 2, 2))
    # looking at the camera with a head turned to image left (yaw +30): the eyes turn to the
    # head's right (gaze yaw +30)
    t = edits.rotate_head(p, yaw=30)
    g = edits.gaze_from_direction(t, (0, 0, -1)).gaze
    assert torch.allclose(g[..., 0], torch.full((2, 2), math.radians(30)), atol=1e-5)
    assert torch.allclose(g[..., 1], torch.zeros(2, 2), atol=1e-5)
    # a head-space direction to image right/down
    d = torch.tensor([math.sin(0.2) * math.cos(0.1), math.sin(0.1), -math.cos(0.2) * math.cos(0.1)])
    g = edits.gaze_from_direction(p, d, space="head").gaze
    assert torch.allclose(g[0, 0], torch.tensor([0.2, 0.1]), atol=1e-5)


def test_sweep(model):
    p = RigParams.neutral(model, 1)
    dirs = edits.light_sweep_directions(5)
    s = edits.sweep(p, lambda pp, d: edits.relight(pp, d), dirs)
    assert len(s) == 5 and dirs[0][0] == -90 and dirs[-1][0] == 90
    for k, d in enumerate(dirs):
        assert torch.allclose(s.light[k], sh.light_from_direction(d))
    yaw = edits.sweep(p, lambda pp, a: edits.rotate_head(pp, yaw=a), [-10, 0, 10])
    assert torch.allclose(yaw.euler_degrees()[:, 0], torch.tensor([-10.0, 0.0, 10.0]), atol=1e-4)
    with pytest.raises(ValueError):
        edits.sweep(p, edits.relight, [])
