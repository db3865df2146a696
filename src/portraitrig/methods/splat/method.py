"""Gaussian-avatar training as a :class:`~portraitrig.training.method.TrainingMethod`.

Items are training frames (the avatar's frames: crops, person masks, RigParams; see
:mod:`portraitrig.neural.frames`). One step renders the batch's whole frames and takes
L1 + ``ssim_weight`` (1 - SSIM) against them, ``mask_weight`` * (opacity - person mask)^2 (none
of them on the crop's mirrored padding past the video frame's edge, :meth:`Frames.in_frame`), and
small penalties: mesh Gaussians leaving their triangle, Gaussians growing past their limits, the
expression MLP's offsets. ``background_augment``: that share of the items is laid over a random
colour by its person mask and rendered over it (:meth:`SplatMethod.random_backgrounds`); its
draws come from the loop's per-step generator, so resume stays exact.

Initialisation (deterministic): mesh Gaussians spread over their triangles; free Gaussians at
head-space points that the first training frame shows inside the person mask but outside the
face mesh's outline (in a box around the face mesh, behind the cheeks); every Gaussian's colour is the
first frame's colour where it lands; body Gaussians (if any) on the first frame's person
pixels from the chin down, behind the face; the background starts as the frames' mean outside
the person.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from portraitrig.errors import InputError
from portraitrig.face.model import load_default_model
from portraitrig.methods.splat.config import Config
from portraitrig.methods.splat.gaussians import SplatModel, render, rig_inputs, take
from portraitrig.methods.splat.raster import project
from portraitrig.neural.frames import Frames, frames_for_training, split_for_training
from portraitrig.neural.losses import ssim_torch
from portraitrig.training.method import TrainingMethod, unwrap

class SplatMethod(TrainingMethod):
    name = "splat"

    def __init__(self, config: Config, frames: Frames, device, say=print):
        self.config, self.device = config, torch.device(device)
        self.frames_all = frames
        self.face_model = load_default_model().to(self.device)
        split = split_for_training(frames, config.holdout, self.face_model, "splat", say)
        self.train_frames, self.held = split.train, split.held
        self.rig = rig_inputs(self.train_frames.params.to(self.device), self.face_model)
        cond = self.rig["cond"].cpu().double()
        mc = dataclasses.replace(config.model, image_size=frames.size, cond_dim=self.face_model.n_expr + 4,
                                 trusted_yaw=split.trusted_yaw, trusted_pitch=split.trusted_pitch,
                                 cond_low=tuple(cond.amin(0).tolist()), cond_high=tuple(cond.amax(0).tolist()))
        mc.validate()
        self.mc, self.size = mc, frames.size
        self.images = self.train_frames.images.to(self.device).permute(0, 3, 1, 2).contiguous()   # uint8
        self.masks = self.train_frames.masks.to(self.device)[:, None].contiguous()
        inside = self.train_frames.in_frame()                # where each crop shows its video frame
        # (N, 1, S, S) bool; None where every crop lies wholly in its frame (nothing to leave out)
        self.valid = None if bool(inside.all()) else inside.to(self.device)[:, None].contiguous()
        self.model = SplatModel(mc, self.face_model.faces.cpu()).to(self.device)
        self._initialise()
        if say:
            say(f"splat: {self.model.n_mesh} mesh + {self.model.n_free} free"
                + (f" + {self.model.n_body} body" if self.model.n_body else "") + " Gaussians")

    @classmethod
    def create(cls, config: Config, data, device, init=None, say=print, work_dir=None):
        """From a video (fitted; kept in ``config.frames_cache``, default ``work_dir/frames.safetensors``)
        or an avatar frames file."""
        config.validate()
        if init is not None:
            raise InputError(init, "the Gaussian avatar trains from scratch (no --init)")
        return cls(config, frames_for_training(config, data, config.model.image_size, work_dir, say), device, say=say)

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _initialise(self) -> None:
        from portraitrig.render.buffers import render_buffers

        model, S, dev = self.model, self.size, self.device
        r0 = take(self.rig, slice(0, 1))
        img0 = self.images[0].float() / 255
        person = self.masks[0, 0].float() / 255 > 0.5
        if self.valid is not None:
            person &= self.valid[0, 0]                                          # not the mirrored padding
        face = render_buffers(self.train_frames.params[0:1].to(dev), self.face_model, S, names=("mask",))["mask"][0, 0] > 0.5
        v = r0["verts"][0]
        lo, hi = v.amin(0), v.amax(0)
        w = float(hi[0] - lo[0])
        box_lo = torch.stack([lo[0] - 0.6 * w, lo[1] - 0.8 * w, lo[2] - 0.05 * w])
        box_hi = torch.stack([hi[0] + 0.6 * w, hi[1] + 0.8 * w, lo[2] + 1.1 * w])
        g = torch.Generator(device="cpu").manual_seed(0)
        rows = face.any(1).nonzero()
        chin = float(rows.max() + 1) if len(rows) else float(S)      # pixel row just below the face mesh
        if model.n_body:
            self._initialise_body(person, face, chin, r0, g)
        want, kept, tried = model.n_free, [], 0
        while want and sum(len(k) for k in kept) < want and tried < 64 * want + 4096:
            n = max(4096, 4 * want)
            pts = (box_lo.cpu() + (box_hi - box_lo).cpu() * torch.rand(n, 3, generator=g)).to(dev)
            tried += n
            px = self._pixels(pts, r0)
            ij = px.round().long().clamp(0, S - 1)
            on_person = person[ij[:, 1], ij[:, 0]]
            in_face = face[ij[:, 1], ij[:, 0]]
            # none inside the face's outline (the mesh Gaussians' part: free ones there would show
            # through them in turned views); beside it (hair, ears, neck) only behind the cheeks,
            # so that turned views do not find hair floating before the face
            behind = pts[:, 2] > lo[2] + 0.45 * w
            inside = (px >= 0).all(-1) & (px < S).all(-1)
            if model.n_body:  # below the chin is the body Gaussians' part
                inside &= px[:, 1] < chin
            kept.append(pts[inside & on_person & ~in_face & behind])
        pool = torch.cat(kept) if kept else torch.zeros(0, 3, device=dev)
        if want:
            if len(pool) == 0:  # no person mask: fall back to the box
                pool = (box_lo.cpu() + (box_hi - box_lo).cpu() * torch.rand(want, 3, generator=g)).to(dev)
                share = 1.0
            else:
                share = len(pool) / tried
            pool = pool[torch.arange(want, device=dev) % len(pool)]
            volume = float((box_hi - box_lo).prod()) * share
            model.init_free(pool, 0.5 * (volume / want) ** (1 / 3))
        # colours from the first frame where each Gaussian lands
        gs = model.gaussians(r0["verts"], r0["cond"], r0["scale"], r0["rot"], r0["trans"])
        px = self._pixels(gs["means"][0], r0)
        grid = (px / S * 2 - 1)[None, None]
        col = F.grid_sample(img0[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        model.init_colors(col[0, :, 0].T)
        # background: mean of the frames outside the person
        keep = (1 - self.masks.float() / 255) * (1 if self.valid is None else self.valid)
        num = (self.images.float() / 255 * keep).sum(0)
        den = keep.sum(0)
        mean_colour = (self.images.float() / 255).mean((0, 2, 3))[:, None, None]
        bg = torch.where(den > 0.5, num / den.clamp_min(1e-6), mean_colour)
        model.init_background(bg)

    @torch.no_grad()
    def _initialise_body(self, person, face, chin: float, r0, g) -> None:
        """Body Gaussians on the first frame's person pixels from just above the face mesh's
        lowest row down (neck, shoulders, hair on them), behind every face-mesh vertex."""
        model, S, dev = self.model, self.size, self.device
        rows = torch.arange(S, device=dev, dtype=torch.float32)[:, None].expand(S, S)
        pick = (person & ~face & (rows >= chin - 0.03 * S)).nonzero()
        if len(pick) == 0:  # nothing below the face: the lower fifth of the crop
            pick = (rows >= 0.8 * S).nonzero()
        want = model.n_body
        sel = pick[torch.randint(len(pick), (want,), generator=g).to(dev)].float()
        jitter = torch.rand(want, 2, generator=g).to(dev)
        xy = (sel.flip(-1) + jitter) / (S / 2) - 1                                    # (x, y) NDC
        cam = r0["scale"][0] * (r0["verts"][0] @ r0["rot"][0].T)                      # face vertices, camera
        depth = torch.full((want, 1), float(cam[:, 2].max()), device=dev)            # behind all of the face
        spacing = (len(pick) / want) ** 0.5 / (S / 2)                                # NDC units per Gaussian
        model.init_body(torch.cat([xy, depth], 1), spacing)

    def _pixels(self, points: torch.Tensor, rig) -> torch.Tensor:
        """Pixel positions (N, 2) of head-space points (N, 3) in the one item of ``rig``."""
        one = torch.eye(3, device=points.device)[None].expand(points.shape[0], -1, -1)
        pr = project(points[None], one, torch.ones_like(points), rig["scale"], rig["rot"], rig["trans"], self.size)
        return pr["means2d"][0]

    # ------------------------------------------------------------------ training
    def num_items(self) -> int:
        return len(self.train_frames)

    def run_identity(self) -> dict:
        return {"model": self.mc.to_dict(), "source": self.frames_all.source, "frames": len(self.frames_all),
                "holdout": self.config.holdout}

    def parameter_groups(self) -> list[dict]:
        """Per-kind learning rates (x the run's lr): positions slow, opacity and colour fast."""
        m = self.model
        scales = {"free_xyz": 0.5, "mesh_offset": 5.0, "mesh_quat": 1.0, "free_quat": 1.0,
                  "mesh_log_scale": 5.0, "free_log_scale": 5.0, "mesh_opacity": 25.0, "free_opacity": 25.0,
                  "mesh_color": 10.0, "free_color": 10.0, "mesh_feature": 2.5, "free_feature": 2.5,
                  "body_xyz": 0.25, "body_quat": 1.0, "body_log_scale": 5.0, "body_opacity": 25.0, "body_color": 10.0,
                  "background_image": 10.0}
        groups, rest = [], []
        for name, p in m.named_parameters():
            if name in scales:
                groups.append({"params": [p], "lr_scale": scales[name]})
            else:
                rest.append(p)
        return groups + [{"params": rest, "lr_scale": 1.0}]

    def loss(self, net, idx, step, generator):
        cfg = self.config
        rig = take(self.rig, idx)
        target = self.images[idx].float() / 255
        mask = self.masks[idx].float() / 255
        background: str | torch.Tensor = "learned"
        if cfg.background_augment > 0:
            target, background = self.random_backgrounds(unwrap(net), target, mask, generator)
        out = render(unwrap(net), rig, self.size, cfg.backend, background=background, net=net)
        # the crop's mirrored padding past the video frame's edge is no one's image: no loss sees it
        pred, alpha, valid = out["image"].float(), out["alpha"].float(), None
        if self.valid is not None:
            valid = self.valid[idx]
            pred, alpha = torch.where(valid, pred, target), torch.where(valid, alpha, mask)
        l1 = (pred - target).abs().mean()
        mse = ((pred.detach() - target) ** 2).mean()
        total = l1
        parts = {"l1": l1.detach(), "psnr": -10 * torch.log10(mse.clamp_min(1e-10))}
        if cfg.ssim_weight > 0:
            s = ssim_torch(pred, target, valid=valid)
            total = total + cfg.ssim_weight * (1 - s)
            parts["ssim"] = s.detach()
        occ = ((alpha - mask) ** 2).mean()
        off = (out["mesh_offset"] ** 2).sum(-1).mean()
        expr = (out["expr_offset"] ** 2).sum(-1).mean()
        big = unwrap(net).scale_excess()
        total = (total + cfg.mask_weight * occ + cfg.offset_weight * off + cfg.expression_weight * expr
                 + cfg.scale_weight * big)
        parts.update(mask=occ.detach(), offset=off.detach())
        return total, parts

    def random_backgrounds(self, model, target: torch.Tensor, mask: torch.Tensor, generator):
        """``background_augment``: each item with that probability gets a random solid colour
        behind the person, in its target (laid by the person mask) and in its render alike; the
        others keep the learned background. Returns (targets, backgrounds (B, 3, S, S))."""
        B, dev = target.shape[0], target.device
        pick = (torch.rand(B, generator=generator, device=dev) < self.config.background_augment).view(B, 1, 1, 1)
        colour = torch.rand(B, 3, 1, 1, generator=generator, device=dev).expand_as(target)   # masks: (B, 1, S, S)
        learned = model.background(self.size)[None].to(target).expand_as(target)
        target = torch.where(pick, target * mask + colour * (1 - mask), target)
        return target, torch.where(pick, colour, learned)

    # ------------------------------------------------------------------ outputs
    def _renderer(self, model):
        from portraitrig.methods.splat.renderer import SplatRenderer

        return SplatRenderer(model, self.mc, self.face_model, self.device,
                             self.train_frames.params[0:1].to(self.device), backend=self.config.backend)

    @torch.no_grad()
    def samples(self, ema, step):
        """Rows of [held-out render | held-out frame] (training frames when none is held out)."""
        src = self.held if len(self.held) else self.train_frames
        k = min(self.config.sample_count, len(src))
        out = self._renderer(ema).render(src.params[:k].to(self.device))
        real = src.images[:k].permute(0, 3, 1, 2).float() / 255
        rows = torch.cat([out.cpu(), real], 3)
        return torch.cat(list(rows), 1).permute(1, 2, 0).numpy()

    def export(self, ema, directory: Path) -> Path:
        return self._renderer(ema).save_pretrained(directory)


__all__ = ["SplatMethod"]
