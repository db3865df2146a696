"""A batched triangle rasterizer in pure PyTorch (CPU and GPU): triangle id, barycentrics and
depth per pixel, orthographic (weak perspective), nearest (smallest z) wins.

Conventions (DEVELOPERS.md): NDC x, y in -1..1 across the image, x right, y down; pixel
(row i, col j) has its centre at pixel coordinates (j + 0.5, i + 0.5), px = (ndc + 1) / 2 * size.
A pixel belongs to a triangle when its centre is inside it.

How (fast path): vertices are snapped to 1/256 pixel (like GPUs) and edge functions are evaluated
exactly in int64, so a pixel centre on an edge shared by two triangles goes to exactly one of them
(a top-left-style tie rule: no cracks, no double coverage). Candidate pixels come from each
triangle's bounding box (``repeat_interleave`` over box sizes, no padding); (quantised depth,
triangle id) are packed into one int64 key and reduced per pixel with ``scatter_reduce('amin')``;
barycentrics are recomputed for the winners only. Equal depths go to the smaller triangle id.
Vertices farther than 4 image sizes outside the image are clamped there (distorts only such
triangles).
"""
from __future__ import annotations

import functools


import torch

SUBPIXEL_BITS = 8
_SUB = 1 << SUBPIXEL_BITS
_HALF = _SUB // 2
_INT64_MAX = torch.iinfo(torch.int64).max


class Fragments:
    """Per-pixel rasterization result, kept compact: only the covered pixels are stored; the
    dense (B, H, W) views are built when first read (the buffers never need them).

    pix (P,): flat index into B*H*W of each covered pixel, ascending; pix_tri (P,) its triangle
    (index into ``faces``); pix_bary (P, 3) barycentrics of the pixel centre w.r.t. the
    triangle's vertices (in the order of ``faces``); pix_depth (P,) interpolated z (NDC units,
    smaller = closer).
    Dense views: tri_id (B, H, W) long, -1 where nothing covers the pixel centre; bary
    (B, H, W, 3), 0 at background; depth (B, H, W), +inf at background.
    """

    def __init__(self, shape: tuple[int, int, int], pix: torch.Tensor, pix_tri: torch.Tensor,
                 pix_bary: torch.Tensor, pix_depth: torch.Tensor):
        self.shape = tuple(shape)
        self.pix, self.pix_tri, self.pix_bary, self.pix_depth = pix, pix_tri, pix_bary, pix_depth

    @classmethod
    def from_dense(cls, tri_id: torch.Tensor, bary: torch.Tensor, depth: torch.Tensor) -> "Fragments":
        pix = tri_id.reshape(-1).ge(0).nonzero().squeeze(1)
        return cls(tuple(tri_id.shape), pix, tri_id.reshape(-1)[pix], bary.reshape(-1, 3)[pix],
                   depth.reshape(-1)[pix])

    def _dense(self, values: torch.Tensor, fill: float, channels: int | None = None) -> torch.Tensor:
        n = self.shape[0] * self.shape[1] * self.shape[2]
        size = (n,) if channels is None else (n, channels)
        out = torch.full(size, fill, dtype=values.dtype, device=values.device).index_copy_(0, self.pix, values)
        return out.reshape(self.shape + (() if channels is None else (channels,)))

    @functools.cached_property
    def tri_id(self) -> torch.Tensor:
        return self._dense(self.pix_tri, -1)

    @functools.cached_property
    def bary(self) -> torch.Tensor:
        return self._dense(self.pix_bary, 0.0, 3)

    @functools.cached_property
    def depth(self) -> torch.Tensor:
        return self._dense(self.pix_depth, float("inf"))

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool coverage."""
        return self.tri_id >= 0

    def covered(self):
        """Covered pixels only: ``(pix, tri, bary, depth)`` as described above."""
        return self.pix, self.pix_tri, self.pix_bary, self.pix_depth


def _snap(verts: torch.Tensor, size: int) -> torch.Tensor:
    """(B, V, 3) NDC -> (B, V, 2) int64 pixel coordinates in 1/256 pixel units."""
    px = (verts[..., :2].to(torch.float64) + 1) * (size / 2)
    px = px.clamp(-4 * size, 5 * size)
    return torch.round(px * _SUB).to(torch.int64)


def _triangle_setup(verts: torch.Tensor, faces: torch.Tensor, size: int, cull_backfaces: bool):
    """Per-triangle integer edge equations for all B*F triangles (flattened, batch-major)."""
    B = verts.shape[0]
    q = _snap(verts, size)[:, faces]  # (B, F, 3, 2)
    z = verts[..., 2][:, faces]  # (B, F, 3)
    x0, y0 = q[..., 0, 0], q[..., 0, 1]
    x1, y1 = q[..., 1, 0], q[..., 1, 1]
    x2, y2 = q[..., 2, 0], q[..., 2, 1]
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)  # > 0: back-facing (normal_z > 0)
    swap = area2 < 0
    keep = area2 != 0
    if cull_backfaces:
        keep &= swap  # front-facing triangles have area2 < 0 in x-right, y-down coordinates
    # orient every triangle to positive area: swap vertices 1 and 2 where needed
    xs = torch.stack([x0, torch.where(swap, x2, x1), torch.where(swap, x1, x2)], -1)  # (B, F, 3)
    ys = torch.stack([y0, torch.where(swap, y2, y1), torch.where(swap, y1, y2)], -1)
    # edge i is opposite vertex i: from a = v[i+1] to b = v[i+2]
    ax, ay = xs.roll(-1, -1), ys.roll(-1, -1)
    bx, by = xs.roll(-2, -1), ys.roll(-2, -1)
    dx, dy = bx - ax, by - ay
    A, Bc = -dy, dx
    C = -(A * ax + Bc * ay)
    incl = ((dy < 0) | ((dy == 0) & (dx > 0))).to(torch.int64)  # tie rule: e == 0 counts here
    # back to the vertex order of ``faces``: edge k opposite vertex k, so e_k / area = bary_k
    back = lambda u: torch.where(swap[..., None], u[..., [0, 2, 1]], u)  # noqa: E731
    K = B * faces.shape[0]
    itab = torch.cat([back(A), back(Bc), back(C), back(incl), area2.abs()[..., None]], -1).reshape(K, 13)
    return dict(itab=itab, keep=keep.reshape(K), ys=ys.reshape(K, 3), z=z.reshape(K, 3))


def rasterize(verts: torch.Tensor, faces: torch.Tensor, size: int, cull_backfaces: bool = False) -> Fragments:
    """Rasterize a batch of meshes sharing one topology.

    verts: (B, V, 3) x, y in NDC, z depth (any units; smaller = closer). faces: (F, 3) long.
    size: output is size x size pixels. cull_backfaces: drop triangles whose normal points away
    from the camera (+z), using counter-clockwise-from-outside faces.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B, V, 3), got {tuple(verts.shape)}")
    device = verts.device
    faces = faces.to(device=device, dtype=torch.long)
    B, F, H, W = verts.shape[0], faces.shape[0], size, size
    fdt = verts.dtype if verts.dtype.is_floating_point else torch.float32
    # a triangle with a NaN / inf vertex is dropped, and cannot disturb the other items' depths
    finite = torch.isfinite(verts).all(-1)  # (B, V)
    all_finite = bool(finite.all())
    if not all_finite:
        verts = torch.where(finite[..., None], verts, torch.zeros_like(verts))
    T = _triangle_setup(verts, faces, size, cull_backfaces)
    if not all_finite:
        T["keep"] = T["keep"] & finite[:, faces].all(-1).reshape(-1)

    # rows of each triangle's bounding box (row i is a candidate if min_y <= i*SUB + HALF <= max_y)
    ys = T["ys"]
    imin = (-torch.div(_HALF - ys.min(-1).values, _SUB, rounding_mode="floor")).clamp_min(0)
    imax = torch.div(ys.max(-1).values - _HALF, _SUB, rounding_mode="floor").clamp_max(H - 1)
    nrows = (imax - imin + 1).clamp_min(0) * T["keep"]
    live = nrows.nonzero().squeeze(1)  # global triangle ids (b * F + f) with rows
    zbuf = torch.full((B * H * W,), _INT64_MAX, dtype=torch.int64, device=device)
    id_bits = max(1, int(F).bit_length())
    depth_bits = min(62 - id_bits, 40)
    zf = verts[..., 2] if all_finite else (verts[..., 2][finite] if finite.any() else verts.new_zeros(1))
    zmin = zf.min().double()
    zscale = (2 ** depth_bits - 1) / (zf.max().double() - zmin).clamp_min(1e-12)
    if live.numel():
        # one entry per (triangle, row): the exact span of pixel columns inside the triangle
        nr = nrows[live]
        R = int(nr.sum())
        tl = torch.repeat_interleave(torch.arange(live.numel(), device=device), nr, output_size=R)
        t = live[tl]
        i = imin[t] + torch.arange(R, device=device) - (torch.cumsum(nr, 0) - nr)[tl]
        py = i * _SUB + _HALF
        P = T["itab"].index_select(0, t)
        A = P[:, 0:3]
        a = A * _SUB  # e_k(j) = a_k * j + c_k at pixel centre (j*SUB + HALF, py)
        c = A * _HALF + P[:, 3:6] * py[:, None] + P[:, 6:9]
        cp = c + P[:, 9:12]  # inside: a_k * j + cp_k > 0 for k = 0, 1, 2
        safe = torch.where(a == 0, torch.ones_like(a), a.abs())
        q = torch.div(-cp, safe, rounding_mode="floor")
        big = torch.full_like(q, 1 << 40)
        lo = torch.where(a > 0, q + 1, -big)
        lo = torch.maximum(torch.maximum(lo[:, 0], lo[:, 1]), lo[:, 2]).clamp_min(0)
        hi = torch.where(a < 0, -q - 1, big)
        hi = torch.minimum(torch.minimum(hi[:, 0], hi[:, 1]), hi[:, 2]).clamp_max(W - 1)
        out = (a == 0) & (cp <= 0)
        empty = out[:, 0] | out[:, 1] | out[:, 2]
        npx = torch.where(empty, torch.zeros_like(lo), (hi - lo + 1).clamp_min(0))
        rows = npx.nonzero().squeeze(1)
        npx, lo, t, i, a, c, P = npx[rows], lo[rows], t[rows], i[rows], a[rows], c[rows], P[rows]
        # quantised depth along the row: q(j) = q(lo) + dq * (j - lo), float64
        zc = T["z"].index_select(0, t).to(torch.float64) * (zscale / P[:, 12:13].to(torch.float64))
        dq = (a.to(torch.float64) * zc).sum(-1)
        q_lo = ((c + a * lo[:, None]).to(torch.float64) * zc).sum(-1) - zmin * zscale
        b = torch.div(t, F, rounding_mode="floor")
        fid = t - b * F
        base = (b * H + i) * W + lo
        N = int(npx.sum())
        rp = torch.repeat_interleave(torch.arange(rows.numel(), device=device), npx, output_size=N)
        k = torch.arange(N, device=device) - (torch.cumsum(npx, 0) - npx).index_select(0, rp)
        qz = torch.addcmul(q_lo.index_select(0, rp), dq.index_select(0, rp), k).clamp_(0, 2 ** depth_bits - 1)
        key = (qz.to(torch.int64) << id_bits) | fid.index_select(0, rp)
        zbuf.scatter_reduce_(0, base.index_select(0, rp) + k, key, reduce="amin", include_self=True)

    # barycentrics and depth of the winners (covered pixels only)
    hp = (zbuf != _INT64_MAX).nonzero().squeeze(1)
    tri = zbuf[hp] & ((1 << id_bits) - 1)
    b = torch.div(hp, H * W, rounding_mode="floor")
    rem = hp - b * (H * W)
    i = torch.div(rem, W, rounding_mode="floor")
    px = ((rem - i * W) * _SUB + _HALF)[:, None]
    py = (i * _SUB + _HALF)[:, None]
    g = b * F + tri
    P = T["itab"].index_select(0, g)
    e = P[:, 0:3] * px + P[:, 3:6] * py + P[:, 6:9]
    # edge values are integers up to ~2^40: divide in float32 at least (fp16 / bf16 overflow)
    cdt = torch.promote_types(fdt, torch.float32)
    pbary = e.to(cdt) / P[:, 12:13].to(cdt)
    zt = T["z"].index_select(0, g).to(cdt)
    pdepth = (pbary[:, 0] * zt[:, 0] + pbary[:, 1] * zt[:, 1] + pbary[:, 2] * zt[:, 2]).to(fdt)
    pbary = pbary.to(fdt)
    return Fragments((B, H, W), hp, tri, pbary, pdepth)


def rasterize_reference(verts: torch.Tensor, faces: torch.Tensor, size: int, cull_backfaces: bool = False) -> Fragments:
    """Slow, obviously-correct rasterizer (Python loops over pixels and triangles; tiny sizes only).

    Same snapping, tie rule and depth ordering as :func:`rasterize`, written from the definitions.
    """
    B, F = verts.shape[0], faces.shape[0]
    q = _snap(verts, size).tolist()
    zz = verts[..., 2].double().tolist()
    fl = faces.tolist()
    tri_id = torch.full((B, size, size), -1, dtype=torch.long)
    bary = torch.zeros(B, size, size, 3, dtype=torch.float64)
    depth = torch.full((B, size, size), float("inf"), dtype=torch.float64)

    def cross(a, b, p):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    def owns_tie(a, b):
        dx, dy = b[0] - a[0], b[1] - a[1]
        return dy < 0 or (dy == 0 and dx > 0)

    for bi in range(B):
        for i in range(size):
            for j in range(size):
                p = (j * _SUB + _HALF, i * _SUB + _HALF)
                best = None
                for f in range(F):
                    v = [q[bi][k] for k in fl[f]]
                    area2 = cross(v[0], v[1], v[2])
                    if area2 == 0 or (cull_backfaces and area2 > 0):
                        continue
                    order = [0, 1, 2] if area2 > 0 else [0, 2, 1]
                    w = [v[k] for k in order]
                    ok = True
                    lam = [0.0, 0.0, 0.0]
                    for k in range(3):
                        a, b = w[(k + 1) % 3], w[(k + 2) % 3]
                        e = cross(a, b, p)
                        if e < 0 or (e == 0 and not owns_tie(a, b)):
                            ok = False
                            break
                        lam[order[k]] = e / abs(area2)
                    if not ok:
                        continue
                    z = sum(lam[k] * zz[bi][fl[f][k]] for k in range(3))
                    if best is None or z < best[0]:
                        best = (z, f, lam)
                if best is not None:
                    depth[bi, i, j], tri_id[bi, i, j] = best[0], best[1]
                    bary[bi, i, j] = torch.tensor(best[2], dtype=torch.float64)
    return Fragments.from_dense(tri_id, bary.to(verts.dtype), depth.to(verts.dtype))


def interpolate_covered(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) -> (P, C) at the covered pixels (see ``Fragments.covered``)."""
    B, H, W = frags.shape
    V, C = attr.shape[1], attr.shape[2]
    pix, tri, bary, _ = frags.covered()
    b = torch.div(pix, H * W, rounding_mode="floor")
    vid = faces.to(attr.device).index_select(0, tri) + (b * V)[:, None]  # (P, 3)
    vals = attr.reshape(B * V, C).index_select(0, vid.reshape(-1)).reshape(-1, 3, C)
    w = bary.to(attr.dtype)
    return w[:, 0:1] * vals[:, 0] + w[:, 1:2] * vals[:, 1] + w[:, 2:3] * vals[:, 2]


def interpolate(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) -> (B, H, W, C) at each pixel (0 at background)."""
    B, H, W = frags.shape
    pix = frags.covered()[0]
    out = attr.new_zeros(B * H * W, attr.shape[-1])
    out.index_copy_(0, pix, interpolate_covered(attr, faces, frags))
    return out.reshape(B, H, W, -1)


__all__ = ["Fragments", "rasterize", "rasterize_reference", "interpolate", "interpolate_covered", "SUBPIXEL_BITS"]
