"""Order-2 real spherical-harmonics (SH) lighting.

Axes are the camera's: x to image right, y down, z away from the camera. A face looks along -z,
so a surface facing the camera has the unit normal (0, 0, -1).

**Basis** (9 functions, this order, as in DECA/DiffusionRig)::

    0: 1   1: x   2: y   3: z   4: xy   5: xz   6: yz   7: x^2 - y^2   8: 3z^2 - 1

``sh_basis(n)[k] = (A_l / pi) * sqrt(4 pi) * Y_k(n)`` where ``Y_k`` are the orthonormal real SH and
``A_l = (pi, 2pi/3, pi/4)`` the clamped-cosine (Lambertian) convolution factors of band l
(Ramamoorthi & Hanrahan 2001). So ``sh_basis(n)[0] == 1`` and

    shading(n) = sh_basis(n) @ light          light: (B, 9, 3) (per RGB channel)

is the irradiance divided by pi (the radiance a white Lambertian surface reflects).
The **light coefficients** are ``light_k = (1/sqrt(4 pi)) * integral L(w) Y_k(w) dw`` for an
environment radiance ``L``: a constant environment of radiance 1 gives ``light[0] = 1``, rest 0,
which shades every normal with 1 (unit white ambient).

Directional lights use the direction *towards* the light; ``(azimuth, elevation)`` in degrees:
azimuth 0 = from the camera (front), +90 = from image right (+x), -90 from image left, 180 from
behind; elevation +90 = from above (-y).
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from portraitrig.accel.constants import device_constant
from portraitrig.errors import InputError

_Y00 = 0.5 / math.sqrt(math.pi)
_Y1 = math.sqrt(3 / (4 * math.pi))
_Y2 = 0.5 * math.sqrt(15 / math.pi)      # xy, xz, yz
_Y20 = 0.25 * math.sqrt(5 / math.pi)     # 3z^2 - 1
_Y22 = 0.25 * math.sqrt(15 / math.pi)    # x^2 - y^2
_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
_A = (math.pi, 2 * math.pi / 3, math.pi / 4)
#: orthonormal constants Y_k(n) = _YC[k] * poly_k(n)
_YC = (_Y00, _Y1, _Y1, _Y1, _Y2, _Y2, _Y2, _Y22, _Y20)
#: sh_basis constants: (A_l / pi) * sqrt(4 pi) * _YC[k]
SH_CONSTANTS = tuple(_A[_BAND[k]] / math.pi * math.sqrt(4 * math.pi) * _YC[k] for k in range(9))
SH_NAMES = ("1", "x", "y", "z", "xy", "xz", "yz", "x2-y2", "3z2-1")


def _poly(n: torch.Tensor) -> torch.Tensor:
    x, y, z = n.unbind(-1)
    return torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals (camera space) -> (..., 9) irradiance basis (see module doc)."""
    c = device_constant(SH_CONSTANTS, normals.dtype, normals.device)
    return _poly(normals) * c


def sh_orthonormal(dirs: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit directions -> (..., 9) orthonormal real SH ``Y_k`` (same order)."""
    c = device_constant(_YC, dirs.dtype, dirs.device)
    return _poly(dirs) * c


def shade(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """(B, ..., 3) normals, (B, 9, 3) light -> (B, ..., 3) shading."""
    b = sh_basis(normals)
    B = b.shape[0]
    return (b.reshape(B, -1, 9) @ light).reshape(normals.shape)


# ---------------------------------------------------------------------- directional lights
def direction_from_angles(azimuth_deg: float, elevation_deg: float) -> torch.Tensor:
    """(3,) unit vector towards a light at (azimuth, elevation) degrees (see module doc)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return torch.tensor([math.cos(el) * math.sin(az), -math.sin(el), -math.cos(el) * math.cos(az)])


def light_from_direction(direction: Sequence[float] | torch.Tensor, colour: Sequence[float] = (1, 1, 1),
                         intensity: float = 1.0, ambient: float | Sequence[float] = 0.3) -> torch.Tensor:
    """(9, 3) SH light of a distant light + ambient.

    direction: a 3-vector towards the light (camera axes) or ``(azimuth_deg, elevation_deg)``.
    The shading approximates ``ambient + intensity * colour * max(0, n . d)`` (order-2 SH of the
    clamped cosine: 1.0625 * intensity at the peak instead of 1, as every order-2 SH light).
    """
    d = torch.as_tensor(direction, dtype=torch.float64).reshape(-1)
    if d.numel() == 2:
        d = direction_from_angles(float(d[0]), float(d[1])).double()
    elif d.numel() != 3:
        raise ValueError("direction must be a 3-vector or (azimuth_deg, elevation_deg)")
    if not d.norm() > 0:
        raise ValueError("direction must be non-zero")
    return directional_lights(d, intensity, ambient, colour).float()


def directional_lights(directions: torch.Tensor, intensity: float | torch.Tensor = 1.0,
                       ambient: float | Sequence[float] | torch.Tensor = 0.3,
                       colour: Sequence[float] | torch.Tensor = (1, 1, 1)) -> torch.Tensor:
    """Batched :func:`light_from_direction`: (..., 3) directions towards the lights (normalised
    here); intensity broadcastable to (...), ambient and colour to (..., 3) (a per-light scalar
    ambient is ``a[..., None]``) -> (..., 9, 3) lights in the directions' dtype and device."""
    d = directions / directions.norm(dim=-1, keepdim=True)
    kw = dict(dtype=d.dtype, device=d.device)
    # radiance of a delta light with pi * intensity power: L_k = P Y_k(d); light_k = Y00 * L_k
    coeff = math.pi * _Y00 * torch.as_tensor(intensity, **kw)[..., None] * sh_orthonormal(d)  # (..., 9)
    light = coeff[..., None] * torch.as_tensor(colour, **kw)[..., None, :]                     # (..., 9, 3)
    amb = torch.as_tensor(ambient, **kw).expand(*d.shape[:-1], 3)
    return torch.cat([light[..., :1, :] + amb.unsqueeze(-2), light[..., 1:, :]], dim=-2)


def _spec(az, el, colour=(1, 1, 1), intensity=1.0, ambient=0.3):
    return light_from_direction((az, el), colour, intensity, ambient)


def _studio() -> torch.Tensor:
    key = _spec(-35, 25, intensity=0.9, ambient=0.25)
    fill = _spec(40, 5, intensity=0.35, ambient=0.0)
    rim = _spec(150, 30, intensity=0.4, ambient=0.0)
    return key + fill + rim


#: name -> builder of a (9, 3) light. 'left'/'right' are the image's left/right.
PRESETS = {
    "ambient": lambda: _spec(0, 0, intensity=0.0, ambient=1.0),
    "front": lambda: _spec(0, 0, ambient=0.35, intensity=0.75),
    "left": lambda: _spec(-70, 10),
    "right": lambda: _spec(70, 10),
    "top": lambda: _spec(0, 70),
    "bottom": lambda: _spec(0, -60),
    "rim": lambda: _spec(180, 25, intensity=1.2, ambient=0.2),
    "rembrandt_left": lambda: _spec(-45, 40, intensity=1.0, ambient=0.2),
    "rembrandt_right": lambda: _spec(45, 40, intensity=1.0, ambient=0.2),
    "split_left": lambda: _spec(-90, 0, intensity=1.1, ambient=0.15),
    "split_right": lambda: _spec(90, 0, intensity=1.1, ambient=0.15),
    "warm": lambda: _spec(-30, 20, colour=(1.0, 0.82, 0.6), ambient=0.0) + _spec(0, 0, (1, 1, 1), 0.0, (0.35, 0.3, 0.25)),
    "cool": lambda: _spec(30, 20, colour=(0.65, 0.8, 1.0), ambient=0.0) + _spec(0, 0, (1, 1, 1), 0.0, (0.25, 0.3, 0.38)),
    "studio": _studio,
}


def preset(name: str) -> torch.Tensor:
    """(9, 3) light of a named preset (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown light preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None


# ---------------------------------------------------------------------- exposure
@functools.lru_cache(maxsize=None)
def _front_basis_f64() -> torch.Tensor:
    """(9,) mean of ``sh_basis`` over camera-facing normals, weighted by how much of each the
    camera sees (foreshortening ``max(0, -n_z)``): ``front_basis @ light`` is the mean shading of
    a convex face-like surface as the photo shows it."""
    d = _fibonacci_sphere(512)
    w = (-d[:, 2]).clamp(min=0)
    return (w[:, None] * sh_basis(d)).sum(0) / w.sum()


@functools.lru_cache(maxsize=None)
def _front_basis_values() -> tuple[float, ...]:
    return tuple(_front_basis_f64().tolist())


def mean_front_shading(light: torch.Tensor) -> torch.Tensor:
    """(..., 9, 3) light -> (..., 3): mean RGB shading over the camera-facing hemisphere of normals."""
    return torch.einsum("k,...kc->...c", device_constant(_front_basis_values(), light.dtype, light.device), light)


def match_exposure(light: torch.Tensor, reference: torch.Tensor, max_gain: float = 20.0) -> torch.Tensor:
    """``light`` brought to the ``reference``'s exposure (relative relighting): afterwards its
    :func:`mean_front_shading` equals the reference's, while where the light comes from (and its
    shape) is the new light's. A white (neutral) ``light`` takes the reference's colour balance; a
    coloured one keeps its colour at the reference's luminance. The light is scaled (at most
    ``max_gain`` times: a light from behind leaves the front nearly unlit) and whatever the
    scaling cannot reach is made up with ambient light. (..., 9, 3) each, broadcast."""
    m_new, m_ref = mean_front_shading(light), mean_front_shading(reference).clamp(min=0)
    lum_w = device_constant((0.2126, 0.7152, 0.0722), light.dtype, light.device)
    pos = m_new.clamp(min=0)
    spread = pos.amax(-1) - pos.amin(-1)
    neutral = (spread <= 0.02 * pos.amax(-1)) | (pos.amax(-1) <= 1e-6)
    coloured = pos * ((m_ref @ lum_w) / (pos @ lum_w).clamp(min=1e-6)).unsqueeze(-1)
    target = torch.where(neutral.unsqueeze(-1), m_ref, coloured)
    gain = (target / m_new.clamp(min=1e-6)).clamp(min=0, max=max_gain)
    out = light * gain.unsqueeze(-2)
    ambient = target - gain * m_new  # sh_basis term 0 is 1: adding a to coefficient 0 adds a everywhere
    return torch.cat([out[..., :1, :] + ambient.unsqueeze(-2), out[..., 1:, :]], dim=-2)


# ---------------------------------------------------------------------- rotation
def _fibonacci_sphere(n: int, dtype=torch.float64) -> torch.Tensor:
    i = torch.arange(n, dtype=dtype) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


_ROT_DIRS = _fibonacci_sphere(64)
_ROT_PINV = torch.linalg.pinv(sh_basis(_ROT_DIRS))  # (9, 64)


def rotate_sh(light: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Rotate the environment: a light arriving from direction d then arrives from ``R @ d``.

    light: (9, 3) or (B, 9, 3); R: (3, 3) or (B, 3, 3). Exact for order 2 (each band spans a
    rotation-invariant space; solved by least squares on 64 directions):
    ``shade(n, rotate_sh(light, R)) == shade(R.T @ n, light)``.
    """
    dt = light.dtype
    Rd = R.to(torch.float64)
    # rows: sh_basis(R^T s_i) for sample directions s_i  ->  (..., 64, 9)
    Bs = sh_basis(_ROT_DIRS.to(Rd.device) @ Rd)  # s^T R == (R^T s)^T
    M = _ROT_PINV.to(Rd.device) @ Bs  # (..., 9, 9)
    return (M @ light.to(torch.float64)).to(dt)


# ---------------------------------------------------------------------- environment maps
def equirect_directions(height: int, width: int, dtype=torch.float64) -> torch.Tensor:
    """(H, W, 3) unit directions of equirectangular pixel centres.

    Orientation (a panorama shot from the subject's place, looking where the camera looks):
    the image centre is +z (behind the subject as the camera sees it), the left/right edges are
    -z (towards the camera: light there lights the face from the front), the top row is up
    (-y), and moving right from the centre turns towards image right (+x).
    """
    v = (torch.arange(height, dtype=dtype) + 0.5) / height
    u = (torch.arange(width, dtype=dtype) + 0.5) / width
    theta = v * math.pi  # polar angle from up
    phi = (u - 0.5) * 2 * math.pi
    st = torch.sin(theta)[:, None]
    return torch.stack([st * torch.sin(phi)[None, :], -torch.cos(theta)[:, None].expand(height, width),
                        st * torch.cos(phi)[None, :]], -1)


def sh_from_equirect(hdr: np.ndarray | torch.Tensor, exposure: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """(H, W, 3) float linear-radiance equirect map -> (9, 3) light (solid-angle weighted).

    Orientation: see :func:`equirect_directions`. A constant map of value c gives c * ambient.
    ``normalize`` scales the result so the mean ambient term (``light[0]``) over RGB is 1.
    """
    env = torch.as_tensor(np.asarray(hdr) if not torch.is_tensor(hdr) else hdr).detach().cpu().to(torch.float64)
    if env.ndim != 3 or env.shape[2] != 3:
        raise ValueError(f"environment map must be (H, W, 3), got {tuple(env.shape)}")
    H, W, _ = env.shape
    dirs = equirect_directions(H, W)
    edges = torch.arange(H + 1, dtype=torch.float64) / H * math.pi
    dw = (2 * math.pi / W) * (torch.cos(edges[:-1]) - torch.cos(edges[1:]))  # exact pixel solid angles (H,)
    Y = sh_orthonormal(dirs)  # (H, W, 9)
    light = torch.einsum("hwk,hwc,h->kc", Y, env, dw) * _Y00
    if normalize:
        light = light / light[0].mean().clamp_min(1e-12)
    return (light * exposure).float()  # after normalising, so exposure always brightens


def read_environment_map(path: str | Path) -> np.ndarray:
    """Read an environment map -> (H, W, 3) float32 linear RGB.

    ``.hdr`` (Radiance) and ``.exr`` through OpenCV (EXR needs ``OPENCV_IO_ENABLE_OPENEXR=1``,
    which this function sets; it works with opencv-python-headless 4.14 as long as OpenCV has not
    tried an EXR before the variable was set). PNG/JPEG (LDR) maps are decoded and linearised
    with the inverse sRGB curve.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "environment map not found")
    suffix = path.suffix.lower()
    if suffix in (".hdr", ".exr", ".pic"):
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(path, f"cannot decode {suffix} environment map")
        img = img[..., ::-1].astype(np.float32)
    else:
        from portraitrig.io.images import read_image

        arr = read_image(path).astype(np.float32) / 255.0  # InputError naming the file if bad
        img = np.where(arr <= 0.04045, arr / 12.92, ((arr + 0.055) / 1.055) ** 2.4).astype(np.float32)
    if not np.isfinite(img).all():
        img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(img, 0, None))


def light_from_environment_map(path: str | Path, exposure: float = 1.0, normalize: bool = True) -> torch.Tensor:
    """(9, 3) light of an environment-map file (normalised to mean ambient 1 by default)."""
    return sh_from_equirect(read_environment_map(path), exposure=exposure, normalize=normalize)


def sh_to_image(light: torch.Tensor, size: int = 128, albedo: Sequence[float] = (0.8, 0.8, 0.8)) -> np.ndarray:
    """A lit-sphere preview: (9, 3) or (1, 9, 3) light -> (size, size, 3) uint8 (black around)."""
    light = torch.as_tensor(light, dtype=torch.float32).reshape(9, 3)
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    r2 = x * x + y * y
    inside = r2 < 1
    n = torch.stack([x, y, -torch.sqrt((1 - r2).clamp_min(0))], -1)
    rgb = (sh_basis(n) @ light) * torch.tensor(albedo, dtype=torch.float32)
    rgb = torch.where(inside[..., None], rgb.clamp(0, 1), torch.zeros(()))
    return (rgb.numpy() * 255 + 0.5).astype(np.uint8)


__all__ = ["SH_CONSTANTS", "SH_NAMES", "PRESETS", "sh_basis", "sh_orthonormal", "shade", "direction_from_angles",
           "light_from_direction", "directional_lights", "preset", "rotate_sh", "equirect_directions", "sh_from_equirect",
           "read_environment_map", "light_from_environment_map", "sh_to_image"]
