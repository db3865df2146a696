"""A tiny self-made FaceModel for tests: a subdivided front hemisphere (faces the camera, -z)
with a few 'eye' and 'mouth' triangles, optional occluder patch in front of it."""
from __future__ import annotations

import math

import torch


class SynthFace:
    id = "synth@1"
    n_id = 2
    n_expr = 2
    default_scale = 0.8
    default_translation = (0.0, 0.0)

    def __init__(self, rings: int = 8, segments: int = 16, max_polar_deg: float = 80.0, occluder: bool = False,
                 device="cpu"):
        verts = [(0.0, 0.0, -1.0)]
        for r in range(1, rings + 1):
            a = math.radians(max_polar_deg) * r / rings
            for s in range(segments):
                p = 2 * math.pi * s / segments
                verts.append((math.sin(a) * math.cos(p), math.sin(a) * math.sin(p), -math.cos(a)))
        faces = []
        ring = lambda r, s: 1 + (r - 1) * segments + (s % segments)  # noqa: E731
        for s in range(segments):
            faces.append((0, ring(1, s), ring(1, s + 1)))
        for r in range(1, rings):
            for s in range(segments):
                a, b, c, d = ring(r, s), ring(r, s + 1), ring(r + 1, s), ring(r + 1, s + 1)
                faces += [(a, c, d), (a, d, b)]
        V = torch.tensor(verts, dtype=torch.float32)
        if occluder:  # a separate square patch in front of the upper-left part of the sphere
            o = len(verts)
            V = torch.cat([V, torch.tensor([[-0.7, -0.7, -1.6], [-0.3, -0.7, -1.6], [-0.3, -0.3, -1.6], [-0.7, -0.3, -1.6]])])
            faces += [(o, o + 1, o + 2), (o, o + 2, o + 3)]
        F = torch.tensor(faces, dtype=torch.long)
        # orient counter-clockwise seen from outside (outward = away from the sphere centre, or -z
        # for the occluder)
        v0, v1, v2 = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
        n = torch.cross(v1 - v0, v2 - v0, dim=-1)
        c = (v0 + v1 + v2) / 3
        out = torch.where((F[:, :1] >= (len(verts) if occluder else 10 ** 9)), torch.tensor([0.0, 0.0, -1.0]), c)
        flip = (n * out).sum(-1) < 0
        F[flip] = F[flip][:, [0, 2, 1]]
        self.mean = V
        self.faces = F
        self.n_vertices = V.shape[0]
        self.uv = (V[:, :2] + 1) / 2
        self.landmark_index = torch.arange(478) % self.n_vertices
        c = (v0 + v1 + v2) / 3
        region = torch.zeros(F.shape[0], dtype=torch.long)
        region[((c[:, 0] - 0.35).abs() < 0.12) & ((c[:, 1] + 0.3).abs() < 0.12)] = 1  # an 'eye white'
        region[(c[:, 0].abs() < 0.2) & ((c[:, 1] - 0.5).abs() < 0.1)] = 3  # a 'mouth interior'
        self.face_region = region
        self.mean_albedo = torch.tensor([0.7, 0.5, 0.4]).expand(self.n_vertices, 3).clone()
        lower = (V[:, 1] > 0.2).float()
        self.id_basis = torch.stack([V * torch.tensor([0.1, 0.0, 0.0]), V * torch.tensor([0.0, 0.1, 0.0])])
        self.expr_basis = torch.stack([lower[:, None] * torch.tensor([0.0, 0.1, 0.0]),
                                       torch.tensor([0.0, 0.0, -0.1]).expand_as(V) * lower[:, None]])
        self.control_names = ["smile", "jaw_open"]
        self.control_dirs = torch.eye(2)
        self.to(device)

    def canonical(self, identity, expression, gaze):
        X = self.mean + torch.einsum("bk,kvc->bvc", identity, self.id_basis)
        return X + torch.einsum("bk,kvc->bvc", expression, self.expr_basis)

    def to(self, device=None, dtype=None):
        for k in ("mean", "faces", "uv", "landmark_index", "face_region", "mean_albedo", "id_basis", "expr_basis",
                  "control_dirs"):
            t = getattr(self, k)
            setattr(self, k, t.to(device=device) if (dtype is None or not t.is_floating_point()) else t.to(device, dtype))
        return self
