import math

import numpy as np
import pytest
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import axis_angle_to_matrix
from portraitrig.light import sh


def _sphere_dirs(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def test_basis_orthogonality_and_constants():
    # Monte-Carlo-free check: the orthonormal SH integrate to identity on a fine equirect grid
    H, W = 200, 400
    dirs = sh.equirect_directions(H, W)
    theta = (torch.arange(H, dtype=torch.float64) + 0.5) / H * math.pi
    dw = (2 * math.pi / W) * (math.pi / H) * torch.sin(theta)[:, None].expand(H, W)
    Y = sh.sh_orthonormal(dirs)
    gram = torch.einsum("hwk,hwl,hw->kl", Y, Y, dw)
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=2e-3)
    # basis = (A_l / pi) sqrt(4 pi) Y: band factors 1, 2/3, 1/4
    n = _sphere_dirs(10)
    ratio = sh.sh_basis(n) / sh.sh_orthonormal(n) / math.sqrt(4 * math.pi)
    expect = torch.tensor([1, 2 / 3, 2 / 3, 2 / 3, 0.25, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    assert torch.allclose(ratio, expect.expand_as(ratio), atol=1e-6)
    assert torch.allclose(sh.sh_basis(n)[:, 0], torch.ones(10, dtype=torch.float64))


def test_ambient_gives_constant_unit_shading():
    light = sh.preset("ambient")[None]
    s = sh.shade(_sphere_dirs(500).float()[None], light)
    assert torch.allclose(s, torch.ones_like(s), atol=1e-6)


@pytest.mark.parametrize("az,el", [(0, 0), (-70, 10), (45, 40), (180, 25), (0, -60)])
def test_directional_light_approximates_clamped_cosine(az, el):
    d = sh.direction_from_angles(az, el).double()
    light = sh.light_from_direction((az, el), colour=(1.0, 0.5, 0.25), intensity=2.0, ambient=0.3).double()
    peak = sh.sh_basis(d) @ light
    # order-2 SH of the clamped cosine peaks at 1.0625 x the intensity
    assert torch.allclose(peak, 0.3 + 2.0 * 1.0625 * torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64), atol=1e-5)
    n = _sphere_dirs(3000)
    approx = (sh.sh_basis(n) @ light)[:, 0]
    exact = 0.3 + 2.0 * (n @ d).clamp_min(0)
    assert (approx - exact).abs().mean() < 0.1 * 2.0
    assert torch.corrcoef(torch.stack([approx, exact]))[0, 1] > 0.98


def test_direction_conventions():
    # 'left' lights the image-left side (-x normals) more; 'top' the upward (-y) normals
    left, top, front = sh.preset("left"), sh.preset("top"), sh.preset("front")
    L = lambda n, light: float((sh.sh_basis(torch.tensor(n)) @ light)[0])  # noqa: E731
    assert L([-1.0, 0, 0], left) > L([1.0, 0, 0], left) + 0.5
    assert L([0, -1.0, 0], top) > L([0, 1.0, 0], top) + 0.5
    assert L([0, 0, -1.0], front) > L([0, 0, 1.0], front) + 0.5
    for name in sh.PRESETS:
        assert sh.preset(name).shape == (9, 3)
    with pytest.raises(ValueError):
        sh.preset("nope")


def test_rotate_sh_is_exact():
    g = torch.Generator().manual_seed(1)
    light = torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(torch.randn(4, 3, generator=g, dtype=torch.float64))
    rot = sh.rotate_sh(light, R)
    n = _sphere_dirs(200).expand(4, 200, 3)
    lhs = sh.sh_basis(n) @ rot
    rn = n @ R  # rows: (R^T n)^T
    rhs = sh.sh_basis(rn) @ light
    assert torch.allclose(lhs, rhs, atol=1e-10)
    # a directional light rotated by R comes from R d
    d = sh.direction_from_angles(20, 10).double()
    R1 = R[0]
    a = sh.rotate_sh(sh.light_from_direction(d).double(), R1)
    b = sh.light_from_direction(R1 @ d).double()
    assert torch.allclose(a, b, atol=1e-5)


def test_rotation_of_sh_equals_sh_of_rotated_environment():
    # an analytic environment L(w) = exp(5 w.a) rotated by R == L(R^T w)
    H, W = 180, 360
    dirs = sh.equirect_directions(H, W)
    a = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    a = a / a.norm()
    R = axis_angle_to_matrix(torch.tensor([0.4, -1.1, 0.7], dtype=torch.float64))
    env = torch.exp(2 * dirs @ a)[..., None].expand(H, W, 3)
    env_rot = torch.exp(2 * (dirs @ R) @ a)[..., None].expand(H, W, 3)
    l0, l1 = sh.sh_from_equirect(env).double(), sh.sh_from_equirect(env_rot).double()
    assert torch.allclose(sh.rotate_sh(l0, R), l1, atol=2e-3 * l0.abs().max())


def test_equirect_constant_map_is_ambient_and_orientation():
    light = sh.sh_from_equirect(np.full((64, 128, 3), 2.0, np.float32))
    expect = torch.zeros(9, 3)
    expect[0] = 2.0
    assert torch.allclose(light[0], expect[0], atol=1e-6)  # pixel solid angles are exact
    assert torch.allclose(light, expect, atol=1e-3)  # band 2: midpoint quadrature error
    # a bright spot at the left/right edge (towards the camera) lights the front of a face
    env = np.zeros((64, 128, 3), np.float32)
    env[28:36, :4] = 50.0
    env[28:36, -4:] = 50.0
    light = sh.sh_from_equirect(env)
    front, back = sh.sh_basis(torch.tensor([0, 0, -1.0])) @ light, sh.sh_basis(torch.tensor([0, 0, 1.0])) @ light
    assert (front > back + 0.1).all()
    # top row -> up (-y); right of centre -> +x
    d = sh.equirect_directions(4, 8)
    assert d[0, :, 1].max() < -0.9
    assert d[2, 6, 0] > 0.8 and d[2, 1, 0] < -0.8
    assert torch.allclose(sh.equirect_directions(1, 1)[0, 0], torch.tensor([0, 0, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(sh.equirect_directions(1, 2)[0], torch.tensor([[-1.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64), atol=1e-12)


def test_read_environment_map_formats(tmp_path):
    import cv2

    hdr = (np.random.default_rng(0).random((8, 16, 3)) * 4).astype(np.float32)
    assert cv2.imwrite(str(tmp_path / "e.hdr"), hdr[..., ::-1])
    got = sh.read_environment_map(tmp_path / "e.hdr")
    assert got.shape == (8, 16, 3) and got.dtype == np.float32
    assert np.allclose(got, hdr, rtol=0.02, atol=0.02)  # RGBE is ~1% precise
    from PIL import Image

    Image.fromarray(np.full((8, 16, 3), 128, np.uint8)).save(tmp_path / "e.png")
    ldr = sh.read_environment_map(tmp_path / "e.png")
    assert np.allclose(ldr, ((128 / 255 + 0.055) / 1.055) ** 2.4, atol=1e-5)
    light = sh.light_from_environment_map(tmp_path / "e.png")
    assert torch.allclose(light[0], torch.ones(3), atol=1e-5)
    with pytest.raises(InputError):
        sh.read_environment_map(tmp_path / "missing.hdr")
    (tmp_path / "bad.hdr").write_bytes(b"not an image")
    with pytest.raises(InputError):
        sh.read_environment_map(tmp_path / "bad.hdr")


def test_sh_to_image_preview():
    img = sh.sh_to_image(sh.preset("left"), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img[0, 0].sum() == 0  # outside the sphere
    assert img[32, 12].mean() > img[32, 52].mean() + 30  # lit from image left


def test_exposure_scales_a_normalised_environment():
    from portraitrig.light.sh import sh_from_equirect

    env = np.random.default_rng(0).random((16, 32, 3)).astype(np.float32)
    one = sh_from_equirect(env, normalize=True)
    two = sh_from_equirect(env, exposure=2.0, normalize=True)
    assert torch.allclose(two, 2 * one, rtol=1e-6)
