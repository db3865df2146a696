"""The avatar's networks: a deformation field (Nerfies-style: MLP on an annealed positional
encoding, conditioned on a per-frame latent code) that maps each frame's head-space points into
a canonical head space, and a canonical radiance field on a multi-resolution hash grid
(Instant-NGP-style, plain PyTorch) conditioned on the rig's expression and gaze.

Spatial prior: only points within ``prior_margin`` (model units) of the frame's face mesh see
the expression code; elsewhere (background, hair, shoulders) it is zero, so they cannot change
with expression (:func:`expression_gate`).

Shapes: points are flattened, (M, 3) head space; conditions (M, cond_dim); frame ids (M,) long,
-1 for "no frame" (zero deformation code).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from portraitrig.methods.avatar.config import AvatarConfig

PRIMES = (1, 2654435761, 805459861)
DENSITY_SHIFT = 4.0  # density = softplus(raw - 4): space starts almost empty (~0.02 per model unit)


def anneal_weights(n_freqs: int, alpha: float, device=None) -> torch.Tensor:
    """(n_freqs,) coarse-to-fine window of Nerfies: octave j gets ``(1 - cos(pi * clamp(alpha - j,
    0, 1))) / 2``; alpha = 0 turns every octave off, alpha >= n_freqs turns all on."""
    j = torch.arange(n_freqs, device=device, dtype=torch.float32)
    x = (alpha - j).clamp(0.0, 1.0)
    return (1 - torch.cos(math.pi * x)) / 2


def positional_encoding(x: torch.Tensor, n_freqs: int, alpha: float | None = None) -> torch.Tensor:
    """(M, 3) -> (M, 3 + 6 n_freqs): x, then sin/cos(2^j pi x) per octave j, each octave scaled
    by its annealing weight (all 1 when ``alpha`` is None)."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = x[..., None, :] * freqs[:, None]                               # (M, n, 3)
    enc = torch.cat([torch.sin(xf), torch.cos(xf)], -1)                 # (M, n, 6)
    if alpha is not None:
        enc = enc * anneal_weights(n_freqs, alpha, x.device).to(x.dtype)[:, None]
    return torch.cat([x, enc.flatten(-2)], -1)


class HashGrid(nn.Module):
    """Multi-resolution hash encoding: ``levels`` grids of resolution ``min_res * b**l`` (geometric
    up to ``max_res``), ``features`` per vertex in a table of ``2**log2_size`` entries per level;
    coarse levels that fit are indexed densely, the others by the spatial hash (XOR of coordinates
    times primes). forward: (M, 3) points in [0, 1] -> (M, levels * features), trilinear."""

    def __init__(self, levels: int, features: int, log2_size: int, min_res: int, max_res: int):
        super().__init__()
        self.levels, self.features, self.size = levels, features, 1 << log2_size
        growth = math.exp((math.log(max_res) - math.log(min_res)) / max(levels - 1, 1))
        res = [int(math.floor(min_res * growth ** lv)) for lv in range(levels)]
        self.register_buffer("res", torch.tensor(res, dtype=torch.long))
        self.register_buffer("dense", torch.tensor([(r + 1) ** 3 <= self.size for r in res]))
        self.register_buffer("corners", torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1]
                                                      for c in range(8)], dtype=torch.long))
        self.table = nn.Parameter(torch.empty(levels, self.size, features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def _index(self, c: torch.Tensor) -> torch.Tensor:
        """Table index (M, L) of integer vertices c (M, L, 3), per level."""
        r1 = (self.res + 1).view(1, -1)
        dense = c[..., 0] + c[..., 1] * r1 + c[..., 2] * r1 * r1
        hashed = (c[..., 0] * PRIMES[0]) ^ (c[..., 1] * PRIMES[1]) ^ (c[..., 2] * PRIMES[2])
        return torch.where(self.dense.view(1, -1), dense, hashed) % self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        M = x.shape[0]
        pos = x.float().clamp(0, 1)[:, None, :] * self.res.view(1, -1, 1)          # (M, L, 3)
        base = pos.floor().long().clamp_max(self.res.view(1, -1, 1) - 1)
        frac = pos - base
        offset = (torch.arange(self.levels, device=x.device) * self.size).view(1, -1)
        table = self.table.view(-1, self.features)
        out = None
        for corner in range(8):  # all levels at once, one corner at a time (bounded memory)
            bits = [(corner >> k) & 1 for k in range(3)]
            idx = self._index(base + self.corners[corner]) + offset                  # (M, L)
            w = 1.0
            for k in range(3):
                w = w * (frac[..., k] if bits[k] else 1 - frac[..., k])
            term = table[idx] * w[..., None].to(table.dtype)                           # (M, L, F)
            out = term if out is None else out + term
        return out.reshape(M, -1)


def hash_grid_reference(grid: HashGrid, x: torch.Tensor) -> torch.Tensor:
    """The same encoding as ``grid(x)``, computed level by level and corner by corner (the
    plain reference the vectorised path is tested against)."""
    out = []
    for lv in range(grid.levels):
        r = int(grid.res[lv])
        pos = x.double().clamp(0, 1) * r
        base = pos.floor().long().clamp_max(r - 1)
        frac = pos - base
        acc = torch.zeros(x.shape[0], grid.features, dtype=torch.float64)
        for corner in range((8)):
            bits = [(corner >> k) & 1 for k in range(3)]
            v = [base[:, k] + bits[k] for k in range(3)]
            if (r + 1) ** 3 <= grid.size:
                index = (v[0] + v[1] * (r + 1) + v[2] * (r + 1) ** 2) % grid.size
            else:
                index = ((v[0] * PRIMES[0]) ^ (v[1] * PRIMES[1]) ^ (v[2] * PRIMES[2])) % grid.size
            w = torch.ones(x.shape[0], dtype=torch.float64)
            for k in range(3):
                w = w * (frac[:, k] if bits[k] else 1 - frac[:, k])
            acc += w[:, None] * grid.table[lv, index].double()
        out.append(acc)
    return torch.cat(out, -1)


def expression_gate(points: torch.Tensor, vertices: torch.Tensor, margin: float) -> torch.Tensor:
    """Spatial prior weights (B, N) in [0, 1] of head-space points (B, N, 3) given each item's
    face-mesh vertices (B, K, 3): 1 within ``margin / 2`` of the nearest vertex, falling linearly
    to exactly 0 at ``margin`` and beyond (model units)."""
    d = torch.cdist(points.float(), vertices.float()).min(-1).values
    return ((margin - d) / (0.5 * margin)).clamp(0, 1)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class AvatarModel(nn.Module):
    """Deformation + canonical field + learned background (+ occupancy grid for rendering).

    ``forward(points, cond, frames, alpha)``: head-space points (M, 3), gated conditions
    (M, cond_dim), frame ids (M,) (-1: zero code), annealing position alpha -> dict with
    ``sigma`` (M,) density per model unit, ``rgb`` (M, 3) in [0, 1], ``dx`` (M, 3) deformation
    (model units), ``codes`` (M, code_dim) the codes used. ``background(ndc)``: (..., 2) -> (..., 3)."""

    def __init__(self, cfg: AvatarConfig):
        super().__init__()
        self.cfg = cfg
        self.codes = nn.Parameter(torch.randn(cfg.n_frames, cfg.code_dim) * 0.01)
        pe = 3 + 6 * cfg.deform_freqs
        self.deform = _mlp([pe + cfg.code_dim + cfg.cond_dim] + [cfg.deform_hidden] * cfg.deform_layers + [3])
        with torch.no_grad():  # start as the identity map
            self.deform[-1].weight.mul_(1e-3)
            self.deform[-1].bias.zero_()
        self.grid = HashGrid(cfg.hash_levels, cfg.hash_features, cfg.hash_log2_size, cfg.hash_min_res,
                             cfg.hash_max_res)
        self.density = _mlp([self.grid.out_dim + cfg.cond_dim, cfg.hidden, 1 + cfg.geo_features])
        self.color = _mlp([cfg.geo_features + cfg.cond_dim, cfg.hidden, cfg.hidden, 3])
        self.background_image = nn.Parameter(torch.zeros(1, 3, cfg.background_res, cfg.background_res))
        g = cfg.occupancy_res
        self.register_buffer("occupancy", torch.ones(g, g, g, dtype=torch.uint8))

    def code_of(self, frames: torch.Tensor) -> torch.Tensor:
        code = self.codes[frames.clamp_min(0)]
        return code * (frames >= 0)[:, None].to(code.dtype)

    def deformation(self, points: torch.Tensor, cond: torch.Tensor, code: torch.Tensor, alpha: float) -> torch.Tensor:
        x = points / self.cfg.bound
        h = torch.cat([positional_encoding(x, self.cfg.deform_freqs, alpha), code.to(x.dtype), cond.to(x.dtype)], -1)
        return self.deform(h)

    def canonical(self, points: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (M,) and colour (M, 3) of canonical points (M, 3); zero density outside the cube."""
        u = points / (2 * self.cfg.bound) + 0.5
        inside = ((u >= 0) & (u <= 1)).all(-1)
        h = self.density(torch.cat([self.grid(u).to(cond.dtype), cond], -1))
        sigma = F.softplus(h[:, 0].float() - DENSITY_SHIFT) * inside
        rgb = torch.sigmoid(self.color(torch.cat([h[:, 1:], cond], -1)).float())
        return sigma, rgb

    def forward(self, points: torch.Tensor, cond: torch.Tensor, frames: torch.Tensor, alpha: float) -> dict:
        code = self.code_of(frames)
        dx = self.deformation(points, cond, code, alpha).float()
        sigma, rgb = self.canonical(points + dx, cond)
        return {"sigma": sigma, "rgb": rgb, "dx": dx, "codes": code}

    def background(self, ndc: torch.Tensor) -> torch.Tensor:
        g = ndc.reshape(1, 1, -1, 2).to(self.background_image.dtype)
        out = F.grid_sample(torch.sigmoid(self.background_image), g, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out[0, :, 0].transpose(0, 1).reshape(*ndc.shape[:-1], 3).float()

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """(M,) bool: head-space points in a cell the occupancy grid marks (outside: False)."""
        g = self.cfg.occupancy_res
        u = points / (2 * self.cfg.bound) + 0.5
        inside = ((u >= 0) & (u < 1)).all(-1)
        ijk = (u.clamp(0, 1 - 1e-6) * g).long()
        return inside & (self.occupancy[ijk[:, 0], ijk[:, 1], ijk[:, 2]] > 0)

    @torch.no_grad()
    def update_occupancy(self, conds: torch.Tensor, verts: torch.Tensor, threshold: float = 0.05,
                         dilate: int = 2, chunk: int = 1 << 16) -> float:
        """Mark the cells where the canonical density (at the cell centre, most over K frames'
        conditions ``conds`` (K, cond_dim), gated by the spatial prior with their face-mesh
        vertices ``verts`` (K, V, 3)) reaches ``threshold`` per model unit, dilated by ``dilate``
        cells (room for the deformation). Returns the occupied share."""
        g, dev = self.cfg.occupancy_res, self.occupancy.device
        c = (torch.arange(g, device=dev, dtype=torch.float32) + 0.5) / g
        pts = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
        pts = (pts - 0.5) * (2 * self.cfg.bound)
        best = torch.zeros(pts.shape[0], device=dev)
        for cond, v in zip(conds.to(dev, torch.float32), verts.to(dev, torch.float32)):
            for a in range(0, pts.shape[0], chunk):
                p = pts[a:a + chunk]
                c = cond.expand(p.shape[0], -1)
                if self.cfg.use_prior:
                    c = c * expression_gate(p[None], v[None], self.cfg.prior_margin)[0, :, None]
                sigma, _ = self.canonical(p, c)
                best[a:a + chunk] = torch.maximum(best[a:a + chunk], sigma)
        occ = (best >= threshold).float().view(1, 1, g, g, g)
        if dilate > 0:
            occ = F.max_pool3d(occ, 2 * dilate + 1, stride=1, padding=dilate)
        self.occupancy.copy_(occ[0, 0].to(torch.uint8))
        return float(occ.mean())


__all__ = ["anneal_weights", "positional_encoding", "HashGrid", "hash_grid_reference", "expression_gate",
           "AvatarModel", "PRIMES"]


def gate_points(frames, head: torch.Tensor, item: torch.Tensor, margin: float) -> torch.Tensor:
    """Spatial-prior weights (M,) of head-space points (M, 3) of items ``item`` (M,) of
    ``frames`` (:class:`~portraitrig.methods.avatar.rays.RigFrames`)."""
    gate = torch.zeros(head.shape[0], device=head.device)
    B = frames.verts.shape[0]
    if B == 1:
        return expression_gate(head[None], frames.verts, margin)[0]
    for b in range(B):
        sel = (item == b).nonzero()[:, 0]
        if sel.numel():
            gate[sel] = expression_gate(head[sel][None], frames.verts[b:b + 1], margin)[0]
    return gate


def frame_inputs(frames, head: torch.Tensor, item: torch.Tensor, cfg: AvatarConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(gated conditions (M, cond_dim), frame ids (M,)) of head-space points of items ``item``."""
    cond = frames.cond[item]
    if cfg.use_prior:
        cond = cond * gate_points(frames, head, item, cfg.prior_margin)[:, None]
    return cond, frames.frame[item]
