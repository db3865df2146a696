"""The one training loop every neural renderer uses (see :class:`TrainingMethod`).

One script for 1 or N GPUs (``torchrun --nproc_per_node N``: DDP, the data order is sharded by
rank, only rank 0 writes). bf16/fp16 autocast (fp16 with a gradient scaler), EMA, gradient
clipping, warm-up + constant/cosine learning rate, fused AdamW on CUDA, optional torch.compile
(:func:`portraitrig.accel.inductor.compile_module`), backend flags scoped to the run.

Run folder: ``ckpt-<step>.safetensors`` (the newest ``keep``), ``log.jsonl`` (one JSON record per
``log_every`` steps), ``samples/step-<step>.png``, ``model/`` (the EMA weights, written when the
steps are done or the time limit is reached).

Exact resume: the data order and the random draws of step s depend only on (seed, s, rank), and
a checkpoint holds model, EMA, optimizer, scaler, step and the RNG states (and a method's
critic with its optimizer), so a run killed and resumed gives the same weights as one run
straight through. A resume is refused when the run
folder holds another run (:meth:`TrainingMethod.run_identity` differs); other changed settings are
reported. A damaged newest checkpoint is set aside and the one before it used. Training that
diverges (a non-finite loss) stops with an error and keeps the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from pathlib import Path

import torch

from portraitrig.errors import InputError, PortraitRigError
from portraitrig.training import checkpoint as ck
from portraitrig.training.config import FREE_ON_RESUME, TrainConfig
from portraitrig.training.method import TrainingMethod


class TrainingDiverged(PortraitRigError):
    """The loss became NaN or infinite."""


def dist_info() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment (1, 0, 0 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def default_device(device: str | None = None) -> torch.device:
    """``device`` (default: this rank's GPU, else the CPU), with a GPU index always given."""
    dev = torch.device(device) if device is not None else torch.device(
        f"cuda:{dist_info()[2]}" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", dist_info()[2])
    return dev


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


def step_generator(device, seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of step ``step`` on ``rank``: every random draw of a step comes from it."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 1009 + rank) % (2 ** 63))
    return g


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_resume(old: dict, new: dict, path, warn=print) -> None:
    """A run folder's checkpoint (``old``: its ``extra``) against the run asked for now. Another
    method or run identity (model, items, stage) would mix two runs in one folder: InputError.
    Other changed settings are allowed and reported: the run goes on, but is no longer the same
    as one uninterrupted run."""
    new = json.loads(json.dumps(new))  # tuples -> lists, as the checkpoint stored them
    if old.get("method") not in (None, new["method"]):
        raise InputError(path, f"this run folder holds a {old.get('method')!r} run; train {new['method']!r} "
                               "into its own --out folder")
    if old.get("run") is not None and old["run"] != new["run"]:
        a, b = _flat(old["run"]), _flat(new["run"])
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise InputError(path, f"this run folder holds a different run ({', '.join(diff[:6])} differ); use a "
                               "new --out folder, or the run's own settings")
    free = {f"train.{k}" for k in FREE_ON_RESUME}
    oc, nc = _flat(old.get("config") or {}), _flat(new["config"])
    changed = [f"{k} {oc[k]!r} -> {nc[k]!r}" for k in sorted(nc) if k in oc and k not in free and oc[k] != nc[k]]
    if old.get("world_size") not in (None, new["world_size"]):
        changed.append(f"GPUs {old['world_size']} -> {new['world_size']}")
    if changed and warn is not None:
        warn(f"resuming {path} with changed settings: {', '.join(changed)} "
             "(the run goes on, but is no longer the same as one uninterrupted run)")


def latest_checkpoint(out: Path, warn=print) -> tuple[Path, dict] | None:
    """The newest readable checkpoint of a run folder and its header; damaged newer ones are
    renamed ``*.damaged`` and reported."""
    for path in reversed(ck.list_checkpoints(out)):
        try:
            return path, ck.load_checkpoint(path, tensors=False)[1]
        except InputError as err:
            aside = path.with_name(path.name + ".damaged")
            os.replace(path, aside)
            if warn is not None:
                warn(f"warning: {err}; set aside as {aside.name}, trying the checkpoint before it")
    return None


class Trainer:
    """A method's model with EMA, optimizer, (optional) DDP/compile wrapper and the training step."""

    def __init__(self, method: TrainingMethod, cfg: TrainConfig, world: int = 1, rank: int = 0):
        self.method, self.cfg, self.world, self.rank = method, cfg, world, rank
        self.dev = method.device
        model = method.model
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
        groups = method.parameter_groups()
        self.lr_scales = [g.pop("lr_scale", 1.0) for g in groups]
        self.trainable = [p for g in groups for p in g["params"]]
        fused = cfg.fused_adam and self.dev.type == "cuda"
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                                     **({"fused": True} if fused else {}))
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=cfg.precision == "fp16")
        net = model
        if world > 1:
            for p in model.parameters():   # nothing to learn (a feature set to 0 Gaussians): DDP would wait
                if p.numel() == 0:         # for its gradient every step
                    p.requires_grad_(False)
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if cfg.compile:
            from portraitrig.accel.inductor import compile_module

            net = compile_module(net, channels_last=cfg.channels_last, mode=cfg.compile_mode,
                                 modules=method.compile_modules())
        self.net = net
        self.critic = method.critic
        if self.critic is not None:   # an adversary: its own optimizer and scaler, no EMA, not compiled
            critic = self.critic.to(self.dev).train()
            if cfg.channels_last:
                critic.to(memory_format=torch.channels_last)
            copt = method.critic_optimizer()
            self.critic_lr_scale = copt.get("lr_scale", 1.0)
            self.critic_params = [p for p in critic.parameters() if p.requires_grad]
            self.critic_opt = torch.optim.AdamW(self.critic_params, lr=cfg.lr, weight_decay=0.0,
                                                betas=tuple(copt.get("betas", (0.5, 0.999))),
                                                **({"fused": True} if fused else {}))
            self.critic_scaler = torch.amp.GradScaler(self.dev.type, enabled=cfg.precision == "fp16")
            self.critic_net = torch.nn.parallel.DistributedDataParallel(
                critic, device_ids=[self.dev.index] if self.dev.type == "cuda" else None) if world > 1 else critic
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.grad_norm = torch.zeros((), device=self.dev)
        self.bad = torch.zeros((), dtype=torch.bool, device=self.dev)  # a non-finite loss since the last check
        model.train()

    @property
    def averaged(self) -> torch.nn.Module:
        """The weights to sample from and export: the EMA, or the model without EMA."""
        return self.ema if self.ema is not None else self.model

    def step(self, step: int) -> tuple[torch.Tensor, dict]:
        """One optimisation step after ``step`` steps; returns the loss (not synchronised)."""
        cfg = self.cfg
        idx = batch_indices(step, self.method.num_items(), cfg.batch_size, self.rank, self.world, cfg.seed)
        idx = idx.pin_memory().to(self.dev, non_blocking=True) if self.dev.type == "cuda" else idx
        gen = step_generator(self.dev, cfg.seed, step, self.rank)
        lr = cfg.lr_at(step)
        for g, s in zip(self.opt.param_groups, self.lr_scales):
            g["lr"] = lr * s
        if self.critic is not None:   # the model's step neither trains the critic nor computes its gradients
            for p in self.critic_params:
                p.requires_grad_(False)
        with self._autocast():
            out = self.method.loss(self.net, idx, step, gen)
        loss, extra = out if isinstance(out, tuple) else (out, {})
        extra = {k: v.detach() for k, v in extra.items()}
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        if cfg.grad_clip > 0:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            ema_update(self.ema, self.model, min(cfg.ema_decay, (2 + step) / (11 + step)))
        loss = loss.detach()
        self.bad |= ~torch.isfinite(loss)
        if self.critic is not None:
            extra.update(self._critic_step(step, gen, lr))
        return loss, extra

    def _autocast(self):
        return torch.autocast(self.dev.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    def _critic_step(self, step: int, gen: torch.Generator, lr: float) -> dict:
        """The critic's step after the model's (``method.critic_loss``), with its own optimizer,
        scaler and clipping; its loss and values go to the log as ``critic_*``."""
        for p in self.critic_params:   # (those the critic itself froze stay frozen)
            p.requires_grad_(True)
        with self._autocast():
            out = self.method.critic_loss(self.critic_net, step, gen)
        if out is None:
            return {}
        closs, cextra = out if isinstance(out, tuple) else (out, {})
        for g in self.critic_opt.param_groups:
            g["lr"] = lr * self.critic_lr_scale
        self.critic_opt.zero_grad(set_to_none=True)
        self.critic_scaler.scale(closs).backward()
        self.critic_scaler.unscale_(self.critic_opt)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.critic_params, self.cfg.grad_clip)
        self.critic_scaler.step(self.critic_opt)
        self.critic_scaler.update()
        closs = closs.detach()
        self.bad |= ~torch.isfinite(closs)
        return {"critic_loss": closs, **{f"critic_{k}": v.detach() for k, v in cextra.items()}}

    def save(self, path: Path, step: int, extra: dict) -> None:
        critic = {} if self.critic is None else dict(
            critic=self.critic, critic_optimizer=self.critic_opt,
            critic_scaler_state=self.critic_scaler.state_dict() if self.critic_scaler.is_enabled() else None)
        ck.save_checkpoint(path, step=step, model=self.model, ema=self.ema, optimizer=self.opt, extra=extra,
                           scaler_state=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                           method=self.method.name, **critic)

    def load(self, path: Path, warn=print) -> int:
        """Restore everything from a checkpoint; returns its step. A critic the checkpoint does
        not hold (a run resumed with one added) starts afresh, reported by ``warn``."""
        tensors, header = ck.load_checkpoint(path)
        self.model.load_state_dict(ck.prefixed(tensors, "model."))
        if self.ema is not None:
            ema = ck.prefixed(tensors, "ema.")
            self.ema.load_state_dict(ema or ck.prefixed(tensors, "model."))
        self.opt.load_state_dict(ck.unflatten_optimizer(tensors, header["optimizer"]))
        if header["scaler"]:
            self.scaler.load_state_dict(header["scaler"])
        if self.critic is not None:
            if header.get("critic_optimizer") is not None:
                self.critic.load_state_dict(ck.prefixed(tensors, "critic."))
                self.critic_opt.load_state_dict(
                    ck.unflatten_optimizer(tensors, header["critic_optimizer"], ck.CRITIC_OPTIM))
                if header.get("critic_scaler"):
                    self.critic_scaler.load_state_dict(header["critic_scaler"])
            elif warn is not None:
                warn(f"{path} holds no critic: the critic starts afresh at step {header['step']}")
        ck.set_rng_state(tensors, header["rng"])
        return header["step"]


def _log_value(v):
    v = float(v)
    return v if math.isfinite(v) else None  # log.jsonl stays valid JSON


def _trim_log(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (a resumed run rewrites what came after) and drop a torn
    last line."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            keep.append(line)
    from portraitrig.io.atomic import write_text

    write_text(path, "".join(k + "\n" for k in keep))


def train(method: TrainingMethod, cfg: TrainConfig, out_dir: str | Path, *, config: dict | None = None,
          progress: bool = True, stop_after: int | None = None, desc: str | None = None) -> Path:
    """Train (or resume) ``method`` into ``out_dir``; returns ``out_dir/model``.

    config: the whole run configuration (JSON data, stored in checkpoints and compared on
    resume). stop_after: stop (after checkpointing) at this step, as if killed (tests)."""
    import torch.distributed as dist

    from portraitrig.accel.backends import fast_backends
    from portraitrig.io.atomic import write_image

    world, rank, _ = dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    dev = method.device
    if dev.type == "cuda":
        torch.cuda.set_device(dev.index if dev.index is not None else torch.cuda.current_device())
    out = Path(out_dir)
    is_main = rank == 0
    say = print if is_main else None
    extra = {"method": method.name, "run": method.run_identity(), "config": config or {"train": cfg.__dict__},
             "world_size": world}
    found = latest_checkpoint(out, warn=say)
    if found:  # before any work: a refused resume costs nothing
        check_resume(found[1]["extra"], extra, found[0], warn=say)
    with fast_backends(enabled=dev.type == "cuda"):
        trainer = Trainer(method, cfg, world=world, rank=rank)
        step = 0
        if found:
            step = trainer.load(found[0], warn=say)
            if is_main:
                print(f"resumed from {found[0]} at step {step}")
        log_path = out / "log.jsonl"
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "samples").mkdir(exist_ok=True)
            _trim_log(log_path, step)
        bar = None
        if is_main and progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=step, desc=desc or method.name, unit="step")
        t_start = t_last = time.perf_counter()
        n_since = 0
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        timed_out = False
        good_ckpt = found[0] if found else None

        def check_finite():
            if bool(trainer.bad):
                kept = f"the last good checkpoint {good_ckpt.name} is kept" if good_ckpt else "no checkpoint was written"
                raise TrainingDiverged(f"{out}: training diverged (non-finite loss) before step {step}; {kept}; "
                                       "lower --lr or use --precision fp32")

        while step < end:
            loss, logs = trainer.step(step)
            step += 1
            n_since += cfg.batch_size * world
            if step % cfg.log_every == 0 or step == end:
                check_finite()
                now = time.perf_counter()
                rec = {"step": step, "loss": _log_value(loss), "grad_norm": _log_value(trainer.grad_norm),
                       "lr": trainer.opt.param_groups[0]["lr"], "images_per_s": n_since / max(now - t_last, 1e-9),
                       **{k: _log_value(v) for k, v in logs.items()}, "time": time.time()}
                t_last, n_since = now, 0
                if is_main:
                    with open(log_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(rec) + "\n")
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", ips=f"{rec['images_per_s']:.0f}")
            if bar is not None:
                bar.update(1)
            if cfg.time_limit is not None and step < end and step % 10 == 0:
                over = time.perf_counter() - t_start > cfg.time_limit * 60
                if world > 1:  # every rank stops at the same step: rank 0's clock decides
                    flag = torch.tensor(float(over), device=dev)
                    dist.broadcast(flag, 0)
                    over = bool(flag.item())
                if over:
                    end, timed_out = step, True
            if is_main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps or timed_out):
                picture = method.samples(trainer.averaged, step)
                if picture is not None:
                    write_image(out / "samples" / f"step-{step:08d}.png", picture)
            if step % cfg.ckpt_every == 0 or step == end:
                check_finite()
                if is_main:
                    good_ckpt = ck.checkpoint_path(out, step)
                    trainer.save(good_ckpt, step, extra)
                    ck.prune(out, cfg.keep)
        if bar is not None:
            bar.close()
        if is_main and (step >= cfg.steps or timed_out):
            method.export(trainer.averaged, out / "model")
            if timed_out:
                print(f"time limit reached at step {step}")
    if world > 1:
        dist.barrier()
    return out / "model"


__all__ = ["Trainer", "TrainingDiverged", "train", "batch_indices", "step_generator", "ema_update", "check_resume",
           "latest_checkpoint", "dist_info", "default_device"]
