"""Lighting augmentation for training: ratio-image relighting of the training photos.

A person's ~20 photos (or a clip's frames) are usually all lit alike, so a model trained on them
never sees its ``shaded`` buffer change and ignores it: asked for a new light, it decodes
off-distribution colours. This augmentation relights training items with the rig's own image
model (``image = albedo * shading``, gamma-encoded, as the photometric fit assumes): for a new
light ``L'`` the face pixels are multiplied by ``shade(n, L') / shade(n, L)`` (the ratio image,
smoothed and faded out at the face's edge) and the ``shaded`` buffer is recomputed from the
``normal`` and ``albedo`` buffers. The new lights are what ``relight(..., keep_exposure=True)``
asks for at edit time: a directional light plus ambient from a random direction, brought to the
photo's exposure and colour balance (:func:`portraitrig.light.sh.match_exposure`), blended with
the photo's own light by a random strength.

The trainer feeds the appearance encoder the *unaugmented* photo and asks the denoiser for the
relit one: exactly an edit (latent of the original photo, buffers of the new light).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from portraitrig.light import sh
from portraitrig.render.spec import slices as buffer_slices

NEEDED = ("normal", "albedo", "shaded")


@dataclass(frozen=True)
class LightAugment:
    """Ranges of the random lights (degrees; the camera's axes, see :mod:`portraitrig.light.sh`)."""

    prob: float = 0.5                       # share of items relit
    azimuth: tuple[float, float] = (-90.0, 90.0)
    elevation: tuple[float, float] = (-20.0, 50.0)
    ambient: tuple[float, float] = (0.1, 0.5)
    strength: tuple[float, float] = (0.25, 1.0)
    ratio_range: tuple[float, float] = (0.2, 5.0)
    blur: float = 1 / 32                    # smoothing window of the ratio, as a share of the image size


def check_names(names) -> None:
    missing = [n for n in NEEDED if n not in names]
    if missing:
        raise ValueError(f"lighting augmentation needs the buffers {NEEDED}; the model has {tuple(names)} "
                         f"(missing {missing})")


def random_lights(light: torch.Tensor, aug: LightAugment, generator: torch.Generator) -> torch.Tensor:
    """(B, 9, 3) photo lights -> (B, 9, 3) new lights at the photos' exposure; items not drawn
    for relighting (probability 1 - prob) keep their light exactly."""
    B, dev = light.shape[0], light.device
    u = torch.rand(B, 5, device=dev, generator=generator, dtype=torch.float64)

    def span(col, r):
        return r[0] + (r[1] - r[0]) * u[:, col]

    az, el = torch.deg2rad(span(0, aug.azimuth)), torch.deg2rad(span(1, aug.elevation))
    d = torch.stack([torch.cos(el) * torch.sin(az), -torch.sin(el), -torch.cos(el) * torch.cos(az)], -1)
    new = sh.directional_lights(d, 1.0, span(2, aug.ambient)[:, None])
    new = sh.match_exposure(new, light.double())
    s = span(3, aug.strength)[:, None, None]
    new = (light.double() + s * (new - light.double())).to(light.dtype)
    apply = torch.rand(B, device=dev, generator=generator) < aug.prob
    return torch.where(apply[:, None, None], new, light)


def relight_batch(x0: torch.Tensor, buffers: torch.Tensor, light: torch.Tensor, new_light: torch.Tensor,
                  names, aug: LightAugment = LightAugment()) -> tuple[torch.Tensor, torch.Tensor]:
    """Relight images ``x0`` (B, 3, S, S) in [-1, 1] and their buffers (B, C, S, S), normalised as
    :func:`portraitrig.render.spec.to_network`, from ``light`` to ``new_light``
    (B, 9, 3 each). Returns new (x0, buffers) in the inputs' dtypes; items whose light is
    unchanged come back unchanged."""
    check_names(names)
    sl = buffer_slices(names)
    f32 = torch.float32
    n = buffers[:, sl["normal"]].to(f32)
    albedo = (buffers[:, sl["albedo"]].to(f32) + 1) / 2
    mask = (n.norm(dim=1, keepdim=True) > 0.5).to(f32)
    n_last = n.permute(0, 2, 3, 1)
    old = sh.shade(n_last, light.to(f32)).permute(0, 3, 1, 2)
    new = sh.shade(n_last, new_light.to(f32)).permute(0, 3, 1, 2)
    lo, hi = aug.ratio_range
    ratio = (new / old.clamp(min=0.05)).clamp(lo, hi)
    # smooth, faded towards the face's edge (no seam where the mesh ends)
    k = max(3, int(round(x0.shape[-1] * aug.blur)) // 2 * 2 + 1)
    field = (ratio - 1) * mask
    for _ in range(2):
        field = F.avg_pool2d(field, k, stride=1, padding=k // 2, count_include_pad=True)
    img = ((x0.to(f32) + 1) / 2 * (1 + field)).clamp(0, 1) * 2 - 1
    shaded = torch.where(mask > 0, albedo * new, 0.0) * 2 - 1
    changed = (new_light != light).flatten(1).any(1)[:, None, None, None]
    x_out = torch.where(changed, img.to(x0.dtype), x0)
    b_out = buffers.clone()
    b_out[:, sl["shaded"]] = torch.where(changed, shaded.to(buffers.dtype), buffers[:, sl["shaded"]])
    return x_out, b_out


__all__ = ["LightAugment", "NEEDED", "check_names", "random_lights", "relight_batch"]
