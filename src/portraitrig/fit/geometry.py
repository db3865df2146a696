"""Geometry fit: weak-perspective pose, identity, expression and gaze from 478 landmarks.

Closed-form and batched: a weighted similarity Procrustes of the model's 3D mesh points onto
the landmarks gives scale, rotation and translation; with the pose fixed the landmarks are
brought into head space, where identity + expression are a ridge least-squares solve against
precomputed normal matrices (rotation preserves the isotropic 3D residual, so nothing depends
on the pose); the two alternate for ``n_iters`` rounds. Gaze per eye is the unit direction from
the eyeball centre whose projection lands on the observed iris centre.

Input points are in crop NDC: x, y in -1..1 across the crop, z scaled by the same factor as x
with MediaPipe's sign (smaller = closer), any z offset.
"""
from __future__ import annotations

import torch

from portraitrig.errors import FitError
from portraitrig.face.params import RigParams, matrix_to_axis_angle

N_MESH = 468
IRIS_CENTRES = (468, 473)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None):
    """Weighted similarity (Umeyama) with ``s * src @ R.T + t ≈ dst``.

    src, dst: (B, P, 3); weights: (P,) or (B, P) non-negative. Returns s (B,), R (B, 3, 3)
    (proper rotation), t (B, 3)."""
    B, P, _ = src.shape
    w = torch.ones(P, dtype=src.dtype, device=src.device) if weights is None else weights.to(src.dtype)
    w = (w / w.sum(-1, keepdim=True)).expand(B, P)[..., None]
    mu_s, mu_d = (w * src).sum(1), (w * dst).sum(1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = (w * xd).transpose(1, 2) @ xs                      # (B, 3, 3) = sum w d s^T
    U, D, Vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(U @ Vt))
    E = torch.ones_like(D)
    E[:, 2] = sign
    R = (U * E[:, None, :]) @ Vt
    var_s = (w * xs * xs).sum((1, 2))
    s = (D * E).sum(-1) / var_s.clamp_min(1e-30)
    t = mu_d - s[:, None] * (mu_s[:, None] @ R.transpose(1, 2))[:, 0]
    return s, R, t


def similarity_2d(src: torch.Tensor, dst: torch.Tensor):
    """The least-squares 2D similarity (rotation, no reflection) with ``s * src @ R.T + t ≈ dst``,
    in closed form: src, dst (B, P, 2) -> s (B,), R (B, 2, 2), t (B, 2). What
    :func:`similarity_transform` gives for points in one plane, without its SVD: a few
    element-wise kernels, which a CUDA graph holds (the video renderer's head warps)."""
    mu_s, mu_d = src.mean(1), dst.mean(1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    a = (xs * xd).sum((1, 2))                                                   # sum of dot products
    b = (xs[..., 0] * xd[..., 1] - xs[..., 1] * xd[..., 0]).sum(1)              # sum of cross products
    norm = torch.sqrt(a * a + b * b).clamp_min(1e-30)
    cos, sin = a / norm, b / norm
    R = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    s = norm / (xs * xs).sum((1, 2)).clamp_min(1e-30)
    t = mu_d - s[:, None] * (mu_s[:, None] @ R.transpose(1, 2))[:, 0]
    return s, R, t


class _Solver:
    """Precomputed normal matrices of one model for given regularisers (float64)."""

    def __init__(self, model, id_reg: float, expr_reg: float):
        dt = torch.float64
        model = model.to("cpu", dt)                  # the closed-form solves run on the CPU
        self.mean = model.mean.reshape(-1)
        # the mean itself is an extra, unregularised column: it absorbs the head-space size
        # (scale trades against identity, and plain alternation converges slowly along it)
        A_id = torch.cat([model.id_basis.reshape(model.n_id, N_MESH * 3), self.mean[None]])
        A_ex = model.expr_basis.reshape(model.n_expr, N_MESH * 3)
        A = torch.cat([A_id, A_ex], 0)
        lam_id = torch.cat([torch.full((model.n_id,), id_reg), torch.zeros(1)]).to(dt)
        lam = torch.cat([lam_id, torch.full((model.n_expr,), expr_reg, dtype=dt)])
        # per image: theta = (A A^T + diag(lam))^-1 A y
        self.single = torch.linalg.solve(A @ A.T + torch.diag(lam), A)
        # shared identity (Schur complement over the per-image expressions); the size column
        # stays per image, so it is solved with the expressions
        A_sh, A_pi = A_id[:-1], torch.cat([A_id[-1:], A_ex])
        lam_pi = torch.cat([torch.zeros(1, dtype=dt), torch.full((model.n_expr,), expr_reg, dtype=dt)])
        H_inv = torch.linalg.inv(A_pi @ A_pi.T + torch.diag(lam_pi))
        C = (A_sh @ A_pi.T) @ H_inv
        self.schur = A_sh @ A_sh.T - C @ (A_pi @ A_sh.T)
        self.q = A_sh - C @ A_pi
        self.pi_single = H_inv @ A_pi                       # per image: this @ (y - A_sh^T alpha)
        self.A_sh, self.A_ex, self.id_reg, self.expr_reg, self.n_id = A_sh, A_ex, id_reg, expr_reg, model.n_id
        self.rigid_weights, self.eye_corners = model.rigid_weights, model.eye_corners
        self.eyeball_offset = model.eyeball_offset

    def solve(self, y: torch.Tensor, shared: bool, identity: torch.Tensor | None = None):
        """y: (B, 1404) head-space residual from the mean -> identity (B, n_id) and expression
        (B, n_expr), with y + mean ~ k * (mean + shape offsets) for a size factor k per image
        (the next pose step takes k into the scale). ``identity`` (n_id,) float64: held fixed,
        only the size factor and the expression are solved."""
        if identity is not None:
            # y + mean ~ k (mean + identity A_sh + beta A_ex): unknowns k - 1 and k beta
            base = self.mean + identity @ self.A_sh
            A = torch.cat([base[None], self.A_ex])
            lam = torch.cat([torch.zeros(1, dtype=y.dtype), torch.full((self.A_ex.shape[0],), self.expr_reg,
                                                                         dtype=y.dtype)])
            theta = torch.linalg.solve(A @ A.T + torch.diag(lam), A @ (y - identity @ self.A_sh).T).T
            k = 1 + theta[:, :1]
            return identity.expand(y.shape[0], -1), theta[:, 1:] / k
        if not shared:
            theta = y @ self.single.T
            alpha, k, beta = theta[:, :self.n_id], 1 + theta[:, self.n_id:self.n_id + 1], theta[:, self.n_id + 1:]
            return alpha / k, beta / k
        n = y.shape[0]
        lhs = n * self.schur + self.id_reg * torch.eye(self.n_id, dtype=y.dtype)
        alpha = torch.linalg.solve(lhs, self.q @ y.sum(0))
        rest = (y - alpha @ self.A_sh) @ self.pi_single.T
        k = 1 + rest[:, :1]
        return (alpha / k.mean()).expand(n, -1), rest[:, 1:] / k


def _solver(model, id_reg: float, expr_reg: float) -> _Solver:
    cache = model.__dict__.setdefault("_fit_solvers", {})
    key = (float(id_reg), float(expr_reg))
    if key not in cache:
        cache[key] = _Solver(model, id_reg, expr_reg)
    return cache[key]


def solve_gaze(iris_xy: torch.Tensor, centres: torch.Tensor, radius: float, s: torch.Tensor,
               R: torch.Tensor, t_xy: torch.Tensor) -> torch.Tensor:
    """Gaze (B, 2, 2) [yaw, pitch] whose iris centre projects onto ``iris_xy`` (B, 2, 2).

    centres: (B, 2, 3) eyeball centres in head space; pose s (B,), R (B, 3, 3), t_xy (B, 2).
    The gaze direction d (unit, head space) solves P R (c + r d) = (obs - t) / s: its part in
    the image plane is the least-norm solution, the rest lies along the viewing axis, towards
    the camera (clamped to unit length when the iris lies beyond the eyeball's rim)."""
    P = R[:, None, :2, :]                                          # (B, 1, 2, 3)
    b = (iris_xy - t_xy[:, None]) / s[:, None, None] - (centres[..., None, :] @ P.transpose(-1, -2))[..., 0, :]
    d0 = (b[..., None, :] @ P)[..., 0, :] / radius                 # rows of P are orthonormal
    n2 = (d0 * d0).sum(-1, keepdim=True)
    view = R[:, None, 2, :]                                        # head-space axis away from camera
    d = torch.where(n2 < 1, d0 - torch.sqrt((1 - n2).clamp_min(0)) * view, d0 / n2.sqrt().clamp_min(1e-12))
    yaw = torch.atan2(d[..., 0], -d[..., 2])
    pitch = torch.asin(d[..., 1].clamp(-1, 1))
    return torch.stack([yaw, pitch], -1)


def fit_landmarks(points_ndc: torch.Tensor, model, *, shared_identity: bool = False,
                  identity: torch.Tensor | None = None, init: RigParams | None = None, n_iters: int = 3,
                  id_reg: float = 2e-5, expr_reg: float = 2e-5) -> RigParams:
    """Fit pose, identity, expression and gaze to landmarks.

    points_ndc: (B, 478, 3) MediaPipe landmarks in crop NDC (see module doc).
    shared_identity: one identity for the whole batch (an album / a video of one person).
    identity: (n_id,) or (1, n_id) known identity of the person (e.g. estimated once from frames
        spread over a long video): held fixed, only pose, expression and gaze are solved, each
        image on its own (the result of an image does not depend on the rest of the batch).
    init: earlier parameters of the same faces; its identity and expression seed the first
        pose estimate (otherwise the mean face on the most rigid points does).
    n_iters: pose / shape alternations. id_reg, expr_reg: ridge weights (model units^2 per unit
        coefficient^2; the data term sums squared 3D residuals over 468 points).
    Returns RigParams (float32, on the input's device) with ambient white light and the
    model's mean albedo. Raises FitError on non-finite or degenerate input.
    """
    if points_ndc.ndim != 3 or points_ndc.shape[1:] != (478, 3):
        raise FitError(f"fit_landmarks expects (B, 478, 3) points, got {tuple(points_ndc.shape)}")
    if not torch.isfinite(points_ndc).all():
        raise FitError("fit_landmarks: landmarks contain NaN or inf")
    dev, dt = points_ndc.device, torch.float64
    Y = points_ndc.detach().to("cpu", dt)
    B = Y.shape[0]
    Ym = Y[:, :N_MESH]
    if (Ym[..., :2].std(1) < 1e-6).any():
        raise FitError("fit_landmarks: degenerate landmarks (all points coincide)")
    solver = _solver(model, id_reg, expr_reg)
    mean = solver.mean.reshape(N_MESH, 3)
    fixed = None
    if identity is not None:
        fixed = identity.detach().to("cpu", dt).reshape(-1)
        if fixed.numel() != solver.n_id or not torch.isfinite(fixed).all():
            raise FitError(f"fit_landmarks: identity must hold {solver.n_id} finite values, got {tuple(identity.shape)}")
        if init is None:  # the known face seeds the first pose
            mean = (solver.mean + fixed @ solver.A_sh).reshape(N_MESH, 3)
    if init is None:
        X = mean.expand(B, -1, -1)
        weights = solver.rigid_weights
    else:
        X = (solver.mean + init.identity.detach().to("cpu", dt) @ solver.A_sh
             + init.expression.detach().to("cpu", dt) @ solver.A_ex).reshape(B, N_MESH, 3)
        weights = None
    for _ in range(n_iters):
        s, R, t = similarity_transform(X, Ym, weights)
        head = ((Ym - t[:, None]) @ R) / s[:, None, None]           # R^T (y - t) / s
        alpha, beta = solver.solve(head.reshape(B, -1) - solver.mean, shared_identity, fixed)
        X = (solver.mean + alpha @ solver.A_sh + beta @ solver.A_ex).reshape(B, N_MESH, 3)
        weights = None
    s, R, t = similarity_transform(X, Ym)
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise FitError("fit_landmarks: pose solve failed")
    centres = X[:, solver.eye_corners].mean(2) + solver.eyeball_offset
    iris_xy = torch.stack([Y[:, 468:473, :2].mean(1), Y[:, 473:478, :2].mean(1)], 1)
    gaze = solve_gaze(iris_xy, centres, model.eyeball_radius, s, R, t[:, :2])
    params = RigParams.neutral(model, batch=B, dtype=torch.float32)
    params = params.replace(scale=s[:, None].float(), rotation=matrix_to_axis_angle(R).float(),
                            translation=t[:, :2].float(), identity=alpha.float().contiguous(),
                            expression=beta.float(), gaze=gaze.float())
    return params.to(dev)


def landmarks_ndc(params: RigParams, model) -> torch.Tensor:
    """(B, 478, 3) the model's landmark points posed into crop NDC (same space as the fit's input,
    depth up to an offset)."""
    from portraitrig.face.base import posed_vertices

    return posed_vertices(model, params)[:, model.landmark_index]


def landmark_error(params: RigParams, model, points_ndc: torch.Tensor) -> torch.Tensor:
    """(B,) mean 2D distance between fitted and given landmarks over all 478 points, in % of the
    given inter-ocular distance (iris centres 468 / 473)."""
    pred = landmarks_ndc(params, model)[..., :2]
    pts = points_ndc[..., :2].to(pred)
    iod = (pts[:, IRIS_CENTRES[0]] - pts[:, IRIS_CENTRES[1]]).norm(dim=-1)
    return 100 * (pred - pts).norm(dim=-1).mean(-1) / iod


__all__ = ["fit_landmarks", "landmarks_ndc", "landmark_error", "similarity_transform", "similarity_2d", "solve_gaze"]
