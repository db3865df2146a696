"""The Gaussian avatar: projection and rasterization against analytic cases, the mesh binding,
the spatial prior, training on a synthetic rendered head, the avatar job on its model folder,
and (on a CUDA machine with gsplat) the fast rasterizer against the reference."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from portraitrig.apps.avatarjob import AvatarJobConfig, run_avatar
from portraitrig.errors import InputError
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.neural.frames import synthetic_frames
from portraitrig.methods.splat.config import PRESETS, SplatConfig
from portraitrig.methods.splat.gaussians import SplatModel, render, rig_inputs, triangle_frames
from portraitrig.methods.splat.method import SplatMethod
from portraitrig.methods.splat.raster import (ALPHA_MIN, BLUR, EXTENT, gsplat_available, project, quat_to_matrix,
                                              rasterize_gsplat, rasterize_reference)


def one_gaussian(sigma=0.05, size=64, opacity=0.8, color=(0.2, 0.5, 0.9), cam_scale=1.0, xyz=(0.0, 0.0, 0.0)):
    means = torch.tensor([[list(xyz)]])
    rot = torch.eye(3)[None, None]
    scales = torch.full((1, 1, 3), sigma)
    pr = project(means, rot, scales, torch.tensor([[cam_scale]]), torch.eye(3)[None], torch.zeros(1, 2), size)
    return pr, torch.tensor([[list(color)]]), torch.tensor([[opacity]])


def test_quaternions_give_rotations():
    q = torch.randn(10, 4)
    R = quat_to_matrix(q)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(10, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(10), atol=1e-5)
    assert torch.allclose(quat_to_matrix(torch.tensor([2.0, 0, 0, 0])), torch.eye(3))


def test_projection_of_an_isotropic_gaussian():
    pr, _, _ = one_gaussian(sigma=0.05, size=64, cam_scale=2.0, xyz=(0.25, -0.5, 0.3))
    # NDC (0.5, -1.0) -> pixels ((0.5 + 1) * 32, 0)
    assert torch.allclose(pr["means2d"][0, 0], torch.tensor([48.0, 0.0]))
    var = (2.0 * 0.05 * 32) ** 2 + BLUR
    assert torch.allclose(pr["conics"][0, 0], torch.tensor([1 / var, 0.0, 1 / var]), rtol=1e-5)
    assert pr["radii"][0, 0].tolist() == [math.ceil(EXTENT * math.sqrt(var))] * 2
    assert float(pr["depths"][0, 0]) == pytest.approx(0.6)


def test_projection_turns_an_elongated_gaussian_with_the_camera():
    means, scales = torch.zeros(1, 1, 3), torch.tensor([[[0.2, 0.01, 0.01]]])
    a = math.pi / 2  # camera rotation of 90 degrees about z: the long x axis becomes y
    Rz = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    pr = project(means, torch.eye(3)[None, None], scales, torch.ones(1, 1), Rz[None], torch.zeros(1, 2), 32)
    a_, b_, c_ = pr["conics"][0, 0].tolist()
    assert c_ < a_ / 20 and abs(b_) < 1e-4          # long along y: small y precision


def test_off_image_gaussians_are_culled():
    pr, col, op = one_gaussian(xyz=(5.0, 0.0, 0.0))
    assert pr["radii"].sum() == 0
    rgb, alpha = rasterize_reference(pr["means2d"], pr["conics"], col, op, pr["depths"], pr["radii"], 64)
    assert float(alpha.abs().max()) == 0.0 and float(rgb.abs().max()) == 0.0


def test_reference_rasterizer_matches_the_analytic_gaussian():
    size = 64
    pr, col, op = one_gaussian(sigma=0.05, size=size, opacity=0.8)
    rgb, alpha = rasterize_reference(pr["means2d"], pr["conics"], col, op, pr["depths"], pr["radii"], size)
    a = float(pr["conics"][0, 0, 0])
    for j in (32, 34, 37, 40):          # pixel centres j + 0.5 at distance d from the mean at 32
        d = j + 0.5 - 32.0
        expect = 0.8 * math.exp(-0.5 * a * (d * d + 0.25))
        expect = expect if expect >= ALPHA_MIN else 0.0
        assert float(alpha[0, 31, j, 0]) == pytest.approx(expect, rel=1e-4, abs=1e-7)
        assert torch.allclose(rgb[0, 31, j], torch.tensor([0.2, 0.5, 0.9]) * expect, atol=1e-6)
    assert float(alpha[0, 31, 63, 0]) == 0.0   # far away: below 1/255


def test_front_gaussian_occludes_whatever_the_input_order():
    size = 16
    means = torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]]])      # second is nearer (smaller z)
    scales = torch.full((1, 2, 3), 0.3)
    pr = project(means, torch.eye(3)[None, None].expand(1, 2, 3, 3), scales, torch.ones(1, 1), torch.eye(3)[None],
                 torch.zeros(1, 2), size)
    cols = torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]])
    ops = torch.tensor([[0.6, 0.7]])
    rgb, alpha = rasterize_reference(pr["means2d"], pr["conics"], cols, ops, pr["depths"], pr["radii"], size)
    g = [0.6 * math.exp(-0.5 * float(pr["conics"][0, 0, 0]) * 0.5), 0.7 * math.exp(-0.5 * float(pr["conics"][0, 1, 0]) * 0.5)]
    # pixel (7, 7): centre (7.5, 7.5), 0.5 px from the means at 8 in x and y
    assert float(rgb[0, 7, 7, 2]) == pytest.approx(g[1], rel=1e-4)
    assert float(rgb[0, 7, 7, 0]) == pytest.approx(g[0] * (1 - g[1]), rel=1e-4)
    assert float(alpha[0, 7, 7, 0]) == pytest.approx(1 - (1 - g[0]) * (1 - g[1]), rel=1e-4)
    flip = [1, 0]
    rgb2, _ = rasterize_reference(pr["means2d"][:, flip], pr["conics"][:, flip], cols[:, flip], ops[:, flip],
                                  pr["depths"][:, flip], pr["radii"][:, flip], size)
    assert torch.allclose(rgb, rgb2, atol=1e-6)


def test_a_pixel_stops_when_it_is_opaque():
    size, n = 8, 30
    means = torch.zeros(1, n, 3)
    means[0, :, 2] = torch.linspace(-1, 1, n)
    pr = project(means, torch.eye(3)[None, None].expand(1, n, 3, 3), torch.full((1, n, 3), 2.0), torch.ones(1, 1),
                 torch.eye(3)[None], torch.zeros(1, 2), size)
    cols = torch.rand(1, n, 3, generator=torch.Generator().manual_seed(0))
    rgb, alpha = rasterize_reference(pr["means2d"], pr["conics"], cols, torch.full((1, n), 0.95),
                                     pr["depths"], pr["radii"], size)
    # pixel (4, 4) is 0.5 px from every mean in x and y; T after k Gaussians is (1 - a)^k: 0.05^3 > 1e-4,
    # 0.05^4 < 1e-4, so exactly three are composited
    q = 0.5 * float(pr["conics"][0, 0, 0]) * 0.5
    a = 0.95 * math.exp(-q)
    assert float(alpha[0, 4, 4, 0]) == pytest.approx(1 - (1 - a) ** 3, abs=1e-6)
    expect = sum(cols[0, k] * a * (1 - a) ** k for k in range(3))
    assert torch.allclose(rgb[0, 4, 4], expect, atol=1e-5)
    assert not torch.allclose(rgb[0, 4, 4], expect + cols[0, 3] * a * (1 - a) ** 3, atol=1e-5)


def test_triangle_frames_are_orthonormal_and_sized():
    verts = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0]]])
    R, k = triangle_frames(verts, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(R[0, 0], torch.eye(3), atol=1e-6)
    assert float(k[0, 0]) == pytest.approx(1.0)  # area 1


@pytest.fixture(scope="module")
def model_and_rig():
    fm = load_default_model()
    cfg = SplatConfig(image_size=32, per_face=2, free=64, feature_dim=4, hidden=8, layers=1, cond_dim=fm.n_expr + 4)
    fr = synthetic_frames(3, 32)
    return fm, cfg, rig_inputs(fr.params, fm)


def test_mesh_gaussians_follow_the_mesh(model_and_rig):
    fm, cfg, rig = model_and_rig
    m = SplatModel(cfg, fm.faces)
    g = m.gaussians(rig["verts"], rig["cond"])
    n = m.n_mesh
    anchor = (rig["verts"][:, m.faces[m.face_index]] * m.bary[None, :, :, None]).sum(2)
    assert torch.allclose(g["means"][:, :n], anchor, atol=1e-6)     # zero offsets: on the triangles
    shift = torch.tensor([0.3, -0.2, 0.1])
    g2 = m.gaussians(rig["verts"] + shift, rig["cond"])
    assert torch.allclose(g2["means"][:, :n], g["means"][:, :n] + shift, atol=1e-5)
    assert torch.allclose(g2["means"][:, n:], g["means"][:, n:])  # free Gaussians stay
    # a rotated mesh turns its Gaussians
    a = 0.4
    Rz = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    g3 = m.gaussians(rig["verts"] @ Rz.T, rig["cond"])
    assert torch.allclose(g3["rot"][:, :n], Rz @ g["rot"][:, :n], atol=1e-4)
    assert torch.allclose(g3["scales"][:, :n], g["scales"][:, :n], atol=1e-5)


def _scramble(mlp):
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("use_prior", [True, False])
def test_spatial_prior_only_mesh_gaussians_see_the_expression(model_and_rig, use_prior):
    fm, cfg, rig = model_and_rig
    m = SplatModel(SplatConfig(**{**cfg.to_dict(), "use_prior": use_prior}), fm.faces)
    _scramble(m.expr_mlp)
    if not use_prior:
        _scramble(m.free_mlp)
    verts = rig["verts"][:1]
    a = m.gaussians(verts, torch.zeros_like(rig["cond"][:1]))
    b = m.gaussians(verts, torch.ones_like(rig["cond"][:1]))
    n = m.n_mesh
    assert not torch.allclose(a["means"][:, :n], b["means"][:, :n])
    assert not torch.allclose(a["colors"][:, :n], b["colors"][:, :n])
    free_same = torch.equal(a["means"][:, n:], b["means"][:, n:]) and torch.equal(a["colors"][:, n:], b["colors"][:, n:])
    assert free_same == use_prior


def test_mesh_offsets_are_bounded(model_and_rig):
    fm, cfg, rig = model_and_rig
    m = SplatModel(cfg, fm.faces)
    with torch.no_grad():
        m.mesh_offset.fill_(100.0)
    g = m.gaussians(rig["verts"], rig["cond"])
    assert float(g["mesh_offset"].detach().abs().max()) <= cfg.max_offset + 1e-5


def test_the_expression_mlp_can_see_the_condition_clamped_to_the_training_range(model_and_rig):
    """clamp_condition: the expression MLP sees each condition value clamped to the recorded
    range, so a condition beyond it gives the Gaussians of the clamped condition; the mesh (passed
    as vertices) still moves them. Off, or with no recorded range (older models), it sees all."""
    fm, cfg, rig = model_and_rig
    d = cfg.cond_dim
    low, high = tuple([-0.5] * d), tuple([0.5] * d)
    base = SplatModel(cfg, fm.faces)
    _scramble(base.expr_mlp)
    state = base.state_dict()

    def with_(**kw):
        m = SplatModel(SplatConfig(**{**cfg.to_dict(), **kw}), fm.faces)
        m.load_state_dict(state)  # the range is not part of the weights
        return m

    clamped = with_(clamp_condition=True, cond_low=low, cond_high=high)
    verts = rig["verts"][:1]
    far = torch.full((1, d), 3.0)
    far[0, 0] = -4.0
    edge = far.clamp(-0.5, 0.5)
    a, b = clamped.gaussians(verts, far), clamped.gaussians(verts, edge)
    assert torch.equal(a["colors"], b["colors"]) and torch.equal(a["means"], b["means"])
    inside = torch.full((1, d), 0.25)
    assert torch.equal(clamped.gaussians(verts, inside)["colors"], base.gaussians(verts, inside)["colors"])
    for m in (with_(clamp_condition=False, cond_low=low, cond_high=high), with_(clamp_condition=True)):
        assert not torch.allclose(m.gaussians(verts, far)["colors"], m.gaussians(verts, edge)["colors"])
    moved = clamped.gaussians(verts + torch.tensor([0.2, 0.0, 0.0]), far)
    assert torch.allclose(moved["means"][:, :clamped.n_mesh], a["means"][:, :clamped.n_mesh] + torch.tensor([0.2, 0, 0]),
                          atol=1e-5)


def test_the_condition_range_must_be_a_range():
    d = 3
    for bad in ({"cond_low": (0.0,) * d}, {"cond_low": (0.0,) * 2, "cond_high": (1.0,) * 2},
                {"cond_low": (1.0,) * d, "cond_high": (0.0,) * d},
                {"cond_low": (0.0,) * d, "cond_high": (float("inf"),) * d}):
        with pytest.raises(ValueError, match="cond_low"):
            SplatConfig(cond_dim=d, **bad).validate()
    SplatConfig(cond_dim=d, cond_low=(0.0,) * d, cond_high=(0.0,) * d).validate()


def test_the_training_frames_condition_range_is_recorded_and_saved(splat_model, tmp_path):
    """The method records the range of its training frames' condition (expression and gaze) in
    the model's config; the model folder keeps it."""
    from portraitrig.methods import load_renderer
    from portraitrig.methods.splat import tiny_data
    from portraitrig.neural.frames import Frames

    r = load_renderer(splat_model)
    fr = Frames.load(tiny_data(tmp_path))   # the frames the fixture trained on (deterministic)
    train_idx, _ = fr.split(PRESETS["tiny"]().holdout)
    p = fr.params[train_idx]
    cond = torch.cat([p.expression, p.gaze.flatten(1)], 1)
    assert len(r.config.cond_low) == r.config.cond_dim == cond.shape[1]
    assert torch.allclose(torch.tensor(r.config.cond_low), cond.amin(0), atol=1e-6)
    assert torch.allclose(torch.tensor(r.config.cond_high), cond.amax(0), atol=1e-6)
    assert float((cond.amax(0) - cond.amin(0)).max()) > 0
    assert r.config.clamp_condition is False   # off in the presets until measured


def test_initialisation_puts_free_gaussians_on_the_person_beside_the_face():
    import torch.nn.functional as F

    fr = synthetic_frames(6, 32)
    face = fr.masks.clone()
    fr.masks = (F.max_pool2d(fr.masks[:, None].float(), 9, 1, 4)[:, 0]).to(torch.uint8)  # a person around the face
    cfg = PRESETS["tiny"]()
    m = SplatMethod(cfg, fr, "cpu", say=None)
    px = m._pixels(m.model.free_xyz.detach(), {k: v[:1] for k, v in m.rig.items()})
    ij = px.round().long().clamp(0, 31)
    assert float((m.masks[0, 0][ij[:, 1], ij[:, 0]] > 127).float().mean()) > 0.95
    assert float((face[0][ij[:, 1], ij[:, 0]] > 127).float().mean()) < 0.1
    # colours start from the first frame: the first render is already close to it
    with torch.no_grad():
        out = render(m.model, {k: v[:1] for k, v in m.rig.items()}, 32, "torch")
    err = (out["image"][0] - m.images[0].float() / 255).abs().mean()
    assert float(err) < 0.08


def test_body_gaussians_keep_their_pixels_whatever_the_head_does(model_and_rig):
    fm, cfg, rig = model_and_rig
    m = SplatModel(SplatConfig(**{**cfg.to_dict(), "body": 5}), fm.faces)
    with torch.no_grad():
        m.body_xyz.copy_(torch.tensor([[0.1, 0.5, 0.3], [-0.6, 0.8, 0.4], [0.0, 0.9, 0.2], [0.7, 0.7, 0.5],
                                       [-0.2, 0.6, 0.35]]))
        m.body_quat.copy_(torch.randn(5, 4))
        m.body_log_scale.copy_(torch.log(torch.rand(5, 3) * 0.03 + 0.005))
    with pytest.raises(ValueError, match="camera"):
        m.gaussians(rig["verts"], rig["cond"])
    a = 0.5                                                    # two very different cameras
    Ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1.0, 0], [-math.sin(a), 0, math.cos(a)]])
    cams = [(torch.tensor([[0.5]]), torch.eye(3)[None], torch.tensor([[0.0, 0.1]])),
            (torch.tensor([[0.8]]), (Ry @ quat_to_matrix(torch.tensor([0.9, 0.2, 0.1, 0.0])))[None],
             torch.tensor([[-0.3, 0.2]]))]
    shots = []
    for sc, R, t in cams:
        g = m.gaussians(rig["verts"][:1], rig["cond"][:1], sc, R, t)
        assert g["means"].shape[1] == m.n_mesh + m.n_free + 5
        pr = project(g["means"][:, -5:], g["rot"][:, -5:], g["scales"][:, -5:], sc, R, t, 64)
        shots.append(pr)
    for k in ("means2d", "conics", "depths"):
        torch.testing.assert_close(shots[0][k], shots[1][k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(shots[0]["means2d"][0, 0], (torch.tensor([0.1, 0.5]) + 1) * 32)   # NDC -> px
    torch.testing.assert_close(shots[0]["depths"][0], m.body_xyz[:, 2].detach())
    # the head's Gaussians do move with the camera
    g0 = m.gaussians(rig["verts"][:1], rig["cond"][:1], *cams[0])
    p0 = project(g0["means"][:, :m.n_mesh], g0["rot"][:, :m.n_mesh], g0["scales"][:, :m.n_mesh], *cams[0], 64)
    p1 = project(g0["means"][:, :m.n_mesh], g0["rot"][:, :m.n_mesh], g0["scales"][:, :m.n_mesh], *cams[1], 64)
    assert (p0["means2d"] - p1["means2d"]).abs().max() > 5


def test_body_gaussians_start_below_the_face_and_train():
    import torch.nn.functional as F

    fr = synthetic_frames(6, 32)
    fr.masks = (F.max_pool2d(fr.masks[:, None].float(), 9, 1, 4)[:, 0]).to(torch.uint8)
    cfg = PRESETS["tiny"]()
    cfg.model.body = 64
    m = SplatMethod(cfg, fr, "cpu", say=None)
    rig0 = {k: v[:1] for k, v in m.rig.items()}
    with torch.no_grad():
        g = m.model.gaussians(rig0["verts"], rig0["cond"], rig0["scale"], rig0["rot"], rig0["trans"])
        px = project(g["means"][:, -64:], g["rot"][:, -64:], g["scales"][:, -64:], rig0["scale"], rig0["rot"],
                     rig0["trans"], 32)["means2d"][0]
    face = __import__("portraitrig.render.buffers", fromlist=["x"]).render_buffers(
        m.train_frames.params[0:1], m.face_model, 32, names=("mask",))["mask"][0, 0] > 0.5
    chin = float(face.any(1).nonzero().max() + 1)
    assert float(px[:, 1].min()) >= chin - 0.03 * 32 - 1e-3                     # from the chin down
    mesh_depth = g["means"][0, :m.model.n_mesh] @ rig0["rot"][0].T * rig0["scale"][0]
    assert float(m.model.body_xyz.detach()[:, 2].min()) >= float(mesh_depth[:, 2].max()) - 1e-5   # behind the face
    free = m._pixels(m.model.free_xyz.detach(), rig0)
    assert float(free[:, 1].max()) < chin + 1e-3                                # the head's: above it
    names = {n for g in m.parameter_groups() for n, p in m.model.named_parameters() if any(p is q for q in g["params"])}
    assert {"body_xyz", "body_color"} <= names
    opt = torch.optim.Adam([{"params": g["params"], "lr": 2e-3 * g["lr_scale"]} for g in m.parameter_groups()])
    before = m.model.body_color.detach().clone()
    loss, _ = m.loss(m.model, torch.tensor([0, 1]), 0, torch.Generator().manual_seed(0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, m.model.body_color.detach())                 # they learn


def test_training_reduces_the_loss():
    fr = synthetic_frames(6, 32)
    m = SplatMethod(PRESETS["tiny"](), fr, "cpu", say=None)
    opt = torch.optim.Adam([{"params": g["params"], "lr": 2e-3 * g["lr_scale"]} for g in m.parameter_groups()])
    gen = torch.Generator().manual_seed(0)
    first = last = None
    for i in range(30):
        loss, parts = m.loss(m.model, torch.tensor([i % 4, (i + 1) % 4]), i, gen)
        if i < 2:
            first = float(parts["l1"]) if first is None else (first + float(parts["l1"])) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = float(parts["l1"])
    assert last < 0.8 * first


def test_random_backgrounds_lay_the_frame_over_a_colour_by_its_mask():
    """background_augment: a picked item's target is the frame inside the person mask and one
    solid colour outside it, and its render's background is that colour; with the share at 1 the
    learned background gets no gradient, at 0 the targets are the frames."""
    fr = synthetic_frames(4, 32)
    cfg = PRESETS["tiny"]()
    cfg.background_augment = 1.0
    m = SplatMethod(cfg, fr, "cpu", say=None)
    idx = torch.tensor([0, 1, 2])
    target = m.images[idx].float() / 255
    mask = m.masks[idx].float() / 255
    assert 0.05 < float(mask.mean()) < 0.95
    got, bg = m.random_backgrounds(m.model, target, mask, torch.Generator().manual_seed(0))
    for b in range(3):
        colour = bg[b, :, 0, 0]
        assert torch.allclose(bg[b], colour[:, None, None].expand_as(bg[b]))          # one solid colour
        want = target[b] * mask[b] + colour[:, None, None] * (1 - mask[b])
        assert torch.allclose(got[b], want)
    assert not torch.allclose(bg[0, :, 0, 0], bg[1, :, 0, 0])                         # a colour per item
    loss, _ = m.loss(m.model, idx, 0, torch.Generator().manual_seed(0))
    loss.backward()
    assert m.model.background_image.grad is None or float(m.model.background_image.grad.abs().max()) == 0
    m.config.background_augment = 0.0
    m.model.zero_grad()
    loss, _ = m.loss(m.model, idx, 0, torch.Generator().manual_seed(0))
    loss.backward()
    assert float(m.model.background_image.grad.abs().max()) > 0                        # learned again
    half = SplatMethod(PRESETS["tiny"](), fr, "cpu", say=None)
    half.config.background_augment = 0.5
    got, bg = half.random_backgrounds(half.model, target.repeat(8, 1, 1, 1), mask.repeat(8, 1, 1, 1),
                                      torch.Generator().manual_seed(1))
    learned = half.model.background(32)[None]
    kept = [b for b in range(24) if torch.allclose(bg[b], learned[0])]
    assert 0 < len(kept) < 24                                                          # some of each
    assert all(torch.equal(got[b], target.repeat(8, 1, 1, 1)[b]) for b in kept)


def test_training_with_background_augment_resumes_exactly(tmp_path):
    from portraitrig.apps.trainjob import method_config, run_train
    from portraitrig.methods import splat
    from portraitrig.training import checkpoint as ck

    data = splat.tiny_data(tmp_path)
    cfg = method_config("splat", "tiny")
    cfg.background_augment = 0.5
    run_train("splat", data, tmp_path / "a", cfg, device="cpu", progress=False)
    run_train("splat", data, tmp_path / "b", cfg, device="cpu", progress=False, stop_after=1)
    run_train("splat", data, tmp_path / "b", cfg, device="cpu", progress=False)
    last = ck.checkpoint_path(tmp_path / "a", cfg.train.steps).name
    ta, _ = ck.load_checkpoint(tmp_path / "a" / last)
    tb, _ = ck.load_checkpoint(tmp_path / "b" / last)
    keys = [k for k in ta if k.startswith(("model.", "optim."))]
    assert keys and all(torch.equal(ta[k], tb[k]) for k in keys)


def test_background_augment_must_be_a_share():
    cfg = PRESETS["tiny"]()
    cfg.background_augment = 1.5
    with pytest.raises(ValueError, match="background_augment"):
        cfg.validate()


@pytest.fixture(scope="module")
def splat_model(tmp_path_factory):
    from portraitrig.apps.trainjob import method_config, run_train
    from portraitrig.methods import splat

    tmp = tmp_path_factory.mktemp("splat")
    data = splat.tiny_data(tmp)
    return run_train("splat", data, tmp / "run", method_config("splat", "tiny"), device="cpu", progress=False)


def test_a_model_with_body_gaussians_saves_loads_and_turns(tmp_path):
    from portraitrig.apps.trainjob import method_config, run_train
    from portraitrig.methods import load_renderer, splat

    cfg = method_config("splat", "tiny")
    cfg.model.body = 32
    folder = run_train("splat", splat.tiny_data(tmp_path), tmp_path / "run", cfg, device="cpu", progress=False)
    r = load_renderer(folder)
    assert r.model.n_body == 32
    with torch.no_grad():
        imgs, _ = r.render_views(r.reference, [(0.0, 0.0), (25.0, 0.0)], size=32)
    assert imgs.shape[0] == 2 and torch.isfinite(imgs).all()


def test_avatar_job_renders_a_gaussian_avatar(splat_model, tmp_path):
    s = run_avatar(splat_model, tmp_path / "o", AvatarJobConfig(orbit=3, size=48, rgba=True), spec="smile=0.5",
                   say=None)
    assert s.exit_code == 0 and len(s.written) == 3
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    img = np.asarray(Image.open(tmp_path / "o" / man["items"][1]["generated"]))
    assert img.shape == (48, 48, 4)


def test_a_damaged_mesh_binding_is_refused(splat_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from portraitrig.methods.splat.renderer import SplatRenderer

    bad = tmp_path / "bad"
    shutil.copytree(splat_model, bad)
    w = load_file(bad / "model.safetensors")
    w["face_index"] = w["face_index"] + 10_000
    save_file(w, bad / "model.safetensors")
    with pytest.raises(InputError, match="model.safetensors.*mesh binding"):
        SplatRenderer.from_pretrained(bad)


def test_avatar_job_refuses_a_video_model_folder(tmp_path):
    from portraitrig.neural.modelio import write_model_folder

    other = write_model_folder(tmp_path / "other", "video", 1, {}, torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="not an avatar"):
        run_avatar(other, tmp_path / "o", say=None)


@pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and gsplat")
def test_gsplat_matches_the_reference():
    torch.manual_seed(0)
    size, n = 64, 300
    means = (torch.rand(2, n, 3) * 2 - 1) * torch.tensor([0.8, 0.8, 0.5])
    rot = quat_to_matrix(torch.randn(n, 4))
    scales = torch.rand(n, 3) * 0.08 + 0.01
    pr = project(means, rot, scales, torch.tensor([[1.0], [0.8]]), quat_to_matrix(torch.randn(2, 4) * 0.1 +
                 torch.tensor([1.0, 0, 0, 0])), torch.tensor([[0.05, -0.02], [0.0, 0.1]]), size)
    cols, ops = torch.rand(2, n, 3), torch.rand(2, n) * 0.9
    ins = [pr["means2d"], pr["conics"], cols, ops, pr["depths"]]
    ref_in = [x.clone().requires_grad_(True) for x in ins[:4]]
    gpu_in = [x.cuda().clone().requires_grad_(True) for x in ins[:4]]
    rgb_r, a_r = rasterize_reference(*ref_in, pr["depths"], pr["radii"], size)
    rgb_g, a_g = rasterize_gsplat(*gpu_in, pr["depths"].cuda(), pr["radii"].cuda(), size)
    assert torch.allclose(rgb_g.cpu(), rgb_r, atol=2e-3) and torch.allclose(a_g.cpu(), a_r, atol=2e-3)
    w = torch.rand_like(rgb_r)
    (rgb_r * w).sum().backward()
    (rgb_g * w.cuda()).sum().backward()
    for r, g in zip(ref_in, gpu_in):
        rel = (g.grad.cpu() - r.grad).norm() / r.grad.norm().clamp_min(1e-8)
        assert float(rel) < 0.02


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_the_compiled_pose_renders_as_the_eager_one(splat_model, device):
    """SplatRenderer(compile=True): the posing and projection compiled (one CUDA graph on a GPU)
    give the eager renderer's images, for several batches in a row (each call's graph outputs
    are used before the next call reuses them). One shape: each compiles (~30 s on a CPU)."""
    from portraitrig.methods.splat.renderer import SplatRenderer

    eager = SplatRenderer.from_pretrained(splat_model, device=device)
    fast = SplatRenderer.from_pretrained(splat_model, device=device, compile=True)
    assert fast.compiled and not eager.compiled
    g = torch.Generator().manual_seed(0)
    p = RigParams.cat([eager.reference.to("cpu")] * 4)
    p = p.replace(expression=p.expression + 0.5 * torch.randn(p.expression.shape, generator=g),
                  rotation=p.rotation + 0.1 * torch.randn(p.rotation.shape, generator=g))
    want = eager.render(p, batch=2)
    got = fast.render(p, batch=2)          # two batches of 2: one graph, replayed
    again = fast.render(p, batch=2)
    assert want.shape == got.shape == (4, 3, 32, 32)
    assert float((got - want).abs().max()) < 2e-3 and float((again - got).abs().max()) < 1e-6
    assert float((want[0] - want[1]).abs().mean()) > 1e-3     # the items differ: a stale output would show
