"""Training of the DiffusionRig renderer, stage 1 (generic prior) and stage 2 (one person).

One script for 1 or N GPUs (``torchrun --nproc_per_node N``: DDP, the data order is sharded by
rank, only rank 0 writes). Images live on the device as uint8; buffers are rendered from the
cached RigParams on the fly. bf16 autocast, EMA, gradient clipping, channels_last, fused AdamW
on CUDA, optional torch.compile and gradient checkpointing.

Exact resume: the data order and the noise of step s depend only on (seed, s, rank), and the
checkpoint holds model, EMA, optimizer, step and the global RNG states, so a run killed and
resumed gives the same weights as one run straight through.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from portraitrig.training import checkpoint as ck
from portraitrig.methods.diffusionrig.augment import LightAugment, random_lights, relight_batch
from portraitrig.methods.diffusionrig.augment import check_names as check_light_names
from portraitrig.methods.diffusionrig.config import DiffusionConfig
from portraitrig.neural.cache import FaceCache
from portraitrig.methods.diffusionrig.model import DiffusionRigModel, inductor_options
from portraitrig.methods.diffusionrig.sampling import DDIMPlan, NoiseSchedule, ddim_sample
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams

BufferFn = Callable[[RigParams], torch.Tensor]  # params (B) -> (B, C, S, S) normalised buffers


@dataclass
class TrainConfig:
    stage: int = 1
    steps: int = 10000
    batch_size: int = 16           # per GPU
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    precision: str = "bf16"        # "bf16" | "fp16" (with GradScaler) | "fp32"
    compile: bool = False
    compile_mode: str | None = None  # None/"default", "reduce-overhead", "max-autotune[-no-cudagraphs]"
    channels_last: bool = True
    grad_checkpointing: bool = False
    fused_adam: bool = True        # on CUDA only
    seed: int = 0
    ckpt_every: int = 1000
    keep: int = 3
    log_every: int = 20
    sample_every: int = 1000
    sample_count: int = 4
    sample_steps: int = 20
    time_limit_s: float | None = None  # stop (checkpoint + model) after this long, as if steps were reached
    buffer_memory_gb: float = 8.0  # render every item's buffers once into device memory when they fit
    light_augment: float = 0.0     # share of items relit each step (ratio images, see diffusion/augment.py)


# ---------------------------------------------------------------------- buffers
class RigBuffers:
    """RigParams -> normalised buffer tensor (B, C, S, S) with helper C's batched renderer."""

    def __init__(self, names, size: int, device, face_model=None):
        from portraitrig.render.buffers import Renderer

        if face_model is None:
            from portraitrig.face.model import load_default_model

            face_model = load_default_model()
        self.names = tuple(n for n in names)
        self.renderer = Renderer(face_model, size=size, device=device, names=self.names)

    @torch.no_grad()
    def __call__(self, params: RigParams) -> torch.Tensor:
        from portraitrig.methods.diffusionrig.model import buffers_to_tensor

        return buffers_to_tensor(self.renderer(params), self.names)


# ---------------------------------------------------------------------- helpers
def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def batch_indices(step: int, n_items: int, batch: int, rank: int, world: int, seed: int) -> torch.Tensor:
    """Items of ``rank``'s batch at ``step``: a seeded permutation per epoch over a flat stream,
    global batch = world * batch, rank r takes its slice. Depends only on the arguments."""
    start = (step * world + rank) * batch
    ks = torch.arange(start, start + batch)
    epochs, pos = ks // n_items, ks % n_items
    out = torch.empty(batch, dtype=torch.long)
    for e in epochs.unique().tolist():
        g = torch.Generator().manual_seed(seed * 100003 + e)
        perm = torch.randperm(n_items, generator=g)
        sel = epochs == e
        out[sel] = perm[pos[sel]]
    return out


def _take(params: RigParams, idx: torch.Tensor) -> RigParams:
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
            b = buffer_fn(_take(params, idx))
            if self.buffers is None:
                self.buffers = torch.empty((n, *b.shape[1:]), dtype=dtype, device=b.device,
                                           memory_format=torch.channels_last)
            self.buffers[a:a + len(idx)].copy_(b)

    @staticmethod
    def nbytes(n: int, channels: int, size: int, dtype: torch.dtype) -> int:
        return n * channels * size * size * torch.empty((), dtype=dtype).element_size()

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.buffers[idx]


# torch.compile modes as Inductor options (torch.compile takes a mode or options, not both)
_MODE_OPTIONS = {"default": {}, "reduce-overhead": {"triton.cudagraphs": True},
                 "max-autotune-no-cudagraphs": {"max_autotune": True},
                 "max-autotune": {"max_autotune": True, "triton.cudagraphs": True}}


def _step_generator(device, seed: int, step: int, rank: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 1009 + rank) % (2 ** 63))
    return g


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ep = [p for p in ema.parameters()]
    mp = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ep, mp, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def load_weights(model: DiffusionRigModel, source: str | Path, prefer_ema: bool = True) -> None:
    """Initialise from a model folder (save_pretrained) or a training checkpoint (EMA weights)."""
    source = Path(source)
    if source.is_dir():
        if ck.list_checkpoints(source) and not (source / "model.safetensors").exists():
            source = ck.list_checkpoints(source)[-1]
        else:
            other = DiffusionRigModel.from_pretrained(source)
            _check_config(model.config, other.config, source)
            model.load_state_dict(other.state_dict())
            return
    tensors, header = ck.load_checkpoint(source)
    cfg = DiffusionConfig.from_dict(header["extra"]["model_config"])
    _check_config(model.config, cfg, source)
    model.load_state_dict(ck.prefixed(tensors, "ema." if prefer_ema else "model."))


# settings a resumed run may change freely (they do not change what is learned, or only extend it)
_FREE_ON_RESUME = {"steps", "time_limit_s", "ckpt_every", "keep", "log_every", "sample_every", "sample_count",
                   "sample_steps", "compile", "compile_mode", "channels_last", "grad_checkpointing", "fused_adam",
                   "buffer_memory_gb"}


def check_resume(old: dict, new: dict, path, warn=print) -> None:
    """A run folder's last checkpoint (``old``: its ``extra``) against the run asked for now.
    Another model, stage or item list would mix two runs in one folder: InputError. Other
    changed settings (batch, seed, learning rate, GPUs, ...) are allowed and reported: the run
    goes on, but is no longer the same as one uninterrupted run."""
    new = json.loads(json.dumps(new))  # tuples -> lists, as the checkpoint stored them
    if old.get("model_config") is not None and (DiffusionConfig.from_dict(old["model_config"])
                                                != DiffusionConfig.from_dict(new["model_config"])):
        raise InputError(path, "this run folder holds a different model configuration; use a new --out "
                               "folder, or the run's own settings")
    if old.get("items") is not None and old["items"] != new["items"]:
        raise InputError(path, f"this run folder was trained on other items ({len(old['items'])} before, "
                               f"{len(new['items'])} now); use a new --out folder, or the same data selection")
    oc, nc = old.get("train_config") or {}, new["train_config"]
    if "stage" in oc and oc["stage"] != nc["stage"]:
        raise InputError(path, f"this run folder is a stage-{oc['stage']} run; stage {nc['stage']} needs its "
                               "own --out folder (stage 2 starts from it with --init)")
    changed = [f"{k} {oc[k]!r} -> {nc[k]!r}" for k in sorted(nc) if k in oc and k not in _FREE_ON_RESUME
               and oc[k] != nc[k]]
    if old.get("world_size") not in (None, new["world_size"]):
        changed.append(f"GPUs {old['world_size']} -> {new['world_size']}")
    if changed and warn is not None:
        warn(f"resuming {path} with changed settings: {', '.join(changed)} "
             "(the run goes on, but is no longer the same as one uninterrupted run)")


def _check_config(want: DiffusionConfig, have: DiffusionConfig, path) -> None:
    if want.to_dict() != have.to_dict():
        raise InputError(path, "model configuration differs from the one asked for "
                               "(use the same --config as the stage-1 run)")


def _grid(buffers: torch.Tensor, names, samples: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rows of [buffers..., sample, target] as one (H', W', 3) float image in [0, 1]."""
    from portraitrig.methods.diffusionrig.config import BUFFER_CHANNELS

    cols, c = [], 0
    for n in names:
        k = BUFFER_CHANNELS[n]
        b = buffers[:, c:c + k].float()
        c += k
        if n == "normal":
            b = b * 0.5 + 0.5
        elif n == "regions":
            b = (b[:, 1:4] + 1) / 2
        else:
            b = (b + 1) / 2 if n != "depth" else b
        cols.append(b[:, :3] if b.shape[1] >= 3 else b[:, :1].expand(-1, 3, -1, -1))
    cols += [(samples.float() + 1) / 2, (targets.float() + 1) / 2]
    rows = torch.cat(cols, dim=3).clamp(0, 1)          # (N, 3, H, W * k)
    return torch.cat(list(rows), dim=1).permute(1, 2, 0)


# ---------------------------------------------------------------------- training
class Trainer:
    """Model, EMA, optimizer, (optional) DDP/compile wrapper and the training step.

    One step: P2-weighted epsilon loss of the model on (x0, buffers) with timesteps and noise
    drawn from a generator seeded by (seed, step, rank), optimizer step, clip, EMA update."""

    def __init__(self, model_config: DiffusionConfig, cfg: TrainConfig, device, init=None,
                 world: int = 1, rank: int = 0):
        self.cfg, self.model_config, self.dev = cfg, model_config, torch.device(device)
        self.world, self.rank = world, rank
        torch.manual_seed(cfg.seed)
        model = DiffusionRigModel(model_config)
        if init is not None:
            load_weights(model, init)
        if cfg.stage == 2:
            model.freeze_encoder()
        model.to(self.dev)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.grad_checkpointing:
            model.unet.enable_gradient_checkpointing()
        self.model = model
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        fused = cfg.fused_adam and self.dev.type == "cuda"
        self.opt = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                                     **({"fused": True} if fused else {}))
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=cfg.precision == "fp16")
        self.schedule = NoiseSchedule(model_config)
        net = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if cfg.compile:
            options = {**inductor_options(cfg.channels_last), **_MODE_OPTIONS[cfg.compile_mode or "default"]}
            net = torch.compile(net, options=options)  # options, not mode=: torch.compile takes one
        self.net = net
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model.train()

    def step(self, x0: torch.Tensor, buffers: torch.Tensor, step: int,
             encoder_input: torch.Tensor | None = None) -> torch.Tensor:
        """One optimisation step on x0 (B, 3, S, S) in [-1, 1] and buffers (B, C, S, S);
        ``step`` is the number of steps done before (seeds the noise, sets the LR warm-up);
        ``encoder_input``: the appearance encoder's image when it is not x0 (lighting
        augmentation: the original photo). Returns the loss (0-dim tensor, not synchronised)."""
        cfg, mf = self.cfg, self.memory_format
        gen = _step_generator(self.dev, cfg.seed, step, self.rank)
        x0 = x0.contiguous(memory_format=mf)
        x_enc = x0 if encoder_input is None else encoder_input.contiguous(memory_format=mf)
        buffers = buffers.contiguous(memory_format=mf)
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=self.dev, generator=gen)
        noise = torch.randn(x0.shape, device=self.dev, generator=gen).contiguous(memory_format=mf)
        x_t = self.schedule.add_noise(x0, noise, t)
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        for g in self.opt.param_groups:
            g["lr"] = lr
        with (torch.autocast(self.dev.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()):
            eps = self.net(x_t, t, buffers, x_enc)
        loss = self.schedule.loss(eps, noise, t)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        self.grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        ema_update(self.ema, self.model, min(cfg.ema_decay, (2 + step) / (11 + step)))
        return loss.detach()

    def save(self, path: Path, step: int, extra: dict) -> None:
        ck.save_checkpoint(path, step=step, model=self.model, ema=self.ema, optimizer=self.opt, extra=extra,
                           scaler_state=self.scaler.state_dict() if self.scaler.is_enabled() else None)

    def load(self, path: Path) -> int:
        """Restore everything from a checkpoint; returns its step."""
        tensors, header = ck.load_checkpoint(path)
        self.model.load_state_dict(ck.prefixed(tensors, "model."))
        self.ema.load_state_dict(ck.prefixed(tensors, "ema."))
        self.opt.load_state_dict(ck.unflatten_optimizer(tensors, header["optimizer"]))
        if header["scaler"]:
            self.scaler.load_state_dict(header["scaler"])
        ck.set_rng_state(tensors, header["rng"])
        return header["step"]


def train(cache: FaceCache | str | Path, out_dir: str | Path, model_config: DiffusionConfig,
          cfg: TrainConfig, *, indices=None, init: str | Path | None = None, buffer_fn: BufferFn | None = None,
          device: str | None = None, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) into ``out_dir``; returns ``out_dir/model`` (EMA weights, save_pretrained).

    indices: items of the cache to train on (default all). init: stage-2 start (model folder or
    checkpoint; None = from scratch). buffer_fn: params -> buffers (default: :class:`RigBuffers`).
    stop_after: stop (after checkpointing) at this step, as if killed (tests)."""
    import torch.distributed as dist

    world, rank, local = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(out_dir)
    is_main = rank == 0
    if isinstance(cache, (str, Path)):
        cache = FaceCache.load(cache)
    if indices is not None:
        cache = cache.subset(indices)
    if len(cache) == 0:
        raise InputError(None, "no training items selected")
    if cache.size != model_config.image_size:
        raise InputError(None, f"cache images are {cache.size} px but the model config is {model_config.image_size} px")
    if not 0 <= cfg.light_augment <= 1:
        raise ValueError(f"light_augment is a share of items, in [0, 1]; got {cfg.light_augment}")
    if cfg.light_augment > 0:
        check_light_names(model_config.buffers)
        light_aug = LightAugment(prob=cfg.light_augment)

    # data on the device: uint8 images + params
    images = cache.images().to(dev)
    params = cache.params.to(dev)
    if buffer_fn is None:
        buffer_fn = RigBuffers(model_config.buffers, model_config.image_size, dev)
    extra = {"model_config": model_config.to_dict(), "train_config": dataclasses.asdict(cfg),
             "items": cache.ids, "world_size": world}
    resume = ck.list_checkpoints(out)
    if resume:  # before any work: a refused resume costs nothing
        check_resume(ck.load_checkpoint(resume[-1], tensors=False)[1]["extra"], extra, resume[-1],
                     warn=print if is_main else None)
    bank_dtype = torch.bfloat16 if cfg.precision == "bf16" and dev.type == "cuda" else torch.float32
    need = BufferBank.nbytes(len(cache), model_config.buffer_channels, model_config.image_size, bank_dtype)
    budget = cfg.buffer_memory_gb * 1e9
    if dev.type == "cuda":  # and never more than a quarter of what the GPU has free
        budget = min(budget, torch.cuda.mem_get_info(dev)[0] / 4)
    bank = BufferBank(params, buffer_fn, bank_dtype) if need <= budget else None
    if is_main and progress:
        print(f"buffers: {'rendered once into ' + dev.type + ' memory' if bank is not None else 'rendered every step'}"
              f" ({need / 1e9:.2f} GB for {len(cache)} items, budget {budget / 1e9:.2f} GB)")

    def buffers_of(idx):
        return bank[idx] if bank is not None else buffer_fn(_take(params, idx))

    trainer = Trainer(model_config, cfg, dev, init=None if resume else init, world=world, rank=rank)
    step = 0
    if resume:
        step = trainer.load(resume[-1])
        if is_main:
            print(f"resumed from {resume[-1]} at step {step}")

    log_path = out / "log.jsonl"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
    bar = None
    if is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"stage {cfg.stage}", unit="step")
    fixed = torch.arange(min(cfg.sample_count, len(cache)), device=dev)
    sample_buffers = buffer_fn(_take(params, fixed)) if cfg.sample_every else None  # full precision
    t_start = t_last = time.perf_counter()
    n_since = 0
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    timed_out = False
    while step < end:
        idx = batch_indices(step, len(cache), cfg.batch_size, rank, world, cfg.seed)
        idx = idx.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else idx
        x0 = images[idx].float() / 127.5 - 1
        buffers = buffers_of(idx)
        if cfg.light_augment > 0:  # its own generator of (seed, step, rank): exact resume holds
            light = params.light[idx]
            new_light = random_lights(light, light_aug, _step_generator(dev, cfg.seed + 7919, step, rank))
            x_aug, buffers = relight_batch(x0, buffers, light, new_light, model_config.buffers, light_aug)
            loss = trainer.step(x_aug, buffers, step, encoder_input=x0)
        else:
            loss = trainer.step(x0, buffers, step)
        step += 1
        n_since += x0.shape[0] * world
        if step % cfg.log_every == 0 or step == end:
            last_loss = loss.item()
            now = time.perf_counter()
            rec = {"step": step, "loss": last_loss, "grad_norm": float(trainer.grad_norm),
                   "lr": trainer.opt.param_groups[0]["lr"], "images_per_s": n_since / max(now - t_last, 1e-9),
                   "time": time.time()}
            t_last, n_since = now, 0
            if is_main:
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.4f}", ips=f"{rec['images_per_s']:.0f}")
        if bar is not None:
            bar.update(1)
        if cfg.time_limit_s is not None and step < end and step % 10 == 0:
            over = time.perf_counter() - t_start > cfg.time_limit_s
            if world > 1:  # every rank stops at the same step: rank 0's clock decides
                flag = torch.tensor(float(over), device=dev)
                dist.broadcast(flag, 0)
                over = bool(flag.item())
            if over:
                end, timed_out = step, True
        if is_main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps or timed_out):
            write_samples(trainer.ema, images[fixed], sample_buffers, model_config,
                          out / "samples" / f"step-{step:08d}.png", cfg.sample_steps, cfg.seed)
        if is_main and (step % cfg.ckpt_every == 0 or step == end):
            trainer.save(ck.checkpoint_path(out, step), step, extra)
            ck.prune(out, cfg.keep)
    if bar is not None:
        bar.close()
    if is_main and (step >= cfg.steps or timed_out):
        trainer.ema.save_pretrained(out / "model")
        if timed_out:
            print(f"time limit reached at step {step}")
    if world > 1:
        dist.barrier()
    return out / "model"


@torch.no_grad()
def write_samples(model: DiffusionRigModel, images_u8: torch.Tensor, buffers: torch.Tensor,
                  config: DiffusionConfig, path: Path, steps: int, seed: int) -> None:
    """DDIM samples from fixed noise for a few items: PNG rows of buffers | sample | target."""
    from portraitrig.io.atomic import write_image

    dev = images_u8.device
    x0 = images_u8.float() / 127.5 - 1
    cond = model.condition(model.encode(x0))
    g = torch.Generator(device=dev).manual_seed(seed)
    noise = torch.randn(x0.shape, device=dev, generator=g)
    plan = DDIMPlan.make(config, steps, device=dev)
    sample = ddim_sample(lambda x, t: model.denoise(x, t, buffers, cond), noise, plan, clip=True).clamp(-1, 1)
    write_image(path, _grid(buffers, config.buffers, sample, x0).cpu().numpy())


__all__ = ["TrainConfig", "Trainer", "RigBuffers", "BufferBank", "check_resume", "train", "load_weights", "batch_indices", "ema_update", "write_samples"]
