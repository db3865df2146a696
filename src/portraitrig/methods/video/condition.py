"""The video renderer's conditioning: RigParams sequences -> network input stacks.

Per frame: the face buffers (:class:`~portraitrig.render.spec.BufferStack`), and
whole-portrait normals of the face mesh joined to an inflated person silhouette (the method of
:func:`~portraitrig.render.portrait.portrait_normals`). The network input of frame t is the
face buffers of frames t-window+1..t (clamped at the sequence start), the portrait shading of
frame t under its light (smoothed along the face mesh border with ``shading_band``), and its
person mask (``2m - 1``).

The person mask the network sees is the target's mean person mask (``prior``) united with the
frame's face mesh: a reenacted frame has no mask before it is rendered (the network's matte
output, ``matte``, is its mask after). The prior's inflation is solved
once (:meth:`Conditioner.set_prior`); per frame only the join to the face mesh is made, at
``work`` pixels (64) and upsampled outside the mesh, where the shading is smooth — real time
per frame.

With ``follow_head`` the input also holds the reference frame and the prior warped by the 2D
similarity that takes the training frames' mean head placement to the frame's
(:meth:`Conditioner.head_warp`: a least-squares fit between the neutral head mesh projected
under both poses), so the hair and the head's outline move with the head. With ``still_body``
the warp fades below and beside the head to the body's own map (no move, or the whole person's
move of a moved training item): the frames' warps are then (B, 4, 3), the head's map over the body's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from portraitrig.accel.constants import device_constant
from portraitrig.methods.video.config import VideoNetConfig
from portraitrig.render import spec
from portraitrig.render.portrait import (border_offset, inflated_normals, portrait_normals, portrait_shading,
                                         soften_border)

FEATHER = 1 / 8   # the join's reach outside the face mesh, share of the image side (portrait_normals' default)
RETRIEVE_POINTS = slice(0, 468, 8)   # the face-mesh vertices whose crop positions key the retrieval bank
RETRIEVE_KEY = 2 * len(range(468)[RETRIEVE_POINTS])


def retrieval_keys(face_model, params) -> torch.Tensor:
    """(B, RETRIEVE_KEY) frames' retrieval keys: every 8th face-mesh vertex's position in the
    crop (NDC), head placement and expression in one vector; ``params`` on ``face_model``'s
    device."""
    return retrieval_keys_of(face_model, params.identity, params.expression, params.gaze, params.scale,
                             params.rotation, params.translation)


def retrieval_keys_of(face_model, identity: torch.Tensor, expression: torch.Tensor, gaze: torch.Tensor,
                      scale: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """:func:`retrieval_keys` of the frames' rig as tensors (RigParams' fields): tensors in, a
    tensor out, no host synchronisation (a CUDA graph can hold it)."""
    from portraitrig.face.base import pose_points

    X = face_model.canonical(identity, expression, gaze)[:, RETRIEVE_POINTS]
    return pose_points(X, scale, rotation, translation)[..., :2].reshape(len(identity), -1)


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear", padding: str = "border") -> torch.Tensor:
    """``x`` (1 or B, C, S, S) resampled by ``theta`` (B, 2, 3, ``affine_grid``'s map: each
    output point samples the input at ``theta @ (x, y, 1)``, NDC), in float."""
    B, S = theta.shape[0], x.shape[-1]
    grid = F.affine_grid(theta.float(), [B, 1, S, S], align_corners=False)
    return F.grid_sample(x.float().expand(B, -1, -1, -1), grid, mode=mode, padding_mode=padding, align_corners=False)


def turn_normals(n: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Normals (B, 3, S, S) of an image resampled by ``theta`` (B, 2, 3, :func:`warp`'s map)
    turned as the image was: x and y by the similarity's rotation, z as it is."""
    inv = theta[:, :, :2].float()                              # output -> input: the move's inverse
    det = inv[:, 0, 0] * inv[:, 1, 1] - inv[:, 0, 1] * inv[:, 1, 0]   # closed form: no host sync on a GPU
    turn = inv.transpose(1, 2) / det.abs().sqrt()[:, None, None]   # the move's rotation
    xy = torch.einsum("bij,bjhw->bihw", turn, n[:, :2].float())
    return torch.cat([xy, n[:, 2:].float()], 1)


class Conditioner:
    def __init__(self, config: VideoNetConfig, device="cpu", face_model=None, work: int = 64):
        self.config = config
        self.stack = spec.BufferStack(config.buffers, config.image_size, device, face_model)
        self.slices = spec.slices(config.buffers)
        self.work = min(int(work), config.image_size)
        self.prior = self.proxy = self.head_pose = self.follow_src = None
        self.ellipse: tuple[float, ...] | None = None   # still_body: the head's ellipse (head_ellipse)

    @torch.no_grad()
    def set_prior(self, prior: torch.Tensor, reference: torch.Tensor | None = None,
                  head_pose: torch.Tensor | None = None, head_ellipse: torch.Tensor | None = None) -> None:
        """The person mask prior (1, 1, S, S) in [0, 1]; solves its inflation once. With
        ``follow_head``: the reference frame (1, 3, S, S) in [0, 1] and the mean head pose (1, 6)
        the warped channels come from; with ``still_body`` the head's ellipse (1, 4,
        :meth:`head_ellipse`)."""
        self.prior = prior.float()
        self.prior_work = F.interpolate(self.prior, size=(self.work, self.work), mode="area")
        self.proxy = inflated_normals(self.prior_work > 0.5)
        if self.config.follow_head:
            if reference is None or head_pose is None:
                raise ValueError("follow_head needs the reference frame and the mean head pose")
            self.head_pose = head_pose.float()
            self.follow_src = torch.cat([reference.float(), self.prior], 1) * 2 - 1   # what follow() warps
            if self.config.still_body:
                if head_ellipse is None:
                    raise ValueError("still_body needs the head's ellipse")
                self.ellipse = tuple(float(v) for v in head_ellipse.reshape(4))

    @staticmethod
    @torch.no_grad()
    def head_ellipse(face_model, params, head_pose: torch.Tensor) -> torch.Tensor:
        """(1, 4) where ``still_body``'s fade begins, in the reference frame (NDC, y down): the
        ellipse of the head of ``params`` (its first frame's identity; no expression or gaze)
        under the mean head pose (1, 6): centre x, y (midway from the forehead's top, MediaPipe
        point 10, to the chin, 152), half-width (1.25 x the face mesh's: ears and hair beside
        it) and half-height (1.1 x centre to chin)."""
        from portraitrig.face.base import posed_vertices

        p = params[:1].to(dtype=torch.float32)          # where the face model is (the conditioner's device)
        hp = head_pose.to(p.scale.device, torch.float32)
        p = p.replace(scale=hp[:, :1], rotation=hp[:, 1:4], translation=hp[:, 4:6],
                      expression=torch.zeros_like(p.expression), gaze=torch.zeros_like(p.gaze))
        v = posed_vertices(face_model, p)[0, :468]
        chin, top = v[152, 1], v[10, 1]
        left, right = v[:, 0].min(), v[:, 0].max()
        cy = (chin + top) / 2
        return torch.stack([(left + right) / 2, cy, (right - left) / 2 * 1.25, (chin - cy).abs() * 1.1])[None].cpu()

    @staticmethod
    def mean_head_pose(params) -> torch.Tensor:
        """(1, 6) the mean head placement of a params batch: scale, rotation (axis-angle, the
        mean of small rotations), translation."""
        return torch.cat([params.scale.float().mean(0), params.rotation.float().mean(0),
                          params.translation.float().mean(0)])[None]

    @torch.no_grad()
    def head_warp(self, params) -> torch.Tensor:
        """(B, 2, 3) for each frame the map (NDC, ``affine_grid``'s convention) from its crop to
        the reference frame's: the inverse of the 2D similarity that best takes the neutral head
        mesh (the frame's identity, no expression or gaze) under the mean head pose onto the
        same mesh under the frame's pose. With ``still_body``: (B, 4, 3), that map over the
        body's (no move; :meth:`move_head_warp` moves both)."""
        p = params.to(self.prior.device, torch.float32)
        return self.head_warp_of(p.scale, p.rotation, p.translation, p.identity)

    @torch.no_grad()
    def head_warp_of(self, scale: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                     identity: torch.Tensor) -> torch.Tensor:
        """:meth:`head_warp` of the frames' pose (scale (B, 1), rotation (B, 3), translation
        (B, 2)) and identity (B, n_id), float32 on the conditioner's device. Tensors in, a tensor
        out, no host synchronisation: a CUDA graph can hold it."""
        from portraitrig.face.base import pose_points
        from portraitrig.fit.geometry import similarity_2d

        B, fm = scale.shape[0], self.face_model
        X = fm.canonical(identity, identity.new_zeros(B, fm.n_expr), identity.new_zeros(B, 2, 2))   # neutral head
        hp = self.head_pose.to(scale.device).expand(B, 6)
        there = pose_points(X, hp[:, :1], hp[:, 1:4], hp[:, 4:6])[..., :2]     # image-plane points
        here = pose_points(X, scale, rotation, translation)[..., :2]
        s, R, t = similarity_2d(there, here)                          # reference -> frame
        inv = R.transpose(1, 2) / s[:, None, None]
        head = torch.cat([inv, -(inv @ t[:, :, None])], 2)
        if not self.config.still_body:
            return head
        body = device_constant(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), torch.float32, head.device).expand(B, 2, 3)
        return torch.cat([head, body], 1)     # the body stays (still_body)

    def follow_grid(self, head: torch.Tensor, size: int) -> torch.Tensor:
        """(B, S, S, 2) ``grid_sample``'s grid of the frames' head warps ``head`` (B, 2, 3, or
        B, 4, 3 with ``still_body``: the head's map over the body's). With the body's map: the
        head's map where it lands in the head's region (above the head's centre, or inside the
        ellipse of its lower half, :meth:`head_ellipse`), so the region moves with the head, and
        where the body's map lands there (where the head was: the plain warp's background fills
        it, no ghost of the head stays); the body's map where both land beyond the ellipse grown
        by ``still_body`` of its radii; a smoothstep between."""
        B = head.shape[0]
        grid = F.affine_grid(head[:, :2].float(), [B, 1, size, size], align_corners=False)
        if head.shape[1] == 2:
            return grid
        if self.ellipse is None:
            raise RuntimeError("still_body: set_prior first")
        body = F.affine_grid(head[:, 2:4].float(), [B, 1, size, size], align_corners=False)
        cx, cy, a, b, grow = *self.ellipse, self.config.still_body
        both = torch.stack([grid, body])      # where each map lands: one pass over both
        dx, dy = (both[..., :1] - cx) / a, (both[..., 1:] - cy).clamp_min(0) / b   # the upper half: inside
        w = ((1 + grow - torch.hypot(dx, dy)) / grow).clamp(0, 1).amax(0)   # also where the head was: no ghost
        w = w * w * (3 - 2 * w)
        return torch.lerp(body, grid, w)

    def follow_warp(self, x: torch.Tensor, head: torch.Tensor, padding: str = "border") -> torch.Tensor:
        """``x`` (1 or B, C, S, S) resampled by the frames' head warps ``head`` (see
        :meth:`follow_grid`), bilinear, in float."""
        grid = self.follow_grid(head, x.shape[-1])
        return F.grid_sample(x.float().expand(head.shape[0], -1, -1, -1), grid, mode="bilinear",
                             padding_mode=padding, align_corners=False)

    def follow(self, theta: torch.Tensor) -> torch.Tensor:
        """(B, 4, S, S): the reference frame and the prior (as ``2x - 1``) warped by ``theta``
        (B, 2, 3, or B, 4, 3 with ``still_body``) from :meth:`head_warp`."""
        return self.follow_warp(self.follow_src, theta)

    @torch.no_grad()
    def move_faces(self, face: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Face buffers (B, C_buf, S, S) of heads moved in the image plane, from the unmoved
        ones: resampled by ``theta`` (B, 2, 3, ``affine_grid``'s map of the move) at the nearest
        pixel (as a rasterizer samples) and the normals turned with the image. What
        :meth:`face` renders from :func:`~portraitrig.edits.move_in_image`'s parameters, up to
        the resampling, at a fraction of the cost."""
        out = warp(face, theta, mode="nearest")
        sl = self.slices["normal"]
        out = torch.cat([out[:, :sl.start], turn_normals(out[:, sl], theta), out[:, sl.stop:]], 1)
        return out.to(face.dtype)

    @staticmethod
    def move_head_warp(head: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """:meth:`head_warp` of heads moved by ``theta`` (see :meth:`move_faces`) from the
        unmoved ``head`` (B, 2, 3; B, 4, 3 with the body's map, which moves the same way): the
        moved crop's points go back through the move, then to the reference (the least-squares
        similarity is equivariant under a similarity)."""
        last = device_constant((0.0, 0.0, 1.0), torch.float32, head.device).expand(head.shape[0], 1, 3)
        return head.float() @ torch.cat([theta.float(), last], 1)

    @torch.no_grad()
    def prior_normals(self, face: torch.Tensor, head: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S) whole-portrait normals of face buffers over the prior person mask (see
        the module doc); 0 outside the prior and the face mesh. With ``proxy_follows_head`` the
        prior and its proxy are first moved with the frames' head warps ``head`` (B, 2 or 4, 3,
        :meth:`head_warp`), the proxy's normals turned with the image; where the moved prior
        does not reach, the unmoved one stays (the shoulders do not turn with the head)."""
        if self.proxy is None:
            raise RuntimeError("set_prior first")
        n_face = face[:, self.slices["normal"]].float()
        m_face = self.face_mask(face).float()
        S, w = n_face.shape[-1], self.work
        n_lo = F.interpolate(n_face, size=(w, w), mode="area")
        m_lo = F.interpolate(m_face, size=(w, w), mode="area")
        n_lo = n_lo / n_lo.norm(dim=1, keepdim=True).clamp_min(1e-6) * (m_lo > 0.5)
        if self.config.proxy_follows_head:
            if head is None:
                raise ValueError("proxy_follows_head: the frames' head warps are needed")
            moved = turn_normals(self.follow_warp(self.proxy, head, padding="zeros"), head[:, :2])
            inside = self.follow_warp(self.prior_work, head, padding="zeros") > 0.5
            proxy = torch.where(inside, moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-6), self.proxy)
            prior = torch.maximum(self.follow_warp(self.prior, head, padding="zeros"), self.prior)   # the body stays
        else:
            proxy, prior = self.proxy.expand(len(face), -1, -1, -1), self.prior
        outer = proxy + border_offset(n_lo, m_lo, proxy, FEATHER * w)
        if w != S:
            outer = F.interpolate(outer, size=(S, S), mode="bilinear", align_corners=False)
        n = torch.where(m_face > 0.5, n_face, outer)
        n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dom = (prior > 0.5) | (m_face > 0.5)
        return torch.where(dom, n, torch.zeros_like(n))

    @property
    def face_model(self):
        return self.stack.face_model

    @torch.no_grad()
    def face(self, params) -> torch.Tensor:
        """(B, C_buf, S, S) face buffers of params (batch B)."""
        return self.stack(params)

    def face_mask(self, face: torch.Tensor) -> torch.Tensor:
        return (face[:, self.slices["mask"]] + 1) / 2

    @torch.no_grad()
    def normals(self, face: torch.Tensor, person_mask: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) whole-portrait normals of face buffers and (B, 1, S, S) person masks in
        [0, 1] (:func:`~portraitrig.render.portrait.portrait_normals`, full resolution)."""
        return portrait_normals(face[:, self.slices["normal"]].float(), self.face_mask(face).float(),
                                person_mask.float())

    def cond_mask(self, face: torch.Tensor) -> torch.Tensor:
        """The person mask the network sees: the prior united with the face mesh's mask."""
        return torch.maximum(self.prior.to(face.dtype), self.face_mask(face))

    @torch.no_grad()
    def drawn_mask(self, face: torch.Tensor, head: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, S, S) where the renderer may draw the person: :meth:`cond_mask`, united (with
        ``follow_head`` and the frames' :meth:`head_warp` ``head``) with the prior moved with the
        head, where the hair and the outline go when the head moves."""
        m = self.cond_mask(face).float()
        if head is None or not self.config.follow_head:
            return m
        return torch.maximum(m, self.follow_warp(self.prior, head, padding="zeros"))

    def retrieval_keys(self, params) -> torch.Tensor:
        """:func:`retrieval_keys` of ``params`` (moved to the conditioner's device)."""
        return retrieval_keys(self.face_model, params.to(self.stack.renderer.device, torch.float32))

    @staticmethod
    def nearest(keys: torch.Tensor, bank_keys: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) for each key (B, K) the bank entry (R, K) nearest it (Euclidean distance),
        ``exclude`` (B, R) bool entries left out (all left out: the nearest of all)."""
        return Conditioner._distances(keys, bank_keys, exclude).argmin(1)

    @staticmethod
    def _distances(keys: torch.Tensor, bank_keys: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
        """(B, R) Euclidean distances of keys (B, K) to bank entries (R, K), infinite where
        ``exclude`` (B, R) leaves an entry out (unless it leaves out all of a row's)."""
        d = torch.cdist(keys.float(), bank_keys.float())
        if exclude is not None:
            d = torch.where(exclude & ~exclude.all(1, keepdim=True), torch.full_like(d, float("inf")), d)
        return d

    @staticmethod
    def nearest_spread(keys: torch.Tensor, bank_keys: torch.Tensor, count: int, bank_index: torch.Tensor,
                       apart: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """(B, count) for each key (B, K) ``count`` bank entries (R, K): the nearest (as
        :meth:`nearest`, ``exclude`` alike), then each next one the nearest of those whose frame
        (``bank_index`` (R,)) lies more than ``apart`` frames from every entry picked before it
        (none such left: the nearest remaining, repeats allowed). Tensors only, no host
        synchronisation."""
        d = Conditioner._distances(keys, bank_keys, exclude)
        picks = [d.argmin(1)]
        for _ in range(count - 1):
            near = (bank_index[None] - bank_index[picks[-1]][:, None]).abs() <= apart     # (B, R)
            left = ~(near | torch.isinf(d))
            d = torch.where(near & left.any(1, keepdim=True), torch.full_like(d, float("inf")), d)
            picks.append(d.argmin(1))
        return torch.stack(picks, 1)

    @staticmethod
    def window_index(t: torch.Tensor, window: int) -> torch.Tensor:
        """(B, window) indices t-window+1..t, clamped at 0."""
        return (t[:, None] + torch.arange(1 - window, 1, device=t.device)[None]).clamp_min(0)

    def inputs(self, faces: torch.Tensor, index: torch.Tensor, normals: torch.Tensor, light: torch.Tensor,
               cond_mask: torch.Tensor, head: torch.Tensor | None = None,
               retrieved: torch.Tensor | None = None) -> torch.Tensor:
        """Network input (B, C_in, S, S): faces (T, C_buf, S, S) of a sequence, index (B, window)
        into it; normals (B, 3, S, S), light (B, 9, 3), cond_mask (B, 1, S, S) of the frames;
        head (B, 2 or 4, 3) their :meth:`head_warp` (needed with ``follow_head``); retrieved
        (B, 3 x retrieve_count, S, S) in [0, 1] their retrieval-bank frames (needed with ``retrieve``)."""
        B = index.shape[0]
        win = faces[index.reshape(-1)].reshape(B, -1, *faces.shape[-2:])
        shading = portrait_shading(normals.float(), light.float())
        band = self.config.shading_band
        if band > 0:   # smoothed along the mesh border as the relit targets are (no step to copy)
            valid = normals.float().norm(dim=1, keepdim=True) > 0.5
            now = self.face_mask(faces[index[:, -1]]).float()
            shading = torch.where(valid, soften_border(shading, valid, now, band, band), torch.zeros_like(shading))
        shading = shading.to(win.dtype)
        parts = [win, shading, cond_mask.to(win.dtype) * 2 - 1]
        if self.config.follow_head:
            if head is None:
                raise ValueError("follow_head: the frames' head warps are needed")
            parts.append(self.follow(head).to(win.dtype))
        if self.config.retrieve:
            if retrieved is None:
                raise ValueError("retrieve: the frames' retrieved bank frames are needed")
            parts.append((retrieved * 2 - 1).to(win.dtype))
        return torch.cat(parts, 1)


__all__ = ["Conditioner", "retrieval_keys", "turn_normals", "warp", "RETRIEVE_KEY", "RETRIEVE_POINTS"]
