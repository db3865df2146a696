"""Avatar building blocks against analytic cases and plain reference evaluations: orthographic
rays, volume rendering, coarse-to-fine annealing, the hash grid, the spatial prior."""
import math

import pytest
import torch

from portraitrig.face.base import posed_vertices
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.methods.avatar.config import PRESETS
from portraitrig.methods.avatar.field import (AvatarModel, HashGrid, anneal_weights, expression_gate, frame_inputs,
                                              hash_grid_reference, positional_encoding)
from portraitrig.methods.avatar.rays import RigFrames, camera_to_head, depth_range, ortho_rays, pixel_ndc
from portraitrig.methods.avatar.render import composite, render_rays


def sphere_query(centre, radius, sigma):
    def query(pts, ids):
        inside = ((pts - torch.tensor(centre)) ** 2).sum(-1) <= radius ** 2
        s = sigma * inside.float()
        return s, torch.stack([inside.float(), 0.5 * torch.ones_like(s), torch.zeros_like(s)], -1)
    return query


def test_pixel_ndc_centres_and_rays():
    ndc = pixel_ndc(4)
    assert torch.allclose(ndc[0], torch.tensor([-0.75, -0.75]))
    assert torch.allclose(ndc[1], torch.tensor([-0.25, -0.75]))   # row-major: x moves first
    assert torch.allclose(ndc[-1], torch.tensor([0.75, 0.75]))
    o, d = ortho_rays(ndc)
    assert torch.equal(o[:, :2], ndc) and torch.all(o[:, 2] == 0)
    assert torch.all(d == torch.tensor([0.0, 0.0, 1.0]))


def test_camera_to_head_inverts_the_rig_camera():
    fm = load_default_model()
    p = RigParams.neutral(fm, 2)
    p = p.replace(rotation=torch.tensor([[0.1, -0.3, 0.05], [0.0, 0.2, -0.1]]),
                  translation=torch.tensor([[0.05, -0.1], [0.0, 0.2]]), scale=torch.tensor([[0.5], [0.4]]))
    cam = posed_vertices(fm, p)                               # (B, V, 3)
    X = fm.canonical(p.identity, p.expression, p.gaze)
    V = cam.shape[1]
    R = p.rotation_matrix()[:, None].expand(2, V, 3, 3)
    head = camera_to_head(cam, p.scale[:, None].expand(2, V, 1), R, p.translation[:, None].expand(2, V, 2))
    assert torch.allclose(head, X, atol=1e-4)
    near, far = depth_range(p, fm, 0.4, 2.6)
    z = cam[..., 2]
    assert torch.all(near < z.min(1).values) and torch.all(far > z.max(1).values)


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_volume_rendering_of_a_sphere_matches_the_analytic_opacity_and_depth(offset):
    r, c, sig = 0.5, 2.0, 3.0
    o, d = ortho_rays(torch.tensor([[offset, 0.0]]))
    near, far = torch.tensor([1.0]), torch.tensor([3.0])
    res = render_rays(sphere_query((0.0, 0.0, c), r, sig), o, d, near, far, 4000)
    L = 2 * math.sqrt(r * r - offset * offset)
    a = c - L / 2
    acc = 1 - math.exp(-sig * L)
    depth = a + 1 / sig - L * math.exp(-sig * L) / (1 - math.exp(-sig * L))
    assert res["opacity"].item() == pytest.approx(acc, abs=2e-3)
    assert (res["depth"] / res["opacity"]).item() == pytest.approx(depth, abs=2e-3)
    assert res["rgb"][0, 1].item() == pytest.approx(0.5 * acc, abs=2e-3)   # premultiplied colour


def test_ray_missing_the_sphere_is_empty_and_opaque_slab_stops_at_its_front():
    o, d = ortho_rays(torch.tensor([[0.9, 0.0], [0.0, 0.0]]))
    res = render_rays(sphere_query((0.0, 0.0, 2.0), 0.5, 1e4), o, d, torch.tensor([1.0, 1.0]),
                      torch.tensor([3.0, 3.0]), 400)
    assert res["opacity"][0].item() == 0.0
    assert res["opacity"][1].item() == pytest.approx(1.0, abs=1e-5)
    assert res["depth"][1].item() == pytest.approx(1.5, abs=0.01)


def test_occupancy_path_equals_the_dense_path_when_it_only_skips_empty_space():
    q = sphere_query((0.1, 0.0, 2.0), 0.5, 4.0)
    o, d = ortho_rays(pixel_ndc(8))
    near, far = torch.full((64,), 1.0), torch.full((64,), 3.0)
    g = torch.Generator().manual_seed(0)
    dense = render_rays(q, o, d, near, far, 32, generator=g)
    g = torch.Generator().manual_seed(0)
    calls = []

    def occupied(pts, ids):
        calls.append(pts.shape[0])
        return ((pts - torch.tensor([0.1, 0.0, 2.0])).abs() <= 0.55).all(-1)

    fast = render_rays(q, o, d, near, far, 32, generator=g, occupied=occupied)
    for k in ("rgb", "depth", "opacity"):
        assert torch.allclose(dense[k], fast[k], atol=1e-6)
    assert dense["opacity"].max() > 0.5


def test_composite_of_two_samples():
    sigma = torch.tensor([[math.log(2.0), math.log(2.0)]])   # each sample: opacity 1/2 over delta 1
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    res = composite(sigma, rgb, torch.tensor([[1.0, 2.0]]), torch.ones(1, 2))
    assert torch.allclose(res["weights"], torch.tensor([[0.5, 0.25]]))
    assert torch.allclose(res["rgb"], torch.tensor([[0.5, 0.25, 0.0]]))
    assert res["depth"].item() == pytest.approx(1.0)


def test_annealing_weights_open_octaves_coarse_to_fine():
    assert torch.all(anneal_weights(4, 0.0) == 0)
    assert torch.allclose(anneal_weights(4, 4.0), torch.ones(4))
    w = anneal_weights(4, 1.5)
    assert torch.allclose(w, torch.tensor([1.0, 0.5, 0.0, 0.0]), atol=1e-6)
    ws = torch.stack([anneal_weights(4, a) for a in torch.linspace(0, 4, 17).tolist()])
    assert torch.all(ws[1:] >= ws[:-1])                       # never closes again
    x = torch.rand(5, 3)
    enc = positional_encoding(x, 4, alpha=0.0)
    assert enc.shape == (5, 27) and torch.equal(enc[:, :3], x) and torch.all(enc[:, 3:] == 0)
    full = positional_encoding(x, 4)
    assert torch.allclose(full[:, 3:6], torch.sin(math.pi * x), atol=1e-6)


def test_hash_grid_matches_the_reference_evaluation():
    torch.manual_seed(0)
    grid = HashGrid(levels=5, features=2, log2_size=9, min_res=3, max_res=40)
    assert bool(grid.dense[0]) and not bool(grid.dense[-1])   # both index kinds are exercised
    with torch.no_grad():
        grid.table.uniform_(-1, 1)
    x = torch.rand(200, 3)
    x[:3] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 1.0, 0.0]])  # edges of the cube
    fast = grid(x)
    ref = hash_grid_reference(grid, x)
    assert fast.shape == (200, 10)
    assert torch.allclose(fast.double(), ref, atol=1e-5)
    fast.sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0


def test_hash_grid_interpolates_linearly_within_a_cell():
    grid = HashGrid(levels=1, features=1, log2_size=12, min_res=4, max_res=4)
    with torch.no_grad():   # a dense level: set the table to a linear function of the vertex
        r1 = 5
        idx = torch.arange(r1 ** 3)
        xv = (idx % r1).float()
        grid.table[0, :r1 ** 3, 0] = 2 * xv + 1
    x = torch.rand(50, 3)
    assert torch.allclose(grid(x)[:, 0], 2 * (4 * x[:, 0]) + 1, atol=1e-4)


def test_spatial_prior_zero_outside_margin_one_on_the_mesh():
    verts = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.05, 0.0], [0.5, 0.0, 0.5], [3.0, 3.0, 3.0], [1.0, 0.3, 0.0]]])
    gate = expression_gate(pts, verts, margin=0.3)[0]
    assert gate[0] == 1 and gate[3] == 0 and gate[4] == 0     # at / far / exactly at the margin
    assert gate[2] == 0                                       # 0.5 away
    assert gate[1] == 0                                       # 0.502 from the nearest vertex


def test_points_away_from_the_face_do_not_change_with_expression():
    fm = load_default_model()
    mc = PRESETS["tiny"]().model
    mc.cond_dim = fm.n_expr + 4
    torch.manual_seed(0)
    model = AvatarModel(mc)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.5, 0.5)   # a field that uses every input
    p = RigParams.neutral(fm, 2)
    p = p.replace(expression=torch.stack([torch.zeros(fm.n_expr), torch.randn(fm.n_expr) * 2]))
    rig = RigFrames(p, fm, mc)
    far = torch.tensor([[2.2, -2.0, 1.5], [-2.3, 2.0, 2.0]])       # hair / shoulder corners of the box
    near_face = rig.verts[0, :2] + 0.01
    pts = torch.cat([far, near_face])
    outs = []
    for b in range(2):
        item = torch.full((4,), b, dtype=torch.long)
        cond, frame = frame_inputs(rig, pts, item, mc)
        outs.append(model(pts, cond, frame, mc.deform_freqs))
        if b == 1:
            assert torch.all(cond[:2] == 0) and torch.any(cond[2:] != 0)
    assert torch.equal(outs[0]["sigma"][:2], outs[1]["sigma"][:2])
    assert torch.equal(outs[0]["rgb"][:2], outs[1]["rgb"][:2])
    assert not torch.allclose(outs[0]["rgb"][2:], outs[1]["rgb"][2:])
    mc.use_prior = False                                          # the ablation: everything sees it
    cond, _ = frame_inputs(rig, pts, torch.ones(4, dtype=torch.long), mc)
    assert torch.all(cond[:2, :fm.n_expr] != 0)
