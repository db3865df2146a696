"""Training the video renderer on the target's own video (a
:class:`~portraitrig.training.method.TrainingMethod` on the shared loop).

Everything is rendered once onto the training device: every training frame's face buffers and
two whole-portrait normal fields (from the frame's own person mask: what relights the target
image; from the mean person mask: what the network is conditioned on, as at reenactment, where
a frame's mask is unknown). One step: items t with their windows t-window+1..t; a share of
them is relit with random lights (ratio images of the whole person,
:func:`~portraitrig.render.portrait.relight_image`) and conditioned on that light's shading;
another share has its person moved over the still background by a random image-plane
similarity, the rig moved the same way (:meth:`VideoMethod.move`: head placements the video does
not show); where the fixed crop reaches past the video frame, the target is the still median
frame, not the mirrored padding; loss L1 + SSIM + image gradients (no downloaded weights), and
with a matte (``model.matte``) its L1 against the frame's person mask, moved with the person;
optionally (``adversarial``, ``feature_matching``; off in the presets) a patch critic's terms,
the critic trained beside the renderer by the shared loop. With a retrieval bank
(``model.retrieve``) each item's input also holds its retrieved training frame, relit to the
item's light (:class:`BankLight`) and moved with a moved item.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from portraitrig.errors import InputError
from portraitrig.light import sh
from portraitrig.methods.video.condition import Conditioner, warp
from portraitrig.methods.video.config import Config
from portraitrig.methods.video.data import VideoData, load_or_prepare
from portraitrig.methods.video.model import PatchCritic, VideoNet
from portraitrig.neural.losses import gradient_l1, image_loss, ssim_torch  # noqa: F401  (re-exported)
from portraitrig.render import spec
from portraitrig.render.portrait import relight_image
from portraitrig.training.method import TrainingMethod

TARGET = "target.safetensors"
ADV_RAMP = 500   # steps over which the adversarial terms ramp in after adv_start


def random_lights(old: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 9, 3) random lights at the exposure and colour balance of ``old`` (B, 9, 3): a light
    from azimuth -100..100 deg, elevation -30..60 deg, intensity 0.5..1.1, ambient 0.15..0.5,
    brought to the old light's exposure and colour (a fitted light carries part of the skin's
    colour: a white light would bleach the relit targets), then a mild random tint (x 0.85..1.15
    per channel) and exposure (x 0.8..1.25)."""
    B, dev = old.shape[0], old.device
    u = torch.rand(B, 8, generator=generator, device=dev)
    az, el = torch.deg2rad(-100 + 200 * u[:, 0]), torch.deg2rad(-30 + 90 * u[:, 1])
    d = torch.stack([el.cos() * az.sin(), -el.sin(), -el.cos() * az.cos()], -1)
    L = sh.directional_lights(d.float(), 0.5 + 0.6 * u[:, 5], (0.15 + 0.35 * u[:, 6])[:, None], torch.ones(B, 3, device=dev))
    L = sh.match_exposure(L, old.float())          # white: takes the old light's colour balance
    tint = 1 + 0.3 * (u[:, 2:5] - 0.5)
    return L * tint[:, None, :] * (0.8 * (1.25 / 0.8) ** u[:, 7]).view(B, 1, 1)


def median_frame(images: torch.Tensor, max_frames: int = 256, rows: int = 32) -> torch.Tensor:
    """(1, 3, S, S) per-pixel median in [0, 1] of (N, 3, S, S) uint8 frames (at most
    ``max_frames`` of them, evenly spaced; ``rows`` image rows at a time bound the memory)."""
    n = images.shape[0]
    pick = torch.linspace(0, n - 1, min(n, max_frames)).round().long().to(images.device)
    sub = images[pick]
    out = torch.cat([sub[:, :, r:r + rows].float().median(0).values for r in range(0, sub.shape[2], rows)], 1)
    return (out / 255)[None]


def random_moves(n: int, generator: torch.Generator, device, shift: float, roll_deg: float,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random image-plane similarities: matrices (n, 2, 2) (a turn within +-``roll_deg``
    times a size change within 1 +- ``scale``) and offsets (n, 2) within +-``shift`` (crop NDC)."""
    u = torch.rand(n, 4, generator=generator, device=device) * 2 - 1
    th = torch.deg2rad(roll_deg * u[:, 0])
    k = 1 + scale * u[:, 1]
    c, s = th.cos() * k, th.sin() * k
    M = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    return M, shift * u[:, 2:]


def inverse_2x2(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 2, 2) inverses in closed form (``torch.linalg.inv`` checks for singular matrices,
    a host synchronisation on a GPU each training step)."""
    a, b, c, d = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 1, 0], matrix[..., 1, 1]
    adj = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adj / (a * d - b * c)[..., None, None]


def image_theta(matrix: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) ``affine_grid`` map of the image moved by ``x -> matrix @ x + shift`` (crop NDC):
    each output point samples the input at ``matrix^-1 (x - shift)``."""
    inv = inverse_2x2(matrix.float())
    return torch.cat([inv, -(inv @ shift.float()[..., None])], 2)


def share_count(step: int, n: int, share: float) -> int:
    """How many of a step's ``n`` items take an augmentation given to a ``share`` of them:
    ``floor((step + 1) n share) - floor(step n share)``, the share exactly over any run of steps
    and known without reading the GPU (a random count would be a host synchronisation)."""
    return math.floor((step + 1) * n * share) - math.floor(step * n * share)


def move_person(image: torch.Tensor, mask: torch.Tensor, plate: torch.Tensor,
                theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The person of ``image`` (B, 3, S, S) (``mask`` (B, 1, S, S) in [0, 1]) moved by ``theta``
    (:func:`image_theta`) over the frame's own background, where the person uncovers it filled
    from ``plate`` (1 or B, 3, S, S), the still background: (the new image, its person mask).
    The crop's edge extends outward (a body cut by the crop's bottom stays cut there)."""
    image, mask = image.float(), mask.float()
    moved = warp(torch.cat([image, mask], 1), theta)
    im, m = moved[:, :3], moved[:, 3:]
    back = image * (1 - mask) + plate.float() * mask
    return im * m + back * (1 - m), m


def background_plate(images: torch.Tensor, masks: torch.Tensor, max_frames: int = 256, rows: int = 32,
                     min_seen: int = 3, median: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 3, S, S) the still background in [0, 1]: per pixel the median of the frames (at most
    ``max_frames``, evenly spaced) where ``masks`` (N, 1, S, S, in [0, 1]) says background;
    where fewer than ``min_seen`` frames show it, the median of all frames (what usually is
    there: hair, body): ``median``, :func:`median_frame` of the same frames when not given."""
    if median is None:
        median = median_frame(images, max_frames, rows)
    n = images.shape[0]
    pick = torch.linspace(0, n - 1, min(n, max_frames)).round().long().to(images.device)
    im, bg = images[pick], masks[pick] < 0.5
    out = []
    for r in range(0, im.shape[2], rows):
        x = im[:, :, r:r + rows].float()
        b = bg[:, :, r:r + rows].expand_as(x)
        free = torch.where(b, x, torch.full_like(x, float("nan"))).nanmedian(0).values
        seen = b.sum(0) >= min_seen
        out.append(torch.where(seen, free / 255, median[0, :, r:r + rows].to(free.dtype)))
    return torch.cat(out, 1)[None]


class BankLight:
    """What relights the retrieval bank's frames (``model.retrieve``) to another light, as the
    relit training targets are (:func:`relight_image`): per bank frame (R) the whole-portrait
    normals the network sees (R, 3, S, S), its person mask (R, 1, S, S), the face mesh's mask
    (R, 1, S, S) and the frame's light (R, 9, 3). A retrieved frame then brings the detail of the
    target in a similar pose, not the light it was filmed in."""

    def __init__(self, normals: torch.Tensor, mask: torch.Tensor, face: torch.Tensor, light: torch.Tensor):
        self.normals, self.mask, self.face, self.light = normals, mask, face, light

    def relight(self, frames: torch.Tensor, pick: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """``frames`` (B, 3, S, S) uint8, the bank's entries ``pick`` (B,), relit to ``light``
        (B, 9, 3): (B, 3, S, S) in [0, 1]."""
        with torch.autocast(frames.device.type, enabled=False):
            return relight_image(frames.float() / 255, self.normals[pick].float(), self.mask[pick].float(),
                                 self.light[pick].float(), light.float(), face_mask=self.face[pick].float())

    def retrieved(self, bank: torch.Tensor, pick: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """The network's retrieved input: (B, 3 x count, S, S) in [0, 1], each item's bank entries
        ``pick`` (B, count) of ``bank`` (R, 3, S, S) uint8 relit to its ``light`` (B, 9, 3), in
        order."""
        B, count = pick.shape
        flat = pick.reshape(-1)
        out = self.relight(bank[flat], flat, light.repeat_interleave(count, 0))
        return out.reshape(B, 3 * count, *out.shape[-2:])


# ---------------------------------------------------------------------- the method
class VideoMethod(TrainingMethod):
    name = "video"

    def __init__(self, config: Config, data: VideoData, device, init=None, say=print):
        mc = config.model
        if data.size != mc.image_size:
            raise InputError(data.video or None, f"video data is {data.size} px but the model is {mc.image_size} px "
                                                 "(pick the preset of the data's size)")
        n = data.n_train
        if n < 1:
            raise InputError(data.video or None, "no training frames")
        if mc.retrieve > n:   # a bank holds each training frame once at most (the model records its size)
            mc = dataclasses.replace(mc, retrieve=n)
            config = dataclasses.replace(config, model=mc)
        self.config, self.data, self.device = config, data, torch.device(device)
        model = VideoNet(mc)
        if init is not None:
            other = VideoNet.from_pretrained(init)
            if other.config.to_dict() != mc.to_dict():
                raise InputError(init, "model configuration differs from the one asked for")
            model.load_state_dict(other.state_dict())
        self.cond = Conditioner(mc, self.device)
        self.images = data.crops()[:n].to(self.device)                           # uint8 (n, 3, S, S)
        masks = data.masks[:n].to(self.device).float() / 255                     # (n, 1, S, S)
        self.params = data.params[:n].to(self.device, torch.float32)
        median = median_frame(self.images)
        with torch.no_grad():
            model.person_prior.copy_(masks.mean(0, keepdim=True).cpu())
            if mc.reference:
                model.reference.copy_(median.cpu())
            if mc.follow_head:
                model.head_pose.copy_(Conditioner.mean_head_pose(self.params).cpu())
            if mc.still_body:
                model.head_ellipse.copy_(Conditioner.head_ellipse(self.cond.face_model, self.params, model.head_pose))
        self.model = model.to(self.device)
        self.cond.set_prior(self.model.person_prior, getattr(self.model, "reference", None),
                            getattr(self.model, "head_pose", None), getattr(self.model, "head_ellipse", None))
        half = self.device.type == "cuda" and config.train.precision == "bf16"
        bank_dtype = torch.bfloat16 if half else torch.float32
        faces, n_true, n_cond, cmask, heads = [], [], [], [], []
        for i in range(0, n, 32):  # chunks bound the rasterizer's and the multigrid's memory
            f = self.cond.face(self.params[i:i + 32])
            h = self.cond.head_warp(self.params[i:i + 32]) if mc.follow_head else None
            if h is not None:
                heads.append(h)
            faces.append(f.to(bank_dtype))
            n_true.append(self.cond.normals(f, masks[i:i + 32]).to(bank_dtype))
            n_cond.append(self.cond.prior_normals(f, h).to(bank_dtype))
            cmask.append(self.cond.cond_mask(f).to(bank_dtype))
        self.faces, self.normals_true = torch.cat(faces), torch.cat(n_true)
        self.normals_cond, self.cond_masks = torch.cat(n_cond), torch.cat(cmask)
        self.masks = masks.to(bank_dtype)
        self.heads = torch.cat(heads) if heads else None
        if say:
            say(f"video renderer: {n} training frames, {len(data) - n} held out, {mc.image_size} px, "
                f"window {mc.window}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
        self.plate = background_plate(self.images, masks, median=median) if config.move_augment > 0 else None
        # where the fixed crop reaches past the video frame its pixels are mirrored padding,
        # which no output shows: the network is taught the still median frame there instead of
        # spending itself on a mirrored copy of the moving person
        inside = data.in_frame().to(self.device)
        self.padding = None if bool(inside.all()) else (inside, median)
        self.picks = self._set_bank(median) if mc.retrieve else None   # (gaps, n, count): each item's at each gap
        # with train.compile the loss is compiled too: its ~80 small kernels (SSIM's pools, the
        # gradients) fused into a few, fewer launches for a step limited by the host
        self.image_loss = torch.compile(image_loss, dynamic=False) if config.train.compile else image_loss
        k = min(config.sample_count, n)
        self._fixed = torch.linspace(0, n - 1, k).round().long().to(self.device)
        if config.adversarial > 0 or config.feature_matching > 0:   # the shared loop trains it beside the model
            self.critic = PatchCritic(mc.in_channels, config.critic_width).to(self.device)
        self._judged = None   # what the last step's loss showed the critic (for the critic's step)

    @classmethod
    def create(cls, config: Config, data, device, init=None, say=print, work_dir=None):
        """From a VideoData, a video cache (.safetensors) or the target video (prepared into
        ``work_dir/data/``)."""
        vd = load_or_prepare(data, config.model.image_size, work_dir, config.holdout, config.max_frames,
                             config.fit_device, say=say)
        return cls(config, vd, device, init=init, say=say)

    def num_items(self) -> int:
        return self.data.n_train

    def run_identity(self) -> dict:
        return {"model": self.config.model.to_dict(), "frames": self.data.n_train, "video": self.data.video}

    def parameter_groups(self) -> list[dict]:
        """The network at the run's learning rate, the neural texture at ``texture_lr`` times it."""
        tex = [p for n, p in self.model.named_parameters() if n.startswith("texture.")]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("texture.")]
        return [{"params": rest, "lr_scale": 1.0}] + ([{"params": tex, "lr_scale": self.config.texture_lr}] if tex else [])

    @torch.no_grad()
    def _set_bank(self, median: torch.Tensor) -> torch.Tensor:
        """Fill the model's retrieval bank (``model.retrieve`` training frames, evenly spaced;
        the crop's padding past the video frame shown as the median frame, as the targets are)
        and its keys; returns each training frame's retrieved bank entries at each of
        ``retrieve_gaps`` (gaps, n_train, retrieve_count): the nearest by
        :meth:`Conditioner.retrieval_keys` among those more than that many frames away (at most a
        quarter of the frames), as a held-out or driven frame's own neighbours are not in the
        bank, spread as :meth:`Conditioner.nearest_spread` spreads them."""
        mc = self.config.model
        n, R = self.data.n_train, mc.retrieve
        src = torch.linspace(0, n - 1, R, device=self.device).round().long()
        keys = torch.cat([self.cond.retrieval_keys(self.params[i:i + 256]) for i in range(0, n, 256)])
        bank = self.images[src]
        if self.padding is not None:
            inside, med = self.padding
            bank = torch.where(inside, bank, (med * 255).round().to(torch.uint8))
        self.model.bank.copy_(bank)
        self.model.bank_keys.copy_(keys[src])
        self.model.bank_index.copy_(src)
        # what relights a bank frame (as the renderer makes it from the frame's rig): the network's
        # whole-portrait normals and person mask, the face mesh's mask, the frame's light
        self.bank_light = BankLight(self.normals_cond[src], self.cond_masks[src],
                                    self.cond.face_mask(self.faces[src]), self.params.light[src])
        apart = (src[None] - torch.arange(n, device=self.device)[:, None]).abs()
        return torch.stack([Conditioner.nearest_spread(keys, keys[src], mc.retrieve_count, src, mc.retrieve_apart,
                                                       apart <= min(g, n // 4))
                            for g in self.config.retrieve_gaps])

    def bank_picks(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """(B, retrieve_count) the items' retrieved bank entries: each item's at a gap drawn for it from
        ``retrieve_gaps`` (with a ``generator`` and several gaps; training), else at the first
        gap. None without ``retrieve``."""
        if self.picks is None:
            return None
        if generator is None or len(self.picks) == 1:
            return self.picks[0, idx]
        level = torch.randint(len(self.picks), idx.shape, generator=generator, device=self.device)
        return self.picks[level, idx]

    def retrieved(self, pick: torch.Tensor | None, light: torch.Tensor) -> torch.Tensor | None:
        """(B, 3 x retrieve_count, S, S) in [0, 1]: the bank entries ``pick`` (B, retrieve_count)
        (:meth:`bank_picks`) relit from their own light to ``light`` (B, 9, 3), the light the
        network is conditioned on (None without a pick)."""
        if pick is None:
            return None
        return self.bank_light.retrieved(self.model.bank, pick, light)

    def inputs(self, idx: torch.Tensor, light: torch.Tensor, retrieved: torch.Tensor | None = None) -> torch.Tensor:
        """The items' network input under ``light``; ``retrieved``: their relit bank frames
        (:meth:`retrieved`; by default those at the first gap)."""
        if retrieved is None:
            retrieved = self.retrieved(self.bank_picks(idx), light)
        win = Conditioner.window_index(idx, self.config.model.window)
        return self.cond.inputs(self.faces, win, self.normals_cond[idx], light, self.cond_masks[idx],
                                None if self.heads is None else self.heads[idx], retrieved)

    def loss(self, net, idx, step, generator):
        idx = idx.to(self.device)
        target = self.images[idx].float() / 255
        light = self.params.light[idx]
        if self.config.light_augment > 0:
            relit = torch.rand(len(idx), generator=generator, device=self.device) < self.config.light_augment
            new = random_lights(light, generator)
            new = torch.where(relit.view(-1, 1, 1), new, light)
            target = torch.where(relit.view(-1, 1, 1, 1),
                                 relight_image(target, self.normals_true[idx].float(), self.masks[idx].float(),
                                               light, new, face_mask=self.cond.face_mask(self.faces[idx]).float()),
                                 target)
            light = new
        ret = self.retrieved(self.bank_picks(idx, generator), light)
        x = self.inputs(idx, light, ret)
        mask = self.masks[idx].float()
        if self.plate is not None:
            x, target, mask = self.move(idx, light, x, target, mask, generator, step, ret)
        if self.padding is not None:
            inside, median = self.padding
            target = torch.where(inside, target, median)
            mask = mask * inside
        if self.config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        pred = net(x)
        total, parts = self.image_loss(pred[:, :3], target, self.config.ssim_weight, self.config.grad_weight)
        if self.config.model.matte:   # the person's matte: L1 against the (moved) person mask
            matte = (pred[:, 3:].float() - mask).abs().mean()
            total = total + self.config.matte_weight * matte
            parts = {**parts, "matte": matte.detach()}
        if self.critic is not None:
            total, parts = self._adversarial(x, pred[:, :3], target, step, total, parts)
        return total, parts

    def adversarial_start(self) -> int:
        """The step the adversarial terms start at: ``adv_start`` of the run's steps."""
        return int(self.config.adv_start * self.config.train.steps)

    def adversarial_weight(self, step: int) -> float:
        """How much of the adversarial terms is on at ``step``: 0 before
        :meth:`adversarial_start` (the renderer first learns the frames from L1 and SSIM alone),
        then a ramp to 1 over ``ADV_RAMP`` steps."""
        return min(1.0, max(0.0, (step - self.adversarial_start() + 1) / ADV_RAMP))

    def _adversarial(self, x, fake, target, step, total, parts):
        """The renderer's adversarial terms (the critic frozen by the loop): the hinge loss's
        -D(render) and the L1 between the critic's features of the render and of the frame; the
        critic's step then judges the same batch (:meth:`critic_loss`)."""
        c, ramp = self.config, self.adversarial_weight(step)
        self._judged = None
        if ramp <= 0:
            return total, parts
        cond = x.detach()
        both = torch.cat([fake, target.to(fake.dtype)]) if c.feature_matching > 0 else fake
        score, feats = self.critic(both, torch.cat([cond, cond]) if c.feature_matching > 0 else cond)
        B = fake.shape[0]
        adv = -score[:B].float().mean()
        total = total + ramp * c.adversarial * adv
        parts = {**parts, "adv": adv.detach()}
        if c.feature_matching > 0:
            fm = sum((f[:B].float() - f[B:].detach().float()).abs().mean() for f in feats) / len(feats)
            total = total + ramp * c.feature_matching * fm
            parts["fm"] = fm.detach()
        self._judged = (cond, fake.detach(), target)
        return total, parts

    def critic_optimizer(self) -> dict:
        return {"lr_scale": self.config.critic_lr, "betas": (0.5, 0.999)}

    def critic_loss(self, critic, step, generator):
        """Hinge loss of the critic on the last step's frames (real) and renders (fake), each
        beside the network input they came from; None before the adversarial terms start."""
        if self._judged is None:
            return None
        cond, fake, real = self._judged
        self._judged = None
        B = fake.shape[0]
        score, _ = critic(torch.cat([real.to(fake.dtype), fake]), torch.cat([cond, cond]))
        real_s, fake_s = score[:B].float(), score[B:].float()
        loss = torch.relu(1 - real_s).mean() + torch.relu(1 + fake_s).mean()
        return loss, {"real": real_s.mean().detach(), "fake": fake_s.mean().detach()}

    @torch.no_grad()
    def move(self, idx, light, x, target, mask, generator, step: int = 0, retrieved=None):
        """A share (``move_augment``) of the items moved over the background plate by random
        image-plane similarities about their heads (:func:`share_count` of them at ``step``, the
        items a random choice): the target's person (and its person ``mask``) is moved
        (:func:`move_person`; returns the new x, target and mask), and the
        network input is made for the rig moved the same way
        (:func:`~portraitrig.edits.move_in_image`): the window's face buffers moved
        (:meth:`Conditioner.move_faces`), the portrait normals over the prior, the
        head-following warp, the retrieved bank frame (``retrieved``, the items' as in ``x``; by
        default those at the first gap) -- what a reenactment placing the head there shows the network.
        Made in fp32 outside the step's autocast, as the unmoved items' buffers were; no host
        synchronisation (the GPU runs on while the next step is prepared)."""
        with torch.autocast(self.device.type, enabled=False):
            return self._move(idx, light, x, target, mask, generator, step, retrieved)

    def _move(self, idx, light, x, target, mask, generator, step, retrieved):
        c = self.config
        order = torch.rand(len(idx), generator=generator, device=self.device)
        M, d = random_moves(len(idx), generator, self.device, c.move_shift, c.move_roll, c.move_scale)
        n = share_count(step, len(idx), c.move_augment)
        if not n:
            return x, target, mask
        k = order.argsort()[:n]                                    # which items: a random choice
        M, d, W = M[k], d[k], c.model.window
        centre = self.params.translation[idx[k]]
        shift = centre + d - (M @ centre[..., None])[..., 0]      # about the head: x -> M (x - c) + c + d
        theta = image_theta(M, shift)
        win = Conditioner.window_index(idx[k], W).reshape(-1)
        faces = self.cond.move_faces(self.faces[win], theta.repeat_interleave(W, 0))
        index = torch.arange(len(win), device=self.device).view(n, W)
        now = faces[index[:, -1]]
        head = None if self.heads is None else Conditioner.move_head_warp(self.heads[idx[k]], theta)
        ret = self.retrieved(self.bank_picks(idx[k]), light[k]) if retrieved is None else retrieved[k]
        xm = self.cond.inputs(faces, index, self.cond.prior_normals(now, head).to(faces.dtype), light[k],
                              self.cond.cond_mask(now), head, None if ret is None else warp(ret, theta))
        moved, person = move_person(target[k], mask[k], self.plate, theta)
        return (x.index_copy(0, k, xm.to(x.dtype)), target.index_copy(0, k, moved.to(target.dtype)),
                mask.index_copy(0, k, person.to(mask.dtype)))

    @torch.no_grad()
    def samples(self, ema, step):
        idx = self._fixed
        light = self.params.light[idx]
        left = sh.match_exposure(sh.preset("left").to(self.device).expand_as(light), light)
        pred = ema(self.inputs(idx, light).float()).float()
        relit = ema(self.inputs(idx, left).float()).float()[:, :3]
        shade = spec.preview(self.faces[idx].float(), self.config.model.buffers)[0]
        cols = [shade, pred[:, :3], relit, self.images[idx].float() / 255]
        if self.config.model.matte:   # the matte over black
            cols.insert(3, pred[:, :3] * pred[:, 3:].clamp(0, 1))
        rows = torch.cat(cols, 3).clamp(0, 1)
        return torch.cat(list(rows), 1).permute(1, 2, 0).cpu().numpy()

    def export(self, ema, directory):
        d = ema.save_pretrained(directory)
        v = self.data
        write_target(Path(d) / TARGET, v.params, v.frame_index, v.crop, v.fps, v.video, v.n_train)
        return d


def write_target(path: str | Path, params, frame_index: torch.Tensor, crop, fps: float, video: str,
                 n_train: int) -> Path:
    """The target video's description a reenactment needs: every frame's RigParams (fixed-crop
    NDC), frame numbers, the crop, the video's size, frame rate and path, the training count."""
    extras = {"affine": torch.from_numpy(np.asarray(crop.affine, np.float64)),
              "image_size": torch.tensor(list(crop.image_size), dtype=torch.int64),
              "frame_index": frame_index.long()}
    meta = {"fps": float(fps), "video": video, "n_train": int(n_train), "crop_size": int(crop.size)}
    return params.save(path, extras=extras, meta=meta)


__all__ = ["VideoMethod", "BankLight", "ADV_RAMP", "median_frame", "background_plate", "move_person", "image_theta", "random_moves",
           "image_loss", "ssim_torch", "gradient_l1", "random_lights", "share_count", "inverse_2x2", "write_target",
           "TARGET"]
