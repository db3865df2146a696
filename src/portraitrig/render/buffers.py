"""Render buffers of the rigged face, aligned pixel-for-pixel with the crop.

``render_buffers(params, model, size)`` -> dict of (B, C, H, W) float tensors:

- ``normal`` (3): camera-space unit normals (x right, y down, z away; facing the camera is
  (0, 0, -1)), from the posed mesh's area-weighted vertex normals, interpolated and
  renormalised; 0 at background.
- ``albedo`` (3): per-vertex albedo (``params.albedo``) interpolated; 0 at background.
- ``shading`` (3): ``sh_basis(normal) @ params.light``; 0 at background.
- ``shaded`` (3): ``albedo * shading`` (Lambertian render, what DiffusionRig conditions on).
- ``mask`` (1): 1 where the face mesh covers the pixel centre, else 0.
- ``depth`` (1): z of the posed mesh (NDC units, smaller = closer); **0 at background**.
- ``region`` (1): region id of the visible triangle (``face.base.REGIONS``), -1 at background.
- ``regions`` (len(REGIONS)): one-hot of ``region`` (skin, eye_white, iris, mouth_interior).
- ``uv`` (2): the model's texture coordinates interpolated; 0 at background.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from portraitrig.face.base import REGIONS, posed_vertices
from portraitrig.light.sh import sh_basis
from portraitrig.render.raster import Fragments, interpolate_covered, rasterize

DEFAULT_NAMES = ("normal", "albedo", "shaded", "mask", "depth")
ALL_NAMES = ("normal", "albedo", "shading", "shaded", "mask", "depth", "region", "regions", "uv")


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) vertices, (F, 3) counter-clockwise-from-outside faces -> (B, V, 3) unit
    area-weighted vertex normals pointing outwards."""
    faces = faces.to(verts.device)
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3), length = 2 * area
    n = torch.zeros_like(verts)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def render_buffers(params, model, size: int = 256, names: Sequence[str] = DEFAULT_NAMES, *,
                   cull_backfaces: bool = False, return_fragments: bool = False):
    """Render buffers (see module doc) -> ``{name: (B, C, size, size)}``.

    With ``return_fragments`` also returns the :class:`~portraitrig.render.raster.Fragments`.
    """
    unknown = [n for n in names if n not in ALL_NAMES]
    if unknown:
        raise ValueError(f"unknown buffer(s) {unknown}; known: {', '.join(ALL_NAMES)}")
    verts = posed_vertices(model, params)
    faces = model.faces.to(verts.device)
    frags = rasterize(verts, faces, size, cull_backfaces=cull_backfaces)
    out = _buffers_from_fragments(frags, verts, faces, params, model, names)
    return (out, frags) if return_fragments else out


def _buffers_from_fragments(frags: Fragments, verts, faces, params, model, names) -> dict[str, torch.Tensor]:
    # everything is computed on the covered pixels, then scattered once into a dense block
    B, H, W = frags.shape
    dt, dev = verts.dtype, verts.device
    pix, tri, _, pdepth = frags.covered()
    P = pix.shape[0]
    attrs = []
    if any(n in names for n in ("normal", "shading", "shaded")):
        attrs.append(vertex_normals(verts, faces))
    if any(n in names for n in ("albedo", "shaded")):
        attrs.append(params.albedo.to(verts))
    if "uv" in names:
        attrs.append(model.uv.to(verts).expand(B, -1, -1))
    px = interpolate_covered(torch.cat(attrs, -1), faces, frags) if attrs else None
    vals: dict[str, torch.Tensor] = {}
    o = 0
    if any(n in names for n in ("normal", "shading", "shaded")):
        n = px[:, 0:3]
        vals["normal"] = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        o = 3
        if "shading" in names or "shaded" in names:
            basis = sh_basis(vals["normal"])  # (P, 9)
            light = params.light.to(verts)
            # covered pixels are sorted by image: one small matmul per image
            ends = torch.searchsorted(pix, torch.arange(1, B + 1, device=dev) * (H * W)).tolist()
            vals["shading"] = torch.cat([basis[i0:i1] @ light[k] for k, (i0, i1) in enumerate(zip([0] + ends[:-1], ends))])
    if any(n in names for n in ("albedo", "shaded")):
        vals["albedo"] = px[:, o:o + 3]
        o += 3
        if "shaded" in names:
            vals["shaded"] = vals["albedo"] * vals["shading"]
    if "uv" in names:
        vals["uv"] = px[:, o:o + 2]
    if "mask" in names:
        vals["mask"] = torch.ones(P, 1, dtype=dt, device=dev)
    if "depth" in names:
        vals["depth"] = pdepth.to(dt)[:, None]
    if "region" in names or "regions" in names:
        reg = model.face_region.to(dev).index_select(0, tri)
        vals["region"] = reg.to(dt)[:, None]
        if "regions" in names:
            vals["regions"] = (reg[:, None] == torch.arange(len(REGIONS), device=dev)).to(dt)
    cols = [vals[k] for k in names]
    sizes = [c.shape[1] for c in cols]
    dense = torch.zeros(sum(sizes), B * H * W, dtype=dt, device=dev)  # channel-major: fast scatter
    if "region" in names:  # background region id is -1
        dense[sum(sizes[: list(names).index("region")])] = -1
    dense.index_copy_(1, pix, torch.cat(cols, 1).T.contiguous())
    dense = dense.reshape(-1, B, H, W).permute(1, 0, 2, 3).contiguous()
    return dict(zip(names, dense.split(sizes, dim=1)))


class Renderer:
    """Keeps a face model on a device and renders buffers of any params at a fixed size."""

    def __init__(self, model, size: int = 256, device: str | torch.device = "cpu",
                 names: Sequence[str] = DEFAULT_NAMES, cull_backfaces: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.size, self.names, self.cull_backfaces = size, tuple(names), cull_backfaces

    @torch.no_grad()
    def __call__(self, params, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        return render_buffers(params.to(self.device), self.model, self.size, names or self.names,
                              cull_backfaces=self.cull_backfaces)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def buffers_to_images(buffers: dict[str, torch.Tensor], index: int = 0) -> dict[str, np.ndarray]:
    """Item ``index`` of each buffer -> uint8 image for saving: (H, W, 3) for colour buffers,
    (H, W) for one-channel ones. Normals map to ``(n + 1) / 2`` (background black), depth to
    near = bright (min..max over covered pixels -> 1..0.2, background 0), region ids to grey
    levels, one-hot regions to an RGB colouring, uv to (u, v, 0)."""
    out = {}
    cover = None
    if "mask" in buffers:
        cover = buffers["mask"][index, 0].detach().cpu().numpy() > 0.5
    for name, t in buffers.items():
        a = t[index].detach().float().cpu().permute(1, 2, 0).numpy()
        if name == "normal":
            m = np.linalg.norm(a, axis=-1, keepdims=True) > 0
            img = _to_uint8(np.where(m, (a + 1) / 2, 0))
        elif name == "depth":
            d = a[..., 0]
            m = cover if cover is not None else d != 0
            img = np.zeros(d.shape, np.uint8)
            if m.any():
                lo, hi = d[m].min(), d[m].max()
                img[m] = _to_uint8(1 - 0.8 * (d[m] - lo) / max(hi - lo, 1e-12))
        elif name == "region":
            img = _to_uint8((a[..., 0] + 1) / len(REGIONS))
        elif name == "regions":
            pal = np.array([[0.8, 0.6, 0.5], [1, 1, 1], [0.2, 0.4, 1.0], [0.8, 0.1, 0.2]], np.float32)[: a.shape[-1]]
            img = _to_uint8(a @ pal)
        elif name == "uv":
            img = _to_uint8(np.concatenate([a, np.zeros_like(a[..., :1])], -1))
        elif a.shape[-1] == 1:
            img = _to_uint8(a[..., 0])
        else:
            img = _to_uint8(a[..., :3])
        out[name] = img
    return out


@torch.no_grad()
def overlay_mesh(image: np.ndarray, params, model, size: int | None = None, *, mode: str = "wire",
                 colour: Sequence[int] = (80, 255, 120), alpha: float = 0.6, index: int = 0) -> np.ndarray:
    """Draw the fitted mesh over a square crop ``image`` (H, W, 3) uint8 -> new uint8 image.

    mode 'wire': edges of the visible triangles (after the depth test); 'shaded': the Lambertian
    render of ``params`` (light, albedo) blended with ``alpha`` where the mesh covers the crop.
    """
    import cv2

    img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., :3])
    if img.ndim != 3 or img.shape[0] != img.shape[1]:
        raise ValueError(f"overlay_mesh needs a square (H, W, 3) crop, got {img.shape}")
    size = size or img.shape[0]
    p = params[index].to("cpu")
    if mode == "shaded":
        buf = render_buffers(p, model.to("cpu"), size, names=("shaded", "mask"))
        rgb = _to_uint8(buf["shaded"][0].permute(1, 2, 0).numpy()).astype(np.float32)
        m = buf["mask"][0, 0].numpy()[..., None] * alpha
        if size != img.shape[0]:
            rgb = cv2.resize(rgb, img.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
            m = cv2.resize(m, img.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)[..., None]
        return (img * (1 - m) + rgb * m + 0.5).astype(np.uint8)
    if mode != "wire":
        raise ValueError(f"unknown overlay mode {mode!r} (use 'wire' or 'shaded')")
    verts = posed_vertices(model.to("cpu"), p)
    faces = model.faces.to("cpu")
    frags = rasterize(verts, faces, size)
    visible = torch.unique(frags.tri_id[frags.tri_id >= 0])
    scale = img.shape[0] / size
    pts = ((verts[0, :, :2] + 1) * (size / 2) * scale).numpy()
    tris = pts[faces[visible].numpy()]  # (T, 3, 2)
    layer = img.copy()
    shift = 4
    cv2.polylines(layer, list(np.round(tris * (1 << shift)).astype(np.int32)), True,
                  tuple(int(c) for c in colour), 1, cv2.LINE_AA, shift)
    return (img * (1 - alpha) + layer * alpha + 0.5).astype(np.uint8)


__all__ = ["DEFAULT_NAMES", "ALL_NAMES", "vertex_normals", "render_buffers", "Renderer", "buffers_to_images",
           "overlay_mesh"]
