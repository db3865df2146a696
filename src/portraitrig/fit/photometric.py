"""Photometric fit: SH light (B, 9, 3) and per-vertex albedo (B, V, 3) from aligned crops, given
the geometry (pose, identity, expression, gaze) already fitted.

Image model (gamma-encoded space, like the renders): ``I(p) = albedo(p) * (sh_basis(n(p)) @ L)``
with ``albedo(p)`` the barycentric interpolation of vertex albedos. Every covered, front-facing
pixel that passes the depth test of the rasterized z-buffer (so occluded vertices get nothing)
and lies in ``valid_mask`` is an observation.

Solve:

0. warm-up: light by least squares with a per-region constant albedo (the median of
   colour / shading), on the best-fitting 70 % of the pixels (least trimmed squares, iterated),
   so hair over the forehead, beards, glasses or occluders cannot pull the light;
then ``n_iters`` times:
1. albedo: linear least squares given the light, with a graph-Laplacian smoothness prior on the
   mesh (edges across regions cut) and a prior towards the robust (median) albedo of each region,
   so smooth shading gradients go to the light, not the albedo;
2. robust weights (Cauchy IRLS on the residuals) so what the model cannot explain (specular
   highlights, hair) keeps little influence;
3. light: linear least squares per image given the albedo, on skin pixels only (eyes and mouth
   interior are not Lambertian skin), with a weak prior that its directional part is white.

Scale convention (albedo * light is ambiguous per channel): the light is scaled so the mean
shading over the visible skin pixels is 1 in each channel (over all images when the albedo is
shared); the albedo then carries the observed skin colour and its brightness.
"""
from __future__ import annotations

import torch
import torch.nn.functional as Fn

from portraitrig.face.base import REGIONS, posed_vertices
from portraitrig.light.sh import sh_basis
from portraitrig.render.buffers import vertex_normals
from portraitrig.render.raster import rasterize


def vertex_regions(model) -> torch.Tensor:
    """(V,) region id per vertex: the most frequent region of its triangles (ties -> lower id;
    vertices of no triangle: skin)."""
    faces = model.faces
    V, R = model.n_vertices, len(REGIONS)
    counts = torch.zeros(V * R, dtype=torch.long, device=faces.device)
    idx = faces * R + model.face_region.to(faces.device)[:, None]
    counts.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=torch.long, device=faces.device))
    return counts.reshape(V, R).argmax(-1)


def mesh_laplacian(faces: torch.Tensor, n_vertices: int, vregion: torch.Tensor | None = None,
                   dtype=torch.float32) -> torch.Tensor:
    """(V, V) dense graph Laplacian D - A of the mesh edges (uniform weights); edges joining
    vertices of different regions are left out when ``vregion`` is given."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(-1).values
    key = torch.unique(e[:, 0] * n_vertices + e[:, 1])  # 1-D unique (unique(dim=0) is slow)
    e = torch.stack([torch.div(key, n_vertices, rounding_mode="floor"), key % n_vertices], -1)
    if vregion is not None:
        e = e[vregion[e[:, 0]] == vregion[e[:, 1]]]
    A = torch.zeros(n_vertices, n_vertices, dtype=dtype, device=faces.device)
    A[e[:, 0], e[:, 1]] = 1
    A[e[:, 1], e[:, 0]] = 1
    return torch.diag(A.sum(1)) - A


@torch.no_grad()
def fit_appearance(images: torch.Tensor, params, model, *, shared_albedo: bool = False,
                   valid_mask: torch.Tensor | None = None, n_iters: int = 2, fit_size: int = 128,
                   smooth_weight: float = 2.0, prior_weight: float = 0.05, light_ridge: float = 1e-3,
                   min_facing: float = 0.1, trim: float = 0.7, warmup: int = 10,
                   light_colour_weight: float = 0.1, fit_albedo: bool = True):
    """Fit ``light`` (B, 9, 3) and ``albedo`` (B, V, 3) of ``params`` to ``images``.

    images: (B, 3, H, W) float in [0, 1], the aligned square crops the geometry was fitted on.
    valid_mask: optional (B, 1, H, W) or (B, H, W), nonzero where the crop holds real image
        content (crops that run past the photo's border are padded).
    shared_albedo: one albedo for all B images (an album / a video of one person), one light per
        image; the returned albedo is repeated B times.
    fit_size: images larger than this are area-downsampled to it first (speed; the albedo is
        per vertex anyway). smooth_weight / prior_weight: strengths of the Laplacian and of the
        region-median priors relative to the data of an average vertex. min_facing: pixels whose
        normal has ``-n_z`` below it (grazing) are ignored. trim: fraction of the pixels kept
        (best-fitting) while the light is first estimated, for at most ``warmup`` rounds.
        light_colour_weight: strength of the prior that the directional part of the light (SH
        bands 1, 2) is white, i.e. the same in R, G, B (ambient colour stays free); it keeps
        colour gradients of the skin from turning into oddly coloured lights.
    fit_albedo: False keeps ``params.albedo`` (a known albedo, e.g. estimated once for a long
        video) and solves only each image's light (robustly, as above); images are then
        independent of each other and the light is not rescaled.
    Returns new params (other fields shared with the input).
    """
    dev, dt = params.scale.device, params.scale.dtype
    images = images.to(dev, dt)
    B, _, H, W = images.shape
    if H != W:
        raise ValueError(f"crops must be square, got {H}x{W}")
    if len(params) != B:
        raise ValueError(f"{B} images but {len(params)} parameter sets")
    S = min(fit_size, H)
    valid = torch.ones(B, 1, H, W, device=dev, dtype=dt) if valid_mask is None else \
        valid_mask.to(dev, dt).reshape(B, 1, H, W)
    if S != H:
        images = Fn.interpolate(images, size=(S, S), mode="area")
        valid = Fn.interpolate(valid, size=(S, S), mode="area")
    faces = model.faces.to(dev)
    V = model.n_vertices
    verts = posed_vertices(model, params).to(dt)
    frags = rasterize(verts, faces, S)
    normals_v = vertex_normals(verts, faces)

    # ---- observations: covered, front-facing, valid pixels
    tid = frags.tri_id.reshape(-1)
    pix = (tid >= 0).nonzero().squeeze(1)
    b = torch.div(pix, S * S, rounding_mode="floor")
    vid = faces[tid[pix]]  # (P, 3)
    bary = frags.bary.reshape(-1, 3)[pix].to(dt)
    n = (bary[..., None] * normals_v[b[:, None], vid]).sum(1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    col = images.permute(0, 2, 3, 1).reshape(-1, 3)[pix]
    w0 = valid.reshape(-1)[pix] * (-n[:, 2] >= min_facing)
    keep = (w0 > 0.5).nonzero().squeeze(1)
    b, vid, bary, n, col, w0 = b[keep], vid[keep], bary[keep], n[keep], col[keep], w0[keep]
    preg = model.face_region.to(dev)[tid[pix[keep]]]
    skin = (preg == REGIONS["skin"]).to(dt)
    Y = sh_basis(n)  # (P, 9)
    P = b.shape[0]
    G = 1 if shared_albedo else B
    g = torch.zeros_like(b) if shared_albedo else b

    vreg = vertex_regions(model).to(dev)
    prior_mat = smooth_weight * mesh_laplacian(faces, V, vreg, dt) + prior_weight * torch.eye(V, device=dev, dtype=dt)
    light = params.light.to(dev, dt).clone()
    albedo = params.albedo.to(dev, dt)[:1 if shared_albedo else B].clone()
    if albedo.shape[0] != G:
        albedo = albedo.expand(G, V, 3).clone()
    weight = w0.clone()
    if P == 0:
        return params.replace(light=light, albedo=albedo.expand(B, V, 3).clone() if shared_albedo else albedo)

    if not fit_albedo:
        G, g = B, b
        albedo = params.albedo.to(dev, dt).expand(B, V, 3).contiguous()
    YY = (Y[:, :, None] * Y[:, None, :]).reshape(P, 81)
    bounds = [0] + torch.cumsum(torch.bincount(b, minlength=B), 0).tolist()  # pixels are sorted by image
    ridge = torch.tensor([0.0] + [light_ridge] * 8, device=dev, dtype=dt)
    # sum over k >= 1 of the channel variance of L_k: (I_3 - 1/3) kron diag(0, 1, ..., 1)
    colour_prior = torch.kron(torch.eye(3, device=dev, dtype=dt) - 1 / 3,
                              torch.diag(torch.tensor([0.0] + [1.0] * 8, device=dev, dtype=dt)))

    gvid = (vid + (g * V)[:, None]).reshape(-1)  # rows of the flattened (G * V, 3) albedo

    def interp(alb):
        av = alb.reshape(G * V, 3).index_select(0, gvid).reshape(P, 3, 3)
        return bary[:, 0:1] * av[:, 0] + bary[:, 1:2] * av[:, 1] + bary[:, 2:3] * av[:, 2]  # (P, 3)

    def solve_light(alb, wts):
        # linear least squares per image and channel on skin pixels: I_c = a_c * (Y @ L_c)
        a = interp(alb)
        wa = (wts * skin)[:, None] * a
        M = torch.stack([YY[i0:i1].T @ (wa[i0:i1] * a[i0:i1]) for i0, i1 in zip(bounds[:-1], bounds[1:])])
        r = torch.stack([Y[i0:i1].T @ (wa[i0:i1] * col[i0:i1]) for i0, i1 in zip(bounds[:-1], bounds[1:])])
        M = M.reshape(B, 9, 9, 3).permute(0, 3, 1, 2)  # (B, C, 9, 9)
        diag = M.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(1e-8)  # (B, C, 1)
        M = M + torch.diag_embed(diag * ridge) + 1e-9 * torch.eye(9, device=dev, dtype=dt)
        # one 27 x 27 system per image: channel blocks + the white-directional-light prior
        big = torch.zeros(B, 27, 27, device=dev, dtype=dt)
        for c in range(3):
            big[:, 9 * c:9 * c + 9, 9 * c:9 * c + 9] = M[:, c]
        big = big + light_colour_weight * diag.mean(1)[:, :, None] * colour_prior
        L = torch.linalg.solve(big, r.permute(0, 2, 1).reshape(B, 27, 1))[..., 0]
        L = L.reshape(B, 3, 9).transpose(1, 2)  # (B, 9, 3)
        return L, (Y[:, None, :] @ L[b]).squeeze(1)  # light, per-pixel shading (P, 3)

    def residual(alb, shading):
        a = interp(alb)
        return (col - a * shading).abs().mean(-1)

    def per_image(res, fn):
        out = []
        for i0, i1 in zip(bounds[:-1], bounds[1:]):
            r = res[i0:i1][w0[i0:i1] > 0]
            out.append(fn(r) if r.numel() else res.new_ones(()))
        return torch.stack(out)

    def robust_weights(alb, shading):
        # Cauchy IRLS weights from the residuals, scale = 1.4826 * median |r| per image
        res = residual(alb, shading)
        sigma = per_image(res, torch.median) * 1.4826
        return w0 / (1 + (res / (2.5 * sigma.clamp_min(0.01)[b])) ** 2)

    # warm-up: light with per-region constant albedo on the best-fitting ``trim`` of the pixels
    # (least trimmed squares), so large outliers (hair, occluders, beards) cannot pull the light
    # before the albedo may absorb them
    for _ in range(max(1, warmup)):
        light, shading = solve_light(albedo, weight)
        if fit_albedo:
            albedo = _prior_albedo(col, shading, w0, g, preg, vreg, G, albedo)
        res = residual(albedo, shading)
        cut = per_image(res, lambda r: r.kthvalue(max(1, int(trim * r.numel()))).values)
        new = w0 * (res <= cut[b])
        if torch.equal(new, weight):
            break
        weight = new
    weight = robust_weights(albedo, shading) * (res <= 2 * cut[b])
    if not fit_albedo:
        for _ in range(n_iters):
            light, shading = solve_light(albedo, weight)
            weight = robust_weights(albedo, shading)
        light, _ = solve_light(albedo, weight)
        return params.replace(light=light.to(params.light.dtype), albedo=albedo.to(params.albedo.dtype))

    for _ in range(n_iters):
        light, shading = solve_light(albedo, weight)
        # ---- albedo given light, with Laplacian + region-median priors
        mu = _prior_albedo(col, shading, w0, g, preg, vreg, G, albedo)
        sw = weight[:, None] * shading  # (P, 3)
        # normal equations per (group, channel): sum_p w s^2 bary_u bary_v and sum_p w s I bary_u,
        # the data normalised to "one average observed vertex" so the priors are size-free
        base = (g * 3)[:, None] + torch.arange(3, device=dev)  # (P, C) system index
        rows = base[:, :, None] * V + vid[:, None, :]  # (P, C, 3)
        dens = torch.zeros(G * 3 * V, device=dev, dtype=dt)
        dens.index_add_(0, rows.reshape(-1), ((sw * shading)[:, :, None] * (bary * bary)[:, None, :]).reshape(-1))
        dens = dens.reshape(G * 3, V)
        scale = dens.sum(-1) / (dens > 0).sum(-1).clamp_min(1)  # (G * 3,)
        sw = sw / scale.reshape(G, 3)[g]
        vals = (sw * shading)[:, :, None, None] * (bary[:, :, None] * bary[:, None, :])[:, None]  # (P, C, 3, 3)
        flat = rows[..., None] * V + vid[:, None, None, :]
        A = prior_mat.repeat(G * 3, 1, 1).reshape(-1)
        A.index_add_(0, flat.reshape(-1), vals.reshape(-1))
        A = A.reshape(G, 3, V, V)
        rhs = (prior_weight * mu.permute(0, 2, 1)).reshape(-1)
        rhs.index_add_(0, rows.reshape(-1), ((sw * col)[:, :, None] * bary[:, None, :]).reshape(-1))
        rhs = rhs.reshape(G, 3, V)
        albedo = torch.cholesky_solve(rhs[..., None], torch.linalg.cholesky(A))[..., 0].permute(0, 2, 1)
        weight = robust_weights(albedo, shading)

    light, _ = solve_light(albedo, weight)
    # ---- scale convention: mean skin shading = 1 per channel (per image or over all)
    shading = (Y[:, None, :] @ light[b]).squeeze(1)
    ws = (w0 * skin)[:, None]
    num = torch.zeros(G, 3, device=dev, dtype=dt).index_add_(0, g, ws * shading)
    den = torch.zeros(G, 1, device=dev, dtype=dt).index_add_(0, g, ws)
    m = torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(num)).clamp_min(1e-3)  # (G, 3)
    item_group = torch.zeros(B, dtype=torch.long, device=dev) if shared_albedo else torch.arange(B, device=dev)
    light = light / m[item_group][:, None, :]
    albedo = (albedo * m[:, None, :]).clamp(0, 1)
    if shared_albedo:
        albedo = albedo.expand(B, V, 3).clone()
    return params.replace(light=light.to(params.light.dtype), albedo=albedo.to(params.albedo.dtype))


def _prior_albedo(col, shading, weight, g, preg, vreg, G, fallback):
    """(G, V, 3) prior albedo: per group and region, the median of colour / shading over that
    region's pixels of weight >= 0.5; ``fallback`` (G, V, 3) where a region has too few."""
    out = fallback.clone()
    ratio = col / shading.clamp_min(0.05)
    ok = (shading > 0.05).all(-1) & (weight >= 0.5)
    for gi in range(G):
        for reg in torch.unique(vreg).tolist():
            sel = (ok & (g == gi) & (preg == reg)).nonzero().squeeze(1)
            if sel.numel() < 3:
                continue
            out[gi, vreg == reg] = ratio.index_select(0, sel).median(0).values
    return out


__all__ = ["fit_appearance", "vertex_regions", "mesh_laplacian"]
