"""What the shared training loop needs from a method (DiffusionRig, the video renderer, the avatar).

A method owns its network (``model``) and its data (already on its device); the loop owns
everything else: the data order, DDP, autocast, the optimizer and learning-rate schedule,
gradient clipping, EMA, the time limit, logs, sample grids, checkpoints and exact resume.

A method may train an adversary beside its model (``critic``, e.g. a patch discriminator for an
adversarial loss term). The loop gives it its own AdamW on the same learning-rate schedule
(:meth:`TrainingMethod.critic_optimizer`), gradient scaler and DDP wrapper, and checkpoints it
with its optimizer, so a resumed run is still exact; it has no EMA and is not exported. Each
step: the model's step (``loss``, which may call ``self.critic`` as it is, unwrapped; its
parameters are frozen there), then the critic's step
(:meth:`critic_loss`, on what that ``loss`` call made).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn


class TrainingMethod(ABC):
    name: ClassVar[str]          # the registry name, recorded in checkpoints
    model: nn.Module             # trained, EMA-averaged, checkpointed and exported
    device: torch.device
    critic: nn.Module | None = None   # an adversary trained beside the model (None: none)

    @abstractmethod
    def num_items(self) -> int:
        """Training items (the loop draws batches of item indices from 0..n-1)."""

    def parameter_groups(self) -> list[dict]:
        """AdamW parameter groups (a group may set its own ``lr_scale``); default: one group of
        every trainable parameter."""
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    @abstractmethod
    def loss(self, net: nn.Module, idx: torch.Tensor, step: int,
             generator: torch.Generator) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch: items ``idx`` (a device tensor), ``step`` steps done before,
        ``generator`` seeded by (seed, step, rank) for every random draw (exact resume). Call
        ``net`` (the model, possibly wrapped by DDP or torch.compile) for the forward pass. Runs
        under the loop's autocast. Returns the scalar loss, optionally with named extra values
        for the log (0-dim tensors)."""

    @abstractmethod
    def run_identity(self) -> dict:
        """JSON data that must be the same to resume a run (model configuration, items, ...)."""

    def samples(self, ema: nn.Module, step: int) -> np.ndarray | None:
        """A picture of what the (EMA) model makes now: (H, W, 3) float in [0, 1] or uint8."""
        return None

    @abstractmethod
    def export(self, ema: nn.Module, directory: Path) -> Path:
        """Write the trained renderer (``save_pretrained`` format) into ``directory``."""

    def critic_optimizer(self) -> dict:
        """The critic's AdamW: ``lr_scale`` (times the run's learning rate at each step) and
        ``betas``."""
        return {"lr_scale": 1.0, "betas": (0.5, 0.999)}

    def critic_loss(self, critic: nn.Module, step: int,
                    generator: torch.Generator) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """The critic's loss after the model's step ``step`` (``critic``: possibly wrapped by
        DDP), on what that step's ``loss`` call made; same generator, under the same autocast.
        None: the critic does not train at this step."""
        return None

    def compile_modules(self) -> tuple[nn.Module, ...]:
        """Networks whose GroupNorms take the compile-friendly form when training compiles."""
        return (self.model,)


def unwrap(net: nn.Module) -> nn.Module:
    """The model under the loop's DDP / torch.compile wrappers (for a method's own helpers that
    are not the forward pass)."""
    while hasattr(net, "module") or hasattr(net, "_orig_mod"):
        net = getattr(net, "module", None) or net._orig_mod
    return net


__all__ = ["TrainingMethod", "unwrap"]
