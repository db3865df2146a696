"""The shared training loop's settings (every method's ``train`` section)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


def _h(text: str, **kw) -> dict:
    return {"help": text, **kw}


@dataclass
class TrainConfig:
    steps: int = field(default=10000, metadata=_h("optimisation steps"))
    batch_size: int = field(default=16, metadata=_h("items per step and GPU"))
    lr: float = field(default=1e-4, metadata=_h("peak learning rate"))
    weight_decay: float = field(default=0.0, metadata=_h("AdamW weight decay"))
    warmup_steps: int = field(default=100, metadata=_h("linear learning-rate warm-up steps"))
    schedule: str = field(default="constant", metadata=_h("learning rate after warm-up",
                                                          choices=("constant", "cosine")))
    min_lr_ratio: float = field(default=0.1, metadata=_h("cosine schedule: final / peak learning rate"))
    grad_clip: float = field(default=1.0, metadata=_h("gradient norm clip (0 = off)"))
    ema_decay: float = field(default=0.9999, metadata=_h("EMA decay of the exported weights (0 = no EMA)"))
    precision: str = field(default="bf16", metadata=_h("autocast precision (fp16 with a gradient scaler)",
                                                       choices=("bf16", "fp16", "fp32")))
    compile: bool = field(default=False, metadata=_h("torch.compile the network (minutes once, then ~2x "
                                                     "faster on a GPU)"))
    compile_mode: str = field(default="default", metadata=_h(
        "torch.compile mode", choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")))
    channels_last: bool = field(default=True, metadata=_h("channels-last activations (faster convolutions on GPUs)"))
    fused_adam: bool = field(default=True, metadata=_h("fused AdamW kernel (CUDA only)"))
    seed: int = field(default=0, metadata=_h("seed of the data order, noise and initialisation"))
    ckpt_every: int = field(default=1000, metadata=_h("checkpoint every N steps (and at the end)"))
    keep: int = field(default=3, metadata=_h("checkpoints kept"))
    log_every: int = field(default=20, metadata=_h("log.jsonl record every N steps"))
    sample_every: int = field(default=1000, metadata=_h("sample grid every N steps (0 = never)"))
    time_limit: float | None = field(default=None, metadata=_h(
        "stop after this many minutes (checkpoint + model written, as if the steps were done)", metavar="MIN"))

    def validate(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "ckpt_every": self.ckpt_every,
                    "keep": self.keep, "log_every": self.log_every}
        for k, v in positive.items():
            if v < 1:
                raise ValueError(f"train.{k} must be at least 1, got {v}")
        for k in ("warmup_steps", "sample_every"):
            if getattr(self, k) < 0:
                raise ValueError(f"train.{k} must not be negative, got {getattr(self, k)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"train.lr must be a positive number, got {self.lr}")
        for k in ("weight_decay", "grad_clip"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"train.{k} must be a number >= 0, got {v}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"train.time_limit must be a positive number of minutes, got {self.time_limit}")
        for k, allowed in (("precision", ("bf16", "fp16", "fp32")), ("schedule", ("constant", "cosine")),
                           ("compile_mode", ("default", "reduce-overhead", "max-autotune-no-cudagraphs",
                                             "max-autotune"))):
            if getattr(self, k) not in allowed:
                raise ValueError(f"train.{k} must be one of {', '.join(allowed)}, got {getattr(self, k)!r}")

    def lr_at(self, step: int) -> float:
        """Learning rate of the step after ``step`` steps: linear warm-up, then constant or
        cosine down to ``min_lr_ratio * lr`` at ``steps``."""
        warm = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        if self.schedule == "constant" or step < self.warmup_steps:
            return self.lr * warm
        t = min(1.0, (step - self.warmup_steps) / max(self.steps - self.warmup_steps, 1))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


# settings a resumed run may change freely (they do not change what is learned, or only extend it)
FREE_ON_RESUME = ("steps", "time_limit", "ckpt_every", "keep", "log_every", "sample_every", "compile",
                  "compile_mode", "channels_last", "fused_adam")

__all__ = ["TrainConfig", "FREE_ON_RESUME"]
