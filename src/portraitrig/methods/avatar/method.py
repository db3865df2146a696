"""Avatar training as a :class:`~portraitrig.training.method.TrainingMethod`.

Items are training frames. One step: for each frame of the batch, ``rays_per_item`` random
pixels (jittered inside the pixel) with stratified samples along their orthographic rays; each
sample is taken to head space by the frame's pose, deformed (frame code + gated expression) and
looked up in the canonical field; colours composite over the learned background. Loss: colour
MSE + ``mask_weight`` * (opacity - person mask)^2 + ``rigid_weight`` * |deformation|^2 at the
rigid-head mesh vertices + ``code_weight`` * |code|^2. All random draws come from the step's
generator (exact resume).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from portraitrig.errors import InputError
from portraitrig.face.model import load_default_model
from portraitrig.methods.avatar.config import Config
from portraitrig.methods.avatar.field import AvatarModel, frame_inputs
from portraitrig.methods.avatar.rays import RigFrames, ortho_rays, pixel_ndc
from portraitrig.methods.avatar.render import composite, sample_along
from portraitrig.neural.frames import Frames, frames_for_training, split_for_training
from portraitrig.training.method import TrainingMethod, unwrap

def anneal_alpha(config: Config, step: int) -> float:
    """Coarse-to-fine position after ``step`` steps (0 .. deform_freqs)."""
    return config.model.deform_freqs * min(1.0, step / config.anneal_steps)


class AvatarMethod(TrainingMethod):
    name = "avatar"

    def __init__(self, config: Config, frames: Frames, device, say=print):
        self.config, self.device = config, torch.device(device)
        self.frames_all = frames
        self.face_model = load_default_model().to(self.device)
        split = split_for_training(frames, config.holdout, self.face_model, "avatar", say)
        self.train_frames, self.held = split.train, split.held
        n = len(self.train_frames)
        mc = dataclasses.replace(config.model, n_frames=n, image_size=frames.size,
                                 cond_dim=self.face_model.n_expr + 4,
                                 trusted_yaw=split.trusted_yaw, trusted_pitch=split.trusted_pitch)
        mc.validate()
        self.mc = mc
        self.model = AvatarModel(mc).to(self.device)
        self.images = self.train_frames.images.to(self.device)
        self.masks = self.train_frames.masks.to(self.device)
        self.valid = self.train_frames.in_frame().to(self.device)       # (N, S, S): not the mirrored padding
        self.rig = RigFrames(self.train_frames.params.to(self.device), self.face_model, mc,
                             frame=torch.arange(n, device=self.device))
        self.size = frames.size
        self._alpha = 0.0

    @classmethod
    def create(cls, config: Config, data, device, init=None, say=print, work_dir=None):
        """From a video (fitted; kept in ``config.frames_cache``, default ``work_dir/frames.safetensors``
        so a resumed run does not fit again) or an avatar frames file."""
        config.validate()
        if init is not None:
            raise InputError(init, "the avatar trains from scratch (no --init)")
        return cls(config, frames_for_training(config, data, config.model.image_size, work_dir, say), device, say=say)

    def num_items(self) -> int:
        return len(self.train_frames)

    def run_identity(self) -> dict:
        return {"model": self.mc.to_dict(), "source": self.frames_all.source, "frames": len(self.frames_all),
                "holdout": self.config.holdout}

    def loss(self, net, idx, step, generator):
        cfg, mc, S = self.config, self.mc, self.size
        B, R, n = idx.shape[0], cfg.rays_per_item, mc.samples
        alpha = anneal_alpha(cfg, step)
        self._alpha = anneal_alpha(cfg, step + 1)
        rig = self.rig.take(idx)
        pix = torch.randint(0, S * S, (B, R), device=self.device, generator=generator)
        jitter = torch.rand((B, R, 2), device=self.device, generator=generator) - 0.5
        ndc = pixel_ndc(S, self.device)[pix] + jitter * (2.0 / S)                   # (B, R, 2)
        gt = self.images[idx].view(B, S * S, 3).gather(1, pix[..., None].expand(-1, -1, 3)).float() / 255
        mask = self.masks[idx].view(B, S * S).gather(1, pix).float() / 255
        item = torch.arange(B, device=self.device)[:, None].expand(B, R).reshape(-1)
        origins, dirs = ortho_rays(ndc.reshape(-1, 2))
        t, delta = sample_along(rig.near[item], rig.far[item], n, generator)
        pts = origins[:, None] + t[..., None] * dirs[:, None]                         # (B R, n, 3)
        pitem = item[:, None].expand(-1, n).reshape(-1)
        head = rig.to_head(pts.reshape(-1, 3), pitem)
        cond, frame = frame_inputs(rig, head, pitem, mc)
        J = rig.rigid.shape[1]                                                          # rigid vertices: same pass
        ritem = torch.arange(B, device=self.device)[:, None].expand(B, J).reshape(-1)
        out = net(torch.cat([head, rig.rigid.reshape(-1, 3)]), torch.cat([cond, rig.cond[ritem]]),
                  torch.cat([frame, rig.frame[ritem]]), alpha)
        M = head.shape[0]
        res = composite(out["sigma"][:M].view(B * R, n), out["rgb"][:M].view(B * R, n, 3), t,
                        delta / rig.scale[item])                                       # head-space lengths
        bg = unwrap(net).background(ndc.reshape(-1, 2))
        rgb = res["rgb"] + (1 - res["opacity"][:, None]) * bg
        # rays through the crop's mirrored padding past the video frame's edge: no loss
        valid = self.valid[idx].view(B, S * S).gather(1, pix).reshape(-1)
        rgb = torch.where(valid[:, None], rgb, gt.reshape(-1, 3))
        opacity = torch.where(valid, res["opacity"], mask.reshape(-1))
        photo = ((rgb - gt.reshape(-1, 3)) ** 2).mean()
        occ = ((opacity - mask.reshape(-1)) ** 2).mean()
        rigid = (out["dx"][M:] ** 2).sum(-1).mean()
        code = (out["codes"][M:] ** 2).sum(-1).mean()
        loss = photo + cfg.mask_weight * occ + cfg.rigid_weight * rigid + cfg.code_weight * code
        psnr = -10 * torch.log10(photo.detach().clamp_min(1e-10))
        return loss, {"photo": photo.detach(), "mask": occ.detach(), "rigid": rigid.detach(), "psnr": psnr}

    def _renderer(self, ema):
        from portraitrig.methods.avatar.renderer import AvatarRenderer

        mc = dataclasses.replace(self.mc, deform_alpha=self._alpha)
        return AvatarRenderer(ema, mc, self.face_model, self.device, self._reference())

    def _reference(self):
        return self.train_frames.params[0:1].to(self.device)

    @torch.no_grad()
    def samples(self, ema, step):
        """Rows of [held-out render | held-out frame] (training frames when none is held out)."""
        src = self.held if len(self.held) else self.train_frames
        k = min(self.config.sample_count, len(src))
        r = self._renderer(ema)
        out = r.render(src.params[:k].to(self.device), occupancy=False)
        real = src.images[:k].permute(0, 3, 1, 2).float() / 255
        rows = torch.cat([out.cpu(), real], 3)
        return torch.cat(list(rows), 1).permute(1, 2, 0).numpy()

    def export(self, ema, directory: Path) -> Path:
        r = self._renderer(ema)
        pick = torch.linspace(0, len(self.train_frames) - 1, 8, device=self.device).long().unique()
        r.model.update_occupancy(self.rig.cond[pick], self.rig.verts[pick])
        return r.save_pretrained(directory)


__all__ = ["AvatarMethod", "anneal_alpha"]
