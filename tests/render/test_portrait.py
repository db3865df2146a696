"""portraitrig.render.portrait on analytic cases: a Lambertian sphere seen as a disc, known lights."""
from __future__ import annotations

import math

import pytest
import torch

from portraitrig.light.sh import light_from_direction
from portraitrig.render.portrait import (angular_error_deg, border_offset, face_only_relight, inflate,
                                         inflated_normals, portrait_normals, portrait_shading, relight_image,
                                         seam_score, split_albedo)

S, R, CX, CY = 96, 30.0, 45.3, 50.6  # crop side, sphere radius and centre (pixels)
LIGHT_A = light_from_direction((-60, 20), ambient=0.3)[None]
LIGHT_B = light_from_direction((55, 10), ambient=0.25)[None]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The images here are tiny and the solver runs many small ops: threads only add waiting
    (a lot of it on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _grid(h=S, w=S):
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return x, y


def _sphere(cx=CX, cy=CY, r=R, h=S, w=S):
    """(1, 1, H, W) disc mask and (1, 3, H, W) the sphere's camera-space normals (0 outside)."""
    x, y = _grid(h, w)
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    disc = (r2 < r * r).float()
    n = torch.stack([x - cx, y - cy, -torch.sqrt((r * r - r2).clamp_min(0))]) / r
    return disc[None, None], n[None] * disc


def _albedo():
    x, y = _grid()
    return torch.stack([0.7 + 0.2 * torch.sin(x / 7), 0.5 + 0.1 * torch.cos(y / 5), torch.full_like(x, 0.4)])[None]


def _render(normals, disc, light, background=0.3):
    """Lambertian sphere image (albedo x SH shading) on a flat grey background."""
    return torch.where(disc > 0, _albedo() * portrait_shading(normals, light), background).clamp(0, 1)


def _rot_y(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


# ------------------------------------------------------------------ proxy geometry
def test_inflation_of_a_disc_is_a_paraboloid():
    disc, _ = _sphere()
    h = inflate(disc > 0)[0, 0]
    x, y = _grid()
    ref = (R * R - (x - CX) ** 2 - (y - CY) ** 2).clamp_min(0)
    inner = ref > 0.2 * R * R
    assert (h[disc[0, 0] == 0] == 0).all()
    # the discrete boundary lies about half a pixel outside the circle: allow 2 R * 0.75 px
    assert (h - ref)[inner].abs().max() < 1.5 * R


def test_proxy_normals_match_a_sphere():
    disc, true_n = _sphere()
    empty = torch.zeros_like(disc)
    n = portrait_normals(torch.zeros_like(true_n), empty, disc)
    assert n.shape == (1, 3, S, S)
    assert (n[:, :, disc[0, 0] == 0] == 0).all()
    inside = disc[0, 0] > 0
    assert torch.allclose(n.norm(dim=1)[0][inside], torch.ones(()), atol=1e-4)
    err = angular_error_deg(n, true_n)[0, 0]
    x, y = _grid()
    core = ((x - CX) ** 2 + (y - CY) ** 2) < (0.9 * R) ** 2
    assert err[inside].mean() < 2.0 and err[core].max() < 4.0
    # flatter proxies tilt less, but still face the camera at the centre
    flat = inflated_normals(disc > 0, roundness=0.5)
    assert (-flat[0, 2][core]).mean() > (-n[0, 2][core]).mean() + 0.05
    assert flat[0, 2, int(CY), int(CX)] < -0.99


def test_batched_odd_sizes_and_open_crop_border():
    # two items, a non-square odd size; the second: a "torso" cut by the bottom of the crop
    H, W = 77, 90
    d1, n1 = _sphere(40.2, 35.7, 25.0, H, W)
    x, y = _grid(H, W)
    torso = (((x - 45) ** 2 + (y - 80) ** 2) < 35 ** 2).float()[None, None]
    person = torch.cat([d1, torso])
    n = portrait_normals(torch.zeros(2, 3, H, W), torch.zeros(2, 1, H, W), person)
    assert n.shape == (2, 3, H, W)
    core = ((x - 40.2) ** 2 + (y - 35.7) ** 2) < 20 ** 2
    assert angular_error_deg(n[:1], n1)[0, 0][core].mean() < 2.5
    # where the torso meets the crop's bottom edge it keeps facing the camera (no false rim)
    assert n[1, 2, H - 1, 45] < -0.97
    # a person filling the whole crop has no outline: it is flat
    full = portrait_normals(torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32))
    assert torch.allclose(full[0, 2], -torch.ones(32, 32), atol=1e-3)


def test_face_normals_kept_inside_and_joined_outside():
    disc, true_n = _sphere()
    x, _ = _grid()
    face = disc * (x < CX + 5).float()
    rotated = torch.einsum("ij,bjhw->bihw", _rot_y(15), true_n) * face  # a mesh 15 degrees off the proxy
    n = portrait_normals(rotated, face, disc)
    f = face[0, 0] > 0
    assert torch.allclose(n[0][:, f], rotated[0][:, f], atol=1e-5)
    # across the border the normals turn by no more than inside the mesh from pixel to pixel
    row, j = int(CY), int(CX) + 5  # first column outside the face mask
    step_in = angular_error_deg(n[..., j - 2:j - 1], n[..., j - 1:j])[0, 0, row]
    step_across = angular_error_deg(n[..., j - 1:j], n[..., j:j + 1])[0, 0, row]
    assert step_across < 1.5 * step_in + 0.5
    # far from the mesh the proxy is back to itself
    off = border_offset(rotated, face, inflated_normals(disc > 0), 9.6)
    assert off[0, :, row, j].norm() > 0.1 and off[0, :, row, j + 12].norm() == 0 and (off[0][:, f] == 0).all()


# ------------------------------------------------------------------ shading
def test_shading_matches_the_lambert_band_limit():
    disc, n = _sphere()
    d = torch.tensor([0.3, -0.4, -0.6])
    d = d / d.norm()
    ambient, intensity = 0.2, 0.9
    s = portrait_shading(n, light_from_direction(d, intensity=intensity, ambient=ambient)[None])
    c = torch.einsum("bchw,c->bhw", n, d)[0]
    # clamped cosine to order 2 (Legendre): 1/4 + c/2 + 5/16 * (3c^2 - 1)/2
    ref = ambient + intensity * (0.25 + c / 2 + 5 / 32 * (3 * c * c - 1))
    inside = disc[0, 0] > 0
    for k in range(3):
        assert torch.allclose(s[0, k][inside], ref[inside], atol=1e-5)
    assert (s[:, :, ~inside] == 0).all()
    # and close to Lambert's max(0, cos) itself (order-2 error of the clamped cosine)
    assert (s[0, 0][inside] - (ambient + intensity * c.clamp_min(0))[inside]).abs().max() < 0.15 * intensity


def test_split_albedo_recovers_the_albedo():
    disc, n = _sphere()
    img = _render(n, disc, LIGHT_A)
    albedo, shading = split_albedo(img, n, LIGHT_A)
    lit = (disc[0, 0] > 0) & (shading[0].min(0).values > 0.1) & (img[0].max(0).values < 1)
    assert torch.allclose(albedo[0][:, lit], _albedo()[0][:, lit], atol=1e-4)
    assert (albedo[:, :, disc[0, 0] == 0] == 0).all()


# ------------------------------------------------------------------ relighting
def test_relight_sphere_from_a_to_b():
    disc, true_n = _sphere()
    img_a, img_b = _render(true_n, disc, LIGHT_A), _render(true_n, disc, LIGHT_B)
    n = portrait_normals(torch.zeros_like(true_n), torch.zeros_like(disc), disc)  # proxy only
    out = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, smoothing=0)
    x, y = _grid()
    core = ((x - CX) ** 2 + (y - CY) ** 2) < (0.9 * R) ** 2
    err = (out - img_b).abs()[0][:, core]
    assert err.mean() < 0.01 and err.max() < 0.06
    # the background keeps its light ...
    assert torch.equal(out[:, :, disc[0, 0] == 0], img_a[:, :, disc[0, 0] == 0])
    # ... or is lit like a wall facing the camera
    wall = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, background="relight", smoothing=0)
    front = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 1, 1)
    gain = portrait_shading(front, LIGHT_B) / portrait_shading(front, LIGHT_A)
    assert torch.allclose(wall[0, :, 2, 2], (0.3 * gain).flatten(), atol=1e-5)
    assert torch.allclose(wall[0][:, core], out[0][:, core])
    # smoothing the ratio costs little on a smooth surface
    smooth = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B)
    assert (smooth - img_b).abs()[0][:, core].mean() < 0.02


def test_relight_spares_the_face_mesh_inside_from_the_smoothing():
    # face_mask: the ratio stays as it is deep inside the face mesh (its own normals, what the
    # rig's light fit reads) and is smoothed along its border and beyond, as without a face mask
    disc, n = _sphere()
    img_a = _render(n, disc, LIGHT_A)
    x, y = _grid()
    d = torch.sqrt((x - CX) ** 2 + (y - CY) ** 2)
    face = (d < 0.6 * R).float()[None, None]
    sharp = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, smoothing=0)
    smooth = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, smoothing=1 / 16)
    mixed = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, smoothing=1 / 16, face_mask=face, face_band=1 / 32)
    band = S / 32
    inside, outside = d < 0.6 * R - band - 3, d > 0.6 * R + 3
    assert torch.allclose(mixed[0][:, inside], sharp[0][:, inside], atol=1e-6)
    assert torch.allclose(mixed[0][:, outside], smooth[0][:, outside], atol=1e-6)
    assert (sharp - smooth).abs()[0][:, inside].max() > 1e-3      # the two differ there: the test can fail
    # between the two, a blend of them (no jump at the border)
    lo, hi = torch.minimum(sharp, smooth), torch.maximum(sharp, smooth)
    assert ((mixed >= lo - 1e-6) & (mixed <= hi + 1e-6)).all()
    # an empty face mask changes nothing
    none = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, smoothing=1 / 16, face_mask=torch.zeros_like(face))
    assert torch.allclose(none, smooth, atol=1e-6)
    with pytest.raises(ValueError, match="face_mask"):
        relight_image(img_a, n, disc, LIGHT_A, LIGHT_B, face_mask=face[:, :, :10])


def test_relight_per_frame_lights():
    # a batch of frames, each with its own old and new light (a light moving over time)
    disc, true_n = _sphere()
    lights = torch.cat([light_from_direction((a, 10), ambient=0.3)[None] for a in (-60, 0, 60)])
    imgs = torch.cat([_render(true_n, disc, lights[i:i + 1]) for i in range(3)])
    n = portrait_normals(torch.zeros(3, 3, S, S), torch.zeros(3, 1, S, S), disc.expand(3, -1, -1, -1))
    out = relight_image(imgs, n, disc.expand(3, -1, -1, -1), lights, lights.roll(1, 0), smoothing=0)
    x, y = _grid()
    core = ((x - CX) ** 2 + (y - CY) ** 2) < (0.9 * R) ** 2
    assert (out - imgs.roll(1, 0)).abs()[:, :, core].mean() < 0.01


def test_seam_score_whole_vs_face_only():
    disc, true_n = _sphere()
    x, _ = _grid()
    face = disc * (x < CX + 5).float()  # the "face mesh" covers the left part of the sphere
    img_a = _render(true_n, disc, LIGHT_A)
    assert 0.7 < float(seam_score(img_a, face, disc)) < 1.4  # a photo without a seam
    n = portrait_normals(true_n * face, face, disc)
    whole = relight_image(img_a, n, disc, LIGHT_A, LIGHT_B)
    naive = face_only_relight(img_a, true_n, face, LIGHT_A, LIGHT_B)
    s_whole, s_naive = float(seam_score(whole, face, disc)), float(seam_score(naive, face, disc))
    assert 0.7 < s_whole < 1.3
    assert s_naive > 3.0
    # a mesh 15 degrees off the proxy: the join is spread over the feather band, no seam
    off = torch.einsum("ij,bjhw->bihw", _rot_y(15), true_n) * face
    n_off = portrait_normals(off, face, disc, feather=1 / 6)
    assert float(seam_score(relight_image(img_a, n_off, disc, LIGHT_A, LIGHT_B), face, disc)) < 1.4


def test_bad_arguments():
    disc, n = _sphere()
    img = _render(n, disc, LIGHT_A)
    with pytest.raises(ValueError, match="background must be one of"):
        relight_image(img, n, disc, LIGHT_A, LIGHT_B, background="blur")
    with pytest.raises(ValueError, match="ratio_range"):
        relight_image(img, n, disc, LIGHT_A, LIGHT_B, ratio_range=(2.0, 5.0))
    with pytest.raises(ValueError, match=r"person_mask must be \(B, 1, H, W\)"):
        portrait_normals(n, disc, disc[0])
    with pytest.raises(ValueError, match="roundness"):
        inflated_normals(disc > 0, roundness=0)
