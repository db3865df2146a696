"""The Gaussian avatar's model: 3D Gaussians of two kinds, and what one frame's rig makes of them.

- **Mesh Gaussians** (``per_face`` on each face-mesh triangle) live in their triangle's frame:
  origin at a fixed barycentric point, axes (first edge, in-plane normal to it, triangle normal),
  unit the triangle's size (square root of its area). The rig's expression and gaze move the
  mesh and so move them, turn them and stretch them; a small MLP of the expression and gaze
  (and a learned per-Gaussian feature) adds offsets and colour changes the crude mesh misses
  (wrinkles, the mouth's inside). Their offset from the triangle is bounded (``max_offset``
  triangle sizes, by tanh) and so is their size (``MESH_SCALE_MAX`` triangle sizes), so they
  cannot stretch over the hair or the background and carry it along with the expression.
- **Free Gaussians** (``free``) live in head space and move rigidly with the head: hair, ears,
  neck, shoulders, teeth. The spatial prior: they never see the expression code, so nothing
  away from the face can change with expression (``use_prior=False``, the ablation, gives them
  the expression MLP too).

- **Body Gaussians** (``body``, none by default) are fixed to the camera: NDC position and depth,
  sizes in NDC units. Each frame's rig maps them back into its head space, so they land on the
  same pixels whatever the head does (shoulders, torso, hair lying on them stay put when the head
  moves or a novel view turns it). They never see the expression either.

Plus a learned background image (crop space, like the radiance-field avatar's).
:func:`SplatModel.gaussians` returns every Gaussian of B frames in head space; rendering is
:func:`portraitrig.methods.splat.raster.project` + ``rasterize``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from portraitrig.methods.splat.config import SplatConfig
from portraitrig.methods.splat.raster import quat_to_matrix


MESH_SCALE_MAX = 1.0    # a mesh Gaussian's standard deviations are at most its triangle's size
FREE_SCALE_MAX = 0.1    # a free Gaussian's at most this many model units (the face is ~2.2 wide)
BODY_SCALE_MAX = 0.05   # a body Gaussian's at most this many NDC units (the crop is 2 wide)


def triangle_frames(verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per triangle of vertices (B, V, 3) and faces (F, 3): rotation (B, F, 3, 3) whose columns
    are the unit first edge, the in-plane normal to it and the triangle normal, and size (B, F)
    (square root of the area, at least 1e-6)."""
    v0, v1, v2 = (verts[:, faces[:, k]] for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    n = torch.linalg.cross(e1, e2)
    area2 = n.norm(dim=-1)
    n = n / area2[..., None].clamp_min(1e-12)
    t = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = torch.linalg.cross(n, t)
    return torch.stack([t, b, n], -1), (0.5 * area2).clamp_min(1e-12).sqrt().clamp_min(1e-6)


def _mlp(i: int, hidden: int, layers: int, o: int) -> nn.Sequential:
    dims = [i] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    last = nn.Linear(dims[-1], o)
    nn.init.zeros_(last.weight)  # start with no expression-driven change
    nn.init.zeros_(last.bias)
    return nn.Sequential(*mods, last)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class SplatModel(nn.Module):
    """Parameters of the mesh and free Gaussians, the expression MLP and the background.

    ``gaussians(verts, cond)``: each item's canonical (expression-posed) face-mesh vertices
    (B, V, 3) and condition (B, cond_dim) -> dict of head-space ``means`` (B, N, 3), ``rot``
    (B, N, 3, 3), ``scales`` (B, N, 3), ``colors`` (B, N, 3) in [0, 1], ``opacities`` (B, N), and
    for the losses ``mesh_offset`` (the local offsets, triangle units), ``expr_offset`` (the MLP's
    offsets) and ``log_scale_excess``. Mesh Gaussians come first (``n_mesh`` of them)."""

    def __init__(self, cfg: SplatConfig, faces: torch.Tensor, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        F_ = faces.shape[0]
        k = cfg.per_face
        self.register_buffer("faces", faces.long().clone())
        self.register_buffer("face_index", torch.arange(F_).repeat_interleave(k))
        u = torch.rand(F_ * k, 2, generator=g)
        flip = u.sum(-1) > 1                                           # uniform in the triangle
        u = torch.where(flip[:, None], 1 - u, u)
        self.register_buffer("bary", torch.stack([1 - u[:, 0] - u[:, 1], u[:, 0], u[:, 1]], -1))
        n = F_ * k
        self.n_mesh = n
        spread = 0.6 / math.sqrt(k)
        self.mesh_offset = nn.Parameter(torch.zeros(n, 3))
        self.mesh_quat = nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(n, 1))
        self.mesh_log_scale = nn.Parameter(torch.log(torch.tensor([spread, spread, 0.3 * spread])).repeat(n, 1))
        self.mesh_opacity = nn.Parameter(torch.full((n,), _logit(0.8)))
        self.mesh_color = nn.Parameter(torch.zeros(n, 3))
        self.mesh_feature = nn.Parameter(torch.randn(n, cfg.feature_dim, generator=g) * 0.1)
        self.expr_mlp = _mlp(cfg.feature_dim + cfg.cond_dim, cfg.hidden, cfg.layers, 6)
        m = cfg.free
        self.free_xyz = nn.Parameter(torch.zeros(m, 3))
        self.free_quat = nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(m, 1))
        self.free_log_scale = nn.Parameter(torch.full((m, 3), math.log(0.03)))
        self.free_opacity = nn.Parameter(torch.full((m,), _logit(0.3)))
        self.free_color = nn.Parameter(torch.zeros(m, 3))
        if not cfg.use_prior:
            self.free_feature = nn.Parameter(torch.randn(m, cfg.feature_dim, generator=g) * 0.1)
            self.free_mlp = _mlp(cfg.feature_dim + cfg.cond_dim, cfg.hidden, cfg.layers, 6)
        b = cfg.body
        self.body_xyz = nn.Parameter(torch.zeros(b, 3))
        self.body_quat = nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(b, 1))
        self.body_log_scale = nn.Parameter(torch.full((b, 3), math.log(0.015)))
        self.body_opacity = nn.Parameter(torch.full((b,), _logit(0.3)))
        self.body_color = nn.Parameter(torch.zeros(b, 3))
        self.background_image = nn.Parameter(torch.zeros(1, 3, cfg.background_res, cfg.background_res))

    @property
    def n_free(self) -> int:
        return self.cfg.free

    @property
    def n_body(self) -> int:
        return self.cfg.body

    def forward(self, verts: torch.Tensor, cond: torch.Tensor, cam_scale: torch.Tensor | None = None,
                cam_rot: torch.Tensor | None = None, cam_trans: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.gaussians(verts, cond, cam_scale, cam_rot, cam_trans)

    def mlp_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """What the expression MLP sees of the condition (B, cond_dim): with ``clamp_condition``
        and a recorded range, each value clamped to the range the training frames spanned (a no-op
        on the training frames themselves, so a trained model can be rendered either way)."""
        cond = cond.float()
        if self.cfg.clamp_condition and self.cfg.cond_low:   # the range lives in the config, not the weights
            low, high = cond.new_tensor(self.cfg.cond_low), cond.new_tensor(self.cfg.cond_high)
            cond = torch.minimum(torch.maximum(cond, low), high)
        return cond

    def body_gaussians(self, cam_scale: torch.Tensor, cam_rot: torch.Tensor,
                       cam_trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The body Gaussians in each item's head space: means (B, M, 3), rot (B, M, 3, 3), scales
        (B, M, 3), such that the item's camera (scale s, rotation R, translation t) puts them at
        their fixed NDC place: X = R^T ((u, v, z) - (t, 0)) / s."""
        B = cam_scale.shape[0]
        shift = torch.cat([cam_trans.float(), cam_trans.new_zeros(B, 1).float()], 1)        # (B, 3)
        s = cam_scale.float()[:, None, :]                                                     # (B, 1, 1)
        Rt = cam_rot.float().transpose(1, 2)
        means = torch.einsum("bij,bmj->bmi", Rt, self.body_xyz[None] - shift[:, None]) / s
        rot = Rt[:, None] @ quat_to_matrix(self.body_quat)[None]
        scales = self.body_log_scale.clamp(max=math.log(BODY_SCALE_MAX)).exp()[None] / s
        return means, rot, scales

    def gaussians(self, verts: torch.Tensor, cond: torch.Tensor, cam_scale: torch.Tensor | None = None,
                  cam_rot: torch.Tensor | None = None, cam_trans: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every Gaussian of B items in their head space (mesh, free, then body ones). The body
        Gaussians need the items' camera (``cam_scale`` (B, 1), ``cam_rot`` (B, 3, 3), ``cam_trans``
        (B, 2))."""
        cfg = self.cfg
        B = verts.shape[0]
        R, size = triangle_frames(verts.float(), self.faces)
        Rf, kf = R[:, self.face_index], size[:, self.face_index]                      # (B, n, 3, 3), (B, n)
        anchor = (verts.float()[:, self.faces[self.face_index]] * self.bary[None, :, :, None]).sum(2)
        cond = self.mlp_condition(cond)
        h = torch.cat([self.mesh_feature[None].expand(B, -1, -1), cond[:, None].expand(-1, self.n_mesh, -1)], -1)
        d = self.expr_mlp(h).float()                                                    # (B, n, 6)
        local = cfg.max_offset * torch.tanh((self.mesh_offset[None] + d[..., :3]) / cfg.max_offset)
        mesh_means = anchor + kf[..., None] * (Rf @ local[..., None])[..., 0]
        mesh_rot = Rf @ quat_to_matrix(self.mesh_quat)[None]
        mesh_scales = kf[..., None] * self.mesh_log_scale.clamp(max=math.log(MESH_SCALE_MAX)).exp()[None]
        mesh_colors = torch.sigmoid(self.mesh_color[None] + d[..., 3:])
        free_means = self.free_xyz[None].expand(B, -1, -1)
        free_colors = torch.sigmoid(self.free_color)[None].expand(B, -1, -1)
        free_d = None
        if not cfg.use_prior:
            hf = torch.cat([self.free_feature[None].expand(B, -1, -1),
                            cond[:, None].expand(-1, self.n_free, -1)], -1)
            free_d = self.free_mlp(hf).float()
            free_means = free_means + free_d[..., :3]
            free_colors = torch.sigmoid(self.free_color[None] + free_d[..., 3:])
        free_rot = quat_to_matrix(self.free_quat)[None].expand(B, -1, -1, -1)
        free_scales = self.free_log_scale.clamp(max=math.log(FREE_SCALE_MAX)).exp()[None].expand(B, -1, -1)
        expr = d[..., :3] if free_d is None else torch.cat([d[..., :3], free_d[..., :3]], 1)
        means, rots, scales = [mesh_means, free_means], [mesh_rot, free_rot], [mesh_scales, free_scales]
        colors, opacity = [mesh_colors, free_colors], [self.mesh_opacity, self.free_opacity]
        if self.n_body:
            if cam_scale is None or cam_rot is None or cam_trans is None:
                raise ValueError("a model with body Gaussians needs each item's camera (scale, rotation, translation)")
            bm, br, bs = self.body_gaussians(cam_scale, cam_rot, cam_trans)
            means.append(bm)
            rots.append(br)
            scales.append(bs)
            colors.append(torch.sigmoid(self.body_color)[None].expand(B, -1, -1))
            opacity.append(self.body_opacity)
        return {
            "means": torch.cat(means, 1),
            "rot": torch.cat(rots, 1),
            "scales": torch.cat(scales, 1),
            "colors": torch.cat(colors, 1),
            "opacities": torch.sigmoid(torch.cat(opacity))[None].expand(B, -1),
            "mesh_offset": local,
            "expr_offset": expr,
        }

    def background(self, size: int) -> torch.Tensor:
        """The learned background (3, size, size) in [0, 1]."""
        bg = torch.sigmoid(self.background_image.float())
        return F.interpolate(bg, size=(size, size), mode="bilinear", align_corners=False)[0]

    def scale_excess(self) -> torch.Tensor:
        """How far Gaussians grow past half their caps (mesh: half a triangle size; free: 0.05
        model units; body: 0.025 NDC units), as a sum over the kinds of the mean positive
        log-ratio (a kind with no Gaussians adds nothing)."""
        total = self.mesh_log_scale.new_zeros(())
        for log_scale, cap in ((self.mesh_log_scale, MESH_SCALE_MAX), (self.free_log_scale, FREE_SCALE_MAX),
                               (self.body_log_scale, BODY_SCALE_MAX)):
            if log_scale.numel():
                total = total + F.relu(log_scale - math.log(cap / 2)).mean()
        return total

    @torch.no_grad()
    def init_free(self, points: torch.Tensor, spacing: float) -> None:
        """Place the free Gaussians at head-space ``points`` (free, 3), isotropic ``spacing``."""
        self.free_xyz.copy_(points.to(self.free_xyz))
        self.free_log_scale.fill_(math.log(max(spacing, 1e-4)))

    @torch.no_grad()
    def init_body(self, points: torch.Tensor, spacing: float) -> None:
        """Place the body Gaussians at NDC ``points`` (body, 3: x, y, depth), isotropic ``spacing``."""
        self.body_xyz.copy_(points.to(self.body_xyz))
        self.body_log_scale.fill_(math.log(min(max(spacing, 1e-4), BODY_SCALE_MAX)))

    @torch.no_grad()
    def init_colors(self, colors: torch.Tensor) -> None:
        """Set every Gaussian's colour (N, 3) in [0, 1] (mesh, free, then body Gaussians)."""
        logit = torch.logit(colors.clamp(0.02, 0.98)).to(self.mesh_color)
        k = self.n_mesh + self.n_free
        self.mesh_color.copy_(logit[:self.n_mesh])
        self.free_color.copy_(logit[self.n_mesh:k])
        self.body_color.copy_(logit[k:k + self.n_body])

    @torch.no_grad()
    def init_background(self, image: torch.Tensor) -> None:
        """Start the background from an image (3, H, W) in [0, 1]."""
        small = F.interpolate(image[None].float(), size=self.background_image.shape[-2:], mode="area")
        self.background_image.copy_(torch.logit(small.clamp(0.02, 0.98)).to(self.background_image))


def rig_inputs(params, face_model) -> dict[str, torch.Tensor]:
    """What rendering needs of B items' RigParams: camera ``scale`` (B, 1), ``rot`` (B, 3, 3),
    ``trans`` (B, 2), canonical vertices ``verts`` (B, V, 3), condition ``cond`` (B, n_expr + 4)."""
    p = params.to(params.device, torch.float32)
    return rig_tensors(face_model, p.identity, p.expression, p.gaze, p.rotation, p.scale, p.translation)


def rig_tensors(face_model, identity: torch.Tensor, expression: torch.Tensor, gaze: torch.Tensor,
                rotation: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`rig_inputs` of the RigParams fields themselves (``rotation`` axis-angle (B, 3)):
    tensors in, tensors out, so it can be compiled with what follows it."""
    from portraitrig.face.params import axis_angle_to_matrix

    verts = face_model.canonical(identity, expression, gaze).float()
    return {"scale": scale.float(), "rot": axis_angle_to_matrix(rotation).float(), "trans": translation.float(),
            "verts": verts, "cond": torch.cat([expression, gaze.flatten(1)], 1).float()}


def take(rig: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in rig.items()}


def pose(model: SplatModel, rig: dict[str, torch.Tensor], size: int, net=None) -> dict[str, torch.Tensor]:
    """B items' Gaussians posed and projected to ``size`` pixels: ``means2d``, ``conics``,
    ``depths``, ``radii`` (:func:`~portraitrig.methods.splat.raster.project`), ``colors``,
    ``opacities``, plus the loss terms ``mesh_offset`` and ``expr_offset``
    (:meth:`SplatModel.gaussians`). Plain tensor code: what the fast path compiles."""
    from portraitrig.methods.splat.raster import project

    g = (net if net is not None else model)(rig["verts"], rig["cond"], rig["scale"], rig["rot"], rig["trans"])
    pr = project(g["means"], g["rot"], g["scales"], rig["scale"], rig["rot"], rig["trans"], size)
    return {**pr, "colors": g["colors"], "opacities": g["opacities"], "mesh_offset": g["mesh_offset"],
            "expr_offset": g["expr_offset"]}


def draw(model: SplatModel, posed: dict[str, torch.Tensor], size: int, backend: str = "auto",
         background: str | torch.Tensor = "learned") -> dict[str, torch.Tensor]:
    """Rasterize :func:`pose`'s Gaussians: ``image`` (B, 3, S, S) over the background ("learned",
    "none": black, or images (B, 3, S, S)), ``rgb`` premultiplied (B, 3, S, S), ``alpha``
    (B, 1, S, S), and the loss terms passed on."""
    from portraitrig.methods.splat.raster import rasterize

    rgb, alpha = rasterize(posed["means2d"], posed["conics"], posed["colors"], posed["opacities"], posed["depths"],
                           posed["radii"], size, backend)
    rgb, alpha = rgb.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)
    if isinstance(background, torch.Tensor):
        image = rgb + (1 - alpha) * background.to(rgb)
    elif background == "learned":
        image = rgb + (1 - alpha) * model.background(size)[None].to(rgb)
    elif background == "none":
        image = rgb
    else:
        raise ValueError(f"background must be 'learned', 'none' or images, got {background!r}")
    return {"image": image, "rgb": rgb, "alpha": alpha, "mesh_offset": posed["mesh_offset"],
            "expr_offset": posed["expr_offset"]}


def render(model: SplatModel, rig: dict[str, torch.Tensor], size: int, backend: str = "auto",
           background: str | torch.Tensor = "learned", net=None) -> dict[str, torch.Tensor]:
    """Render B items: :func:`draw` of :func:`pose`. ``net``: the model as wrapped for training
    (DDP, compile), called for the Gaussians."""
    return draw(model, pose(model, rig, size, net), size, backend, background)


__all__ = ["SplatModel", "triangle_frames", "rig_inputs", "rig_tensors", "take", "pose", "draw", "render"]
