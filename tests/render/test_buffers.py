import numpy as np
import pytest
import torch

from portraitrig.face.base import posed_vertices
from portraitrig.face.params import RigParams
from portraitrig.light.sh import preset
from portraitrig.render.buffers import ALL_NAMES, Renderer, buffers_to_images, overlay_mesh, render_buffers, vertex_normals
from synth_face import SynthFace


@pytest.fixture(scope="module")
def model():
    return SynthFace()


def test_shapes_and_backgrounds(model):
    p = RigParams.neutral(model, 2)
    b = render_buffers(p, model, 48, names=ALL_NAMES)
    chans = dict(normal=3, albedo=3, shading=3, shaded=3, mask=1, depth=1, region=1, regions=4, uv=2)
    for k, c in chans.items():
        assert b[k].shape == (2, c, 48, 48), k
    bg = b["mask"][:, 0] == 0
    assert bg[:, 0, 0].all() and not bg[:, 24, 24].any()
    for k in ("normal", "albedo", "shading", "shaded", "depth", "uv"):
        assert (b[k].permute(1, 0, 2, 3)[:, bg] == 0).all(), k
    assert (b["region"][:, 0][bg] == -1).all()
    n = b["normal"].permute(0, 2, 3, 1)[~bg]
    assert torch.allclose(n.norm(dim=-1), torch.ones(len(n)), atol=1e-4)
    # the sphere's centre faces the camera
    assert b["normal"][0, 2, 24, 24] < -0.99
    # ambient light: shading 1 everywhere on the face, shaded == albedo
    assert torch.allclose(b["shading"].permute(1, 0, 2, 3)[:, ~bg], torch.ones(1), atol=1e-5)
    assert torch.allclose(b["shaded"], b["albedo"], atol=1e-6)
    # regions one-hot agrees with region ids
    assert torch.equal(b["regions"].argmax(1)[~bg].float(), b["region"][:, 0][~bg])
    assert (b["regions"][:, 1].sum() > 0) and (b["regions"][:, 3].sum() > 0)


def test_vertex_lands_on_predicted_pixel(model):
    # move the sphere so that its apex (vertex 0, nearest to the camera) sits at a known NDC
    S = 64
    p = RigParams.neutral(model, 1)
    p.translation = torch.tensor([[0.2, -0.3]])
    v = posed_vertices(model, p)
    x, y = float(v[0, 0, 0]), float(v[0, 0, 1])
    j, i = int((x + 1) / 2 * S), int((y + 1) / 2 * S)
    b = render_buffers(p, model, S, names=("depth", "mask", "normal"))
    d = b["depth"][0, 0]
    # the nearest point of the sphere is the apex: the depth minimum is at (or next to) its pixel
    ii, jj = divmod(int(torch.where(b["mask"][0, 0] > 0, d, torch.full_like(d, 9)).argmin()), S)
    assert abs(ii - i) <= 1 and abs(jj - j) <= 1
    assert abs(float(d[i, j]) - float(v[0, 0, 2])) < 0.01
    # left/right edges of the silhouette are where the sphere's outline predicts (scale 0.8, 80 deg)
    row = b["mask"][0, 0, i]
    r = 0.8 * np.sin(np.radians(80))
    cols = row.nonzero().squeeze(1)
    assert abs(float(cols.min()) - ((x - r + 1) / 2 * S)) <= 1.0
    assert abs(float(cols.max()) + 1 - ((x + r + 1) / 2 * S)) <= 1.0


def test_vertex_normals_outward(model):
    v = model.canonical(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, 2))
    n = vertex_normals(v, model.faces)
    inner = slice(0, model.n_vertices - 16)  # the open boundary ring's normals tilt outwards
    assert torch.allclose(n[0, inner], v[0, inner] / v[0, inner].norm(dim=-1, keepdim=True), atol=0.05)
    assert torch.allclose(n.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_light_and_albedo_reach_the_buffers(model):
    p = RigParams.neutral(model, 2)
    p.light = torch.stack([preset("left"), preset("right")])
    p.albedo = p.albedo.clone()
    p.albedo[1] = torch.tensor([0.2, 0.4, 0.6])
    b = render_buffers(p, model, 48, names=("shading", "albedo", "shaded"))
    s = b["shading"][:, 0]
    assert s[0, 24, 8] > s[0, 24, 40] + 0.3 and s[1, 24, 40] > s[1, 24, 8] + 0.3
    assert torch.allclose(b["albedo"][1, :, 24, 24], torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
    assert torch.allclose(b["shaded"], b["albedo"] * b["shading"], atol=1e-6)


def test_renderer_images_and_overlay(model):
    r = Renderer(model, size=32, names=ALL_NAMES)
    b = r(RigParams.neutral(model, 1))
    imgs = buffers_to_images(b)
    assert set(imgs) == set(ALL_NAMES)
    for k, im in imgs.items():
        assert im.dtype == np.uint8 and im.shape[:2] == (32, 32), k
    assert imgs["normal"][16, 16].tolist()[2] < 10 and imgs["normal"][0, 0].sum() == 0
    assert imgs["depth"][16, 16] > imgs["depth"][16, 4] > 0 and imgs["depth"][0, 0] == 0
    crop = np.full((64, 64, 3), 30, np.uint8)
    wire = overlay_mesh(crop, RigParams.neutral(model, 1), model)
    assert wire.shape == crop.shape and (wire != crop).any() and (wire[0, 0] == crop[0, 0]).all()
    shaded = overlay_mesh(crop, RigParams.neutral(model, 1), model, 32, mode="shaded", alpha=1.0)
    assert shaded[32, 32].mean() > 100 and (shaded[0, 0] == crop[0, 0]).all()
    with pytest.raises(ValueError):
        render_buffers(RigParams.neutral(model, 1), model, 8, names=("nope",))
