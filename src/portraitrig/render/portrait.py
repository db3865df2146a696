"""Whole-portrait geometry proxy and relighting, in a crop's frame.

The face mesh covers the face only; hair, ears, neck and shoulders are outside it. This module
gives the whole person smooth camera-space normals (x right, y down, z away from the camera,
unit, background 0; see DEVELOPERS.md) and relights it with the rig's image model
``image = albedo * shading`` (gamma-encoded, as the photometric fit assumes):

- **proxy**: the person's silhouette (person mask united with the face mask) is *inflated*:
  the height field ``h`` solves ``laplacian(h) = -4`` (pixels) inside the silhouette with
  ``h = 0`` on the background (the crop's own border is open: a shoulder cut by the crop does
  not bend down there), solved by multigrid. ``sqrt(h)`` is exactly a sphere over a disc and a
  round tube over a strip, so a head is a dome and a neck a cylinder; its normal is
  ``normalize(-dh/dx, -dh/dy, -2 sqrt(h))`` (no division: finite at the silhouette, where it
  turns sideways).
- **join**: inside the face mesh its own normals are kept as they are; outside it the proxy is
  shifted by the mesh-minus-proxy difference found along the mesh border, carried outwards and
  faded out over a band (``feather``), so both sides meet: the normals, and every shading made
  from them, are continuous across the border (no seam), and change smoothly beyond it.
- **relight**: the ratio ``shade(n, new) / shade(n, old)`` (clamped, optionally smoothed by a
  normalised blur inside the person) multiplies the person's pixels; the background keeps its
  light or, with ``background="relight"``, is lit as a wall facing the camera by the same
  environment. Lights are any (B, 9, 3) SH lights (presets, directions, HDR maps through
  :mod:`portraitrig.light.sh`); a batch of video frames may carry one light per frame.

All functions take batched torch tensors (B, C, H, W) on any device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from portraitrig.accel.constants import device_constant
from portraitrig.light.sh import shade

BACKGROUNDS = ("keep", "relight")
_LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------- small image ops
def _box1d(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Mean over a window of ``k`` (odd) along ``dim`` (-1 or -2), zeros beyond the image; by
    running sums, so the cost does not grow with ``k``."""
    r = k // 2
    pad = (r + 1, r, 0, 0) if dim == -1 else (0, 0, r + 1, r)
    c = F.pad(x, pad).cumsum(dim)
    n = x.shape[dim]
    return (c.narrow(dim, k, n) - c.narrow(dim, 0, n)) / k


def _box_blur(x: torch.Tensor, k: int, passes: int = 1) -> torch.Tensor:
    """Separable k x k box blur with zero padding (``passes`` times)."""
    if k <= 1:
        return x
    for _ in range(passes):
        if k <= 5:  # small windows: one pooling op
            x = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True)
        else:
            x = _box1d(_box1d(x, k, -1), k, -2)
    return x


def _normalised_blur(x: torch.Tensor, weight: torch.Tensor, k: int, passes: int = 2) -> torch.Tensor:
    """Blur of ``x`` over where ``weight`` > 0 only (normalised convolution); 0 where no weight
    is within reach."""
    num = _box_blur(x * weight, k, passes)
    den = _box_blur(weight, k, passes)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.zeros_like(num))


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(m, 2 * r + 1, stride=1, padding=r) if r > 0 else m


def _erode(m: torch.Tensor, r: int) -> torch.Tensor:
    """Erosion that treats the outside of the image as inside (open crop border)."""
    if r <= 0:
        return m
    return -F.max_pool2d(F.pad(-m, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)


def _odd(n: float) -> int:
    return max(1, int(round(n)) // 2 * 2 + 1)


def _check(name: str, t: torch.Tensor, channels: int) -> None:
    if t.ndim != 4 or t.shape[1] != channels:
        raise ValueError(f"{name} must be (B, {channels}, H, W), got {tuple(t.shape)}")


# ---------------------------------------------------------------------- inflation
def _neighbours(h: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours of (B, 1, H, W) ``h``, replicated at the image border (zero
    normal derivative)."""
    cross = device_constant(((0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 0.0)), h.dtype, h.device)
    return F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), cross.view(1, 1, 3, 3))


def _relax(h, f, dom, s2: float, eps: float, iters: int, colours):
    """Red-black Gauss-Seidel sweeps of ``(nb(h) - 4 h) / s2 - eps h = -f`` on ``dom``, 0 off it."""
    for _ in range(iters):
        for c in colours:
            new = (_neighbours(h) + s2 * f) / (4 + eps * s2)
            h = torch.where(c & dom, new, h)
    return torch.where(dom, h, torch.zeros_like(h))


def _residual(h, f, dom, s2: float, eps: float):
    r = f + (_neighbours(h) - 4 * h) / s2 - eps * h
    return torch.where(dom, r, torch.zeros_like(r))


def _checkerboard(shape, device):
    H, W = shape[-2:]
    ii = torch.arange(H, device=device)[:, None]
    jj = torch.arange(W, device=device)[None, :]
    red = ((ii + jj) % 2 == 0)[None, None]
    return red, ~red


def _vcycle(h, f, doms, level: int, eps: float, pre: int = 3, post: int = 3, coarse: int = 60):
    dom = doms[level]
    s2 = float(4 ** level)
    colours = _checkerboard(dom.shape, dom.device)
    if level == len(doms) - 1:
        return _relax(h, f, dom, s2, eps, coarse, colours)
    h = _relax(h, f, dom, s2, eps, pre, colours)
    r = _residual(h, f, dom, s2, eps)
    rc = F.avg_pool2d(r, 2, stride=2, ceil_mode=True)
    ec = _vcycle(torch.zeros_like(rc), rc, doms, level + 1, eps, pre, post, coarse)
    e = F.interpolate(ec, size=h.shape[-2:], mode="bilinear", align_corners=False)
    h = torch.where(dom, h + e, h)
    return _relax(h, f, dom, s2, eps, post, colours)


def inflate(domain: torch.Tensor, cycles: int = 4, min_size: int = 8) -> torch.Tensor:
    """Height field of an inflated silhouette: ``domain`` (B, 1, H, W) bool -> (B, 1, H, W)
    ``h`` in squared pixels with ``laplacian(h) = -4`` inside, 0 on the background; the image
    border is open (zero normal derivative). Over a disc of radius R, ``h = R^2 - r^2``.

    A faint screening (length twice the image size) keeps ``h`` finite when nothing of the
    image is background (then ``h`` is flat)."""
    dom = domain.bool()
    doms = [dom]
    while min(doms[-1].shape[-2:]) > min_size:
        doms.append(F.avg_pool2d(doms[-1].float(), 2, stride=2, ceil_mode=True) > 0.5)  # majority
    eps = 1.0 / (2.0 * max(dom.shape[-2:])) ** 2
    f = torch.where(dom, 4.0, 0.0).float()
    # full multigrid start: solve coarse, interpolate up, then V-cycles at the finest level
    fs = [f]
    for _ in doms[1:]:
        fs.append(F.avg_pool2d(fs[-1], 2, stride=2, ceil_mode=True))
    h = torch.zeros_like(fs[-1])
    for level in range(len(doms) - 1, -1, -1):
        if level < len(doms) - 1:
            h = F.interpolate(h, size=doms[level].shape[-2:], mode="bilinear", align_corners=False)
        h = _vcycle(h, fs[level], doms, level, eps)
    for _ in range(cycles - 1):
        h = _vcycle(h, f, doms, 0, eps)
    return h.clamp_min(0)


def inflated_normals(domain: torch.Tensor, roundness: float = 1.0, cycles: int = 4) -> torch.Tensor:
    """(B, 1, H, W) bool silhouette -> (B, 3, H, W) camera-space unit normals of its inflation,
    the surface ``z = -roundness * sqrt(h)``: a sphere over a disc at ``roundness`` 1, flatter
    below (turning sideways only at the very silhouette); 0 off the silhouette."""
    if not roundness > 0:
        raise ValueError(f"roundness must be > 0, got {roundness!r}")
    h = inflate(domain, cycles)
    p = F.pad(h, (1, 1, 1, 1), mode="replicate")
    hx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    hy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    n = torch.cat([-roundness * hx, -roundness * hy, -2 * h.sqrt()], 1)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.where(domain.bool(), n, torch.zeros_like(n))


# ---------------------------------------------------------------------- whole-portrait normals
def person_domain(face_mask: torch.Tensor, person_mask: torch.Tensor, threshold: float = 0.5,
                  smooth: int = 3) -> torch.Tensor:
    """(B, 1, H, W) bool: where the person is (person mask above ``threshold`` after a
    ``smooth`` x ``smooth`` box blur that rounds off pixel steps, or the face mesh)."""
    p = F.avg_pool2d(F.pad(person_mask.float(), (smooth // 2,) * 4, mode="replicate"), smooth, stride=1) \
        if smooth > 1 else person_mask.float()
    return (p > threshold) | (face_mask > 0.5)


def border_offset(face_normal: torch.Tensor, face_mask: torch.Tensor, proxy: torch.Tensor,
                  reach: float) -> torch.Tensor:
    """(B, 3, H, W) correction of the proxy's normals outside the face mesh: on the first pixels
    outside the mesh border it is the mesh's normal minus the proxy's on the last pixels inside
    (carried outwards pixel by pixel, each new pixel taking the mean of its known neighbours),
    fading smoothly (a smoothstep of the distance) to 0 at ``reach`` pixels; 0 inside the mesh."""
    face = (face_mask > 0.5).to(proxy.dtype)
    steps = max(int(math.ceil(reach)), 0)
    if steps == 0:
        return torch.zeros_like(proxy)
    known = face * (1 - _erode(face, 1))
    d = (face_normal.to(proxy.dtype) - proxy) * known
    dist = torch.zeros_like(face)
    for step in range(1, steps + 1):
        both = _box_blur(torch.cat([d * known, known], 1), 3)
        num, den = both[:, :3], both[:, 3:]
        grown = ((known > 0) | (den > 1e-6) & (face == 0)).to(d.dtype)
        d = torch.where(known > 0, d, num / den.clamp_min(1e-6))
        dist = dist + step * (grown - known)
        known = grown
    # soften the creases where parts carried from different stretches of the border meet
    d = _normalised_blur(d, known, _odd(reach / 4), passes=2)
    t = (dist / reach).clamp(0, 1)
    fade = (1 - t * t * (3 - 2 * t)) * known * (1 - face)
    return d * fade


def portrait_normals(face_normal: torch.Tensor, face_mask: torch.Tensor, person_mask: torch.Tensor,
                     feather: float = 1 / 8, roundness: float = 1.0, threshold: float = 0.5,
                     cycles: int = 4) -> torch.Tensor:
    """Smooth camera-space unit normals of the whole person (see module doc).

    face_normal: (B, 3, H, W) the face mesh's ``normal`` buffer; face_mask: (B, 1, H, W) its
    ``mask``; person_mask: (B, 1, H, W) person probability in [0, 1] of the same crop.
    Inside the mesh its own normals are kept; outside, the proxy's, corrected near the border
    (:func:`border_offset`) over ``feather`` x the image side so both sides meet. roundness: of
    the proxy (see :func:`inflated_normals`). Returns (B, 3, H, W), 0 on the background."""
    _check("face_normal", face_normal, 3)
    _check("face_mask", face_mask, 1)
    _check("person_mask", person_mask, 1)
    dt = face_normal.dtype if face_normal.is_floating_point() else torch.float32
    dom = person_domain(face_mask, person_mask, threshold)
    proxy = inflated_normals(dom, roundness, cycles).to(dt)
    outer = proxy + border_offset(face_normal, face_mask, proxy, feather * max(face_mask.shape[-2:]))
    n = torch.where(face_mask > 0.5, face_normal.to(dt), outer)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.where(dom, n, torch.zeros_like(n))


# ---------------------------------------------------------------------- shading and relighting
def portrait_shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) unit normals, (B, 9, 3) SH light -> (B, 3, H, W) shading
    (``sh_basis(n) @ light``); 0 where the normal is 0 (background)."""
    _check("normals", normals, 3)
    s = shade(normals.permute(0, 2, 3, 1), light.to(normals.dtype)).permute(0, 3, 1, 2)
    valid = normals.norm(dim=1, keepdim=True) > 0.5
    return torch.where(valid, s, torch.zeros_like(s))


def split_albedo(image: torch.Tensor, normals: torch.Tensor, light: torch.Tensor,
                 min_shading: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Albedo and shading of the person: ``image = albedo * shading``. image (B, 3, H, W) in
    [0, 1], normals (B, 3, H, W), light (B, 9, 3) -> (albedo, shading), each (B, 3, H, W),
    0 on the background; the shading is clamped below at ``min_shading`` for the division."""
    s = portrait_shading(normals, light)
    valid = normals.norm(dim=1, keepdim=True) > 0.5
    albedo = torch.where(valid, image / s.clamp_min(min_shading), torch.zeros_like(image))
    return albedo, s


def soften_border(field: torch.Tensor, valid: torch.Tensor, face_mask: torch.Tensor | None,
                  smoothing: float = 1 / 64, face_band: float = 1 / 64) -> torch.Tensor:
    """A (B, C, H, W) field over the person (``valid`` (B, 1, H, W), 1 where it is defined)
    smoothed over a window of ``smoothing`` x the image side (0: returned as it is), inside
    ``valid`` only. With the face mesh's ``face_mask`` (B, 1, H, W) in [0, 1] the mesh's inside
    farther than ``face_band`` x the image side from its border keeps the field as it is, and the
    smoothing acts on the band along the border and beyond, where the mesh's normals meet the
    proxy's (what would show as a seam), blending in without a step."""
    k = _odd(smoothing * max(field.shape[-2:])) if smoothing > 0 else 1
    if k <= 1:
        return field
    smooth = _normalised_blur(field, valid.to(field.dtype), k)
    if face_mask is None:
        return smooth
    r = max(1, round(face_band * max(field.shape[-2:])))
    sharp = _box_blur(_erode(face_mask.to(field.dtype).clamp(0, 1), r), 2 * (r // 2) + 1)   # eroded, soft edge
    return sharp * field + (1 - sharp) * smooth


_FRONT = (0.0, 0.0, -1.0)


def relight_image(image: torch.Tensor, normals: torch.Tensor, person_mask: torch.Tensor,
                  old_light: torch.Tensor, new_light: torch.Tensor, background: str = "keep",
                  ratio_range: tuple[float, float] = (0.2, 5.0), smoothing: float = 1 / 64,
                  min_shading: float = 0.05, face_mask: torch.Tensor | None = None,
                  face_band: float = 1 / 64) -> torch.Tensor:
    """Relight the whole person from ``old_light`` to ``new_light`` (B, 9, 3 each).

    image: (B, 3, H, W) in [0, 1]; normals: (B, 3, H, W) from :func:`portrait_normals`;
    person_mask: (B, 1, H, W) in [0, 1] (soft edges blend the relit person into the
    background). The person's pixels are multiplied by the shading ratio new / old, clamped
    to ``ratio_range`` and smoothed over a window of ``smoothing`` x the image side (0: none)
    inside the person only. ``face_mask`` (B, 1, H, W) in [0, 1], the face mesh's: where given,
    the smoothing spares the mesh's inside farther than ``face_band`` x the image side from its
    border (the mesh's own normals, whose shading the rig's light fit reads: smoothed, the
    relit face drifts from the requested light) and acts on the band along the border, where
    the mesh's normals meet the proxy's (unsmoothed there, the border shows a seam).
    ``background``: ``"keep"`` leaves it as it is, ``"relight"`` lights it as a camera-facing
    wall by the same lights. Returns (B, 3, H, W) in [0, 1]."""
    _check("image", image, 3)
    _check("normals", normals, 3)
    _check("person_mask", person_mask, 1)
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if face_mask is not None:
        _check("face_mask", face_mask, 1)
        if face_mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"face_mask must be {tuple(image.shape[-2:])} like the image, "
                             f"got {tuple(face_mask.shape[-2:])}")
    lo, hi = ratio_range
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f"ratio_range must satisfy 0 < lo <= 1 <= hi, got {ratio_range}")
    dt = image.dtype
    old_light, new_light = old_light.to(dt), new_light.to(dt)
    valid = (normals.norm(dim=1, keepdim=True) > 0.5).to(dt)
    old = portrait_shading(normals.to(dt), old_light)
    new = portrait_shading(normals.to(dt), new_light)
    field = ((new / old.clamp_min(min_shading)).clamp(lo, hi) - 1) * valid
    field = soften_border(field, valid, face_mask, smoothing, face_band)
    # soft mask edges just outside the normals' domain take the nearest ratios
    rim = _normalised_blur(field, valid, 5, passes=1)
    field = torch.where(valid > 0, field, rim)
    m = person_mask.to(dt).clamp(0, 1)
    if background == "relight":
        front = device_constant(_FRONT, dt, image.device).view(1, 3, 1, 1).expand(len(image), 3, 1, 1)
        wall = portrait_shading(front, new_light) / portrait_shading(front, old_light).clamp_min(min_shading)
        bg_field = wall.clamp(lo, hi) - 1  # (B, 3, 1, 1)
    else:
        bg_field = torch.zeros_like(field)
    return (image * (1 + m * field + (1 - m) * bg_field)).clamp(0, 1)


def face_only_relight(image: torch.Tensor, face_normal: torch.Tensor, face_mask: torch.Tensor,
                      old_light: torch.Tensor, new_light: torch.Tensor,
                      ratio_range: tuple[float, float] = (0.2, 5.0), min_shading: float = 0.05) -> torch.Tensor:
    """Ratio relighting of the face mesh's pixels alone (the rest keeps its light): the
    baseline whose hard edge at the mesh border :func:`seam_score` measures. Shapes as
    :func:`relight_image`."""
    f = (face_mask > 0.5).to(image.dtype)
    n = face_normal.to(image.dtype) * f
    old = portrait_shading(n, old_light.to(image.dtype))
    new = portrait_shading(n, new_light.to(image.dtype))
    ratio = (new / old.clamp_min(min_shading)).clamp(*ratio_range)
    return (image * (1 + f * (ratio - 1))).clamp(0, 1)


# ---------------------------------------------------------------------- seam measure
def _grad_mag(image: torch.Tensor) -> torch.Tensor:
    w = device_constant(_LUMA, image.dtype, image.device).view(1, 3, 1, 1)
    y = (image * w).sum(1, keepdim=True) if image.shape[1] == 3 else image
    p = F.pad(y, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    return (gx * gx + gy * gy).sqrt()


def seam_score(image: torch.Tensor, face_mask: torch.Tensor, person_mask: torch.Tensor | None = None,
               inner: tuple[int, int] = (3, 8), floor: float = 1e-3) -> torch.Tensor:
    """How much the face mesh's border shows in an image: mean luma-gradient magnitude on the
    border (pixels within 1 px of it) over the mean on a ring just inside it (``inner`` =
    (from, to) pixels in). ~1 when the border is not visible, well above 1 for a seam.

    image: (B, 3, H, W) (or (B, 1, H, W)) in [0, 1]; face_mask: (B, 1, H, W); person_mask:
    optional (B, 1, H, W): only pixels at least ``inner[1]`` px inside the person count (so the
    person's own outline is not taken for a seam). ``floor`` is added to both means (gradient units per
    pixel) so flat images score 1. Returns (B,)."""
    g = _grad_mag(image)
    f = (face_mask > 0.5).to(image.dtype)
    band = _dilate(f, 1) * (1 - _erode(f, 1))
    ring = _erode(f, inner[0]) * (1 - _erode(f, inner[1]))
    if person_mask is not None:
        keep = _erode((person_mask > 0.5).to(image.dtype), inner[1])
        band, ring = band * keep, ring * keep
    mb = (g * band).sum((1, 2, 3)) / band.sum((1, 2, 3)).clamp_min(1)
    mr = (g * ring).sum((1, 2, 3)) / ring.sum((1, 2, 3)).clamp_min(1)
    return (mb + floor) / (mr + floor)


def angular_error_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel angle (degrees) between two (B, 3, H, W) unit-normal fields -> (B, 1, H, W)."""
    c = (a * b).sum(1, keepdim=True).clamp(-1, 1)
    return torch.rad2deg(torch.acos(c))


__all__ = ["BACKGROUNDS", "angular_error_deg", "border_offset", "face_only_relight", "inflate", "inflated_normals",
           "person_domain", "portrait_normals", "portrait_shading", "relight_image", "seam_score", "soften_border",
           "split_albedo"]
