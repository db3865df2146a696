"""DiffusionRig training as a :class:`~portraitrig.training.method.TrainingMethod`: stage 1
(generic prior) and stage 2 (one person, appearance encoder frozen), on a training cache.

Images live on the device as uint8; buffers are rendered from the cached RigParams, once into
device memory when they fit (:class:`BufferBank`), else every step. One step: P2-weighted epsilon
loss on (x0, buffers) with timesteps and noise from the step's generator; with lighting
augmentation a share of the items is relit (:mod:`~portraitrig.methods.diffusionrig.augment`)
and the encoder sees the original photo.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.methods.diffusionrig.augment import LightAugment, random_lights, relight_batch
from portraitrig.methods.diffusionrig.config import Config, DiffusionConfig
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
from portraitrig.methods.diffusionrig.sampling import DDIMPlan, NoiseSchedule, ddim_sample
from portraitrig.neural.cache import FaceCache
from portraitrig.render import spec
from portraitrig.training import checkpoint as ck
from portraitrig.training.loop import dist_info, step_generator
from portraitrig.training.method import TrainingMethod

BufferFn = Callable[[RigParams], torch.Tensor]  # params (B) -> (B, C, S, S) network buffer stack


def take(params: RigParams, idx: torch.Tensor) -> RigParams:
    """Rows ``idx`` (a device tensor) of params without per-item host syncs (sources dropped)."""
    return params.replace(**{k: v[idx] for k, v in params.tensors().items()}, sources=[""] * int(idx.numel()))


class BufferBank:
    """Every item's buffers rendered once, kept on the device: a training step indexes them
    instead of rendering (no per-step render, no host syncs). The bank holds each item's own
    buffers, which never change during a run; lighting augmentation works on a step's copy."""

    def __init__(self, params: RigParams, buffer_fn: BufferFn, dtype: torch.dtype, chunk: int = 64):
        self.buffers = None  # allocated once, filled chunk by chunk: the peak is the bank + one chunk
        n = params.batch_size
        for a in range(0, n, chunk):
            idx = torch.arange(a, min(a + chunk, n), device=params.device)
            b = buffer_fn(take(params, idx))
            if self.buffers is None:
                self.buffers = torch.empty((n, *b.shape[1:]), dtype=dtype, device=b.device,
                                           memory_format=torch.channels_last)
            self.buffers[a:a + len(idx)].copy_(b)

    @staticmethod
    def nbytes(n: int, channels: int, size: int, dtype: torch.dtype) -> int:
        return n * channels * size * size * torch.empty((), dtype=dtype).element_size()

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.buffers[idx]


def select_items(cache: FaceCache, cfg: Config, say=print) -> FaceCache:
    """The cache items ``cfg``'s data selection names (group / exclude_group / train_items)."""
    if cfg.train_items is not None:
        idx, held = cache.split_group(cfg.group[0], cfg.train_items)
        if say:
            say(f"group {cfg.group[0]}: {len(idx)} training items, {len(held)} held out")
    else:
        idx = cache.indices_of(list(cfg.group), list(cfg.exclude_group))
    return cache.subset(idx)


def load_weights(model: DiffusionRigModel, source: str | Path, prefer_ema: bool = True) -> None:
    """Initialise from a model folder (save_pretrained) or a run folder / training checkpoint
    (its EMA weights); the configurations must agree."""
    source = Path(source)
    if source.is_dir() and not (source / "config.json").exists():
        ckpts = ck.list_checkpoints(source)
        if not ckpts:
            raise InputError(source, "neither a model folder nor a run folder with checkpoints")
        source = ckpts[-1]
    if source.is_dir():
        other = DiffusionRigModel.from_pretrained(source)
        _check_config(model.config, other.config, source)
        model.load_state_dict(other.state_dict())
        return
    tensors, header = ck.load_checkpoint(source)
    extra = header["extra"]
    data = (extra.get("config") or {}).get("model") or extra.get("model_config")
    if data is None:
        raise InputError(source, "checkpoint does not record its model configuration")
    _check_config(model.config, DiffusionConfig.from_dict(data, source), source)
    state = ck.prefixed(tensors, "ema." if prefer_ema else "model.") or ck.prefixed(tensors, "model.")
    if any(v.is_floating_point() and not torch.isfinite(v).all() for v in state.values()):
        raise InputError(source, "non-finite weights: this checkpoint cannot start a run")
    model.load_state_dict(state)


def _check_config(want: DiffusionConfig, have: DiffusionConfig, path) -> None:
    if want.to_dict() != have.to_dict():
        raise InputError(path, "model configuration differs from the one asked for "
                               "(use the same --preset as the stage-1 run)")


def sample_grid(model: DiffusionRigModel, images_u8: torch.Tensor, buffers: torch.Tensor,
                config: DiffusionConfig, steps: int, seed: int) -> np.ndarray:
    """DDIM samples from fixed noise: rows of [buffers..., sample, target] as (H', W', 3) in [0, 1]."""
    dev = images_u8.device
    x0 = images_u8.float() / 127.5 - 1
    cond = model.condition(model.encode(x0))
    g = torch.Generator(device=dev).manual_seed(seed)
    noise = torch.randn(x0.shape, device=dev, generator=g)
    plan = DDIMPlan.make(config, steps, device=dev)
    sample = ddim_sample(lambda x, t: model.denoise(x, t, buffers, cond), noise, plan, clip=True).clamp(-1, 1)
    cols = spec.preview(buffers, config.buffers) + [(sample.float() + 1) / 2, (x0.float() + 1) / 2]
    rows = torch.cat(cols, dim=3).clamp(0, 1)          # (N, 3, H, W * k)
    return torch.cat(list(rows), dim=1).permute(1, 2, 0).cpu().numpy()


def diffusion_loss(net, schedule: NoiseSchedule, x0: torch.Tensor, buffers: torch.Tensor, x_enc: torch.Tensor,
                   generator: torch.Generator, memory_format=torch.contiguous_format) -> torch.Tensor:
    """The P2-weighted epsilon loss of ``net`` (x_t, t, buffers, encoder image) -> eps on clean
    images x0 (B, 3, S, S) in [-1, 1]; timesteps and noise drawn from ``generator``."""
    dev = x0.device
    buffers = buffers.contiguous(memory_format=memory_format)
    t = torch.randint(0, schedule.T, (x0.shape[0],), device=dev, generator=generator)
    noise = torch.randn(x0.shape, device=dev, generator=generator).contiguous(memory_format=memory_format)
    x_t = schedule.add_noise(x0, noise, t)
    return schedule.loss(net(x_t, t, buffers, x_enc), noise, t)


class DiffusionRigMethod(TrainingMethod):
    name = "diffusion"

    def __init__(self, config: Config, cache: FaceCache, device, init: str | Path | None = None,
                 buffer_fn: BufferFn | None = None, say=print):
        self.config, self.cache, self.device = config, cache, torch.device(device)
        self.rank = dist_info()[1]
        mc = config.model
        if len(cache) == 0:
            raise InputError(None, "no training items selected")
        if cache.size != mc.image_size:
            raise InputError(None, f"cache images are {cache.size} px but the model is {mc.image_size} px "
                                   "(pick a preset of the cache's size, or `prepare --size`)")
        model = DiffusionRigModel(mc)
        if init is not None:
            load_weights(model, init)
        if config.stage == 2:
            model.freeze_encoder()
        if config.grad_checkpointing:
            model.unet.enable_gradient_checkpointing()
        self.model = model.to(self.device)
        self.schedule = NoiseSchedule(mc)
        self.images = cache.images().to(self.device)          # uint8, on the device
        self.params = cache.params.to(self.device)
        self.buffer_fn = buffer_fn or spec.BufferStack(mc.buffers, mc.image_size, self.device)
        cuda_bf16 = config.train.precision == "bf16" and self.device.type == "cuda"
        bank_dtype = torch.bfloat16 if cuda_bf16 else torch.float32
        need = BufferBank.nbytes(len(cache), mc.buffer_channels, mc.image_size, bank_dtype)
        budget = config.buffer_memory_gb * 1e9
        if self.device.type == "cuda":  # and never more than a quarter of what the GPU has free
            budget = min(budget, torch.cuda.mem_get_info(self.device)[0] / 4)
        self.bank = BufferBank(self.params, self.buffer_fn, bank_dtype) if need <= budget else None
        if say:
            where = f"rendered once into {self.device.type} memory" if self.bank is not None else "rendered every step"
            say(f"buffers: {where} ({need / 1e9:.2f} GB for {len(cache)} items, budget {budget / 1e9:.2f} GB)")
        self.light_aug = LightAugment(prob=config.light_augment) if config.light_augment > 0 else None
        self.memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
        n = min(config.sample_count, len(cache))
        self._fixed = torch.arange(n, device=self.device)

    @classmethod
    def create(cls, config: Config, data: str | Path | FaceCache, device, init=None, say=print, **kw):
        """From a cache file (or FaceCache), with ``config``'s data selection applied."""
        cache = FaceCache.load(data) if isinstance(data, (str, Path)) else data
        return cls(config, select_items(cache, config, say), device, init=init, say=say, **kw)

    def num_items(self) -> int:
        return len(self.cache)

    def run_identity(self) -> dict:
        return {"model": self.config.model.to_dict(), "stage": self.config.stage, "items": self.cache.ids}

    def buffers_of(self, idx: torch.Tensor) -> torch.Tensor:
        return self.bank[idx] if self.bank is not None else self.buffer_fn(take(self.params, idx))

    def loss(self, net, idx, step, generator):
        mf = self.memory_format
        x0 = (self.images[idx].float() / 127.5 - 1).contiguous(memory_format=mf)
        buffers = self.buffers_of(idx)
        x_enc = x0
        if self.light_aug is not None:  # its own generator of (seed, step, rank): exact resume holds
            light = self.params.light[idx]
            g = step_generator(self.device, self.config.train.seed + 7919, step, self.rank)
            new_light = random_lights(light, self.light_aug, g)
            x0, buffers = relight_batch(x0, buffers, light, new_light, self.config.model.buffers, self.light_aug)
            x0 = x0.contiguous(memory_format=mf)
        return diffusion_loss(net, self.schedule, x0, buffers, x_enc, generator, mf)

    @torch.no_grad()
    def samples(self, ema, step):
        buffers = self.buffer_fn(take(self.params, self._fixed))  # full precision
        return sample_grid(ema, self.images[self._fixed], buffers, self.config.model, self.config.sample_steps,
                           self.config.train.seed)

    def export(self, ema, directory):
        return ema.save_pretrained(directory)


__all__ = ["DiffusionRigMethod", "diffusion_loss", "BufferBank", "load_weights", "select_items", "sample_grid", "take"]
