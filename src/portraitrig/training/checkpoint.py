"""Training checkpoints as ONE safetensors file (no pickle): model, EMA, optimizer, RNG, step,
for every method (the header names the method).

Tensors: ``model.*``, ``ema.*``, ``optim.state.<param index>.<key>``, ``rng.torch``,
``rng.cuda.<device>``, ``rng.numpy``, ``rng.python``; with a critic (an adversary trained beside
the model) ``critic.*`` and ``critic_optim.state.*``. Everything else (step, optimizer
param_groups and non-tensor state, numpy/python RNG scalars, configs) is JSON in the header.
Writes are atomic; :func:`prune` keeps the newest K.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from portraitrig.errors import InputError

FORMAT = "portraitrig.checkpoint"
LEGACY_FORMATS = ("portraitrig.DiffusionRig.checkpoint",)  # read as method "diffusion"
NAME = re.compile(r"^ckpt-(\d{8})\.safetensors$")
CRITIC_OPTIM = "critic_optim.state."


def flatten_optimizer(sd: dict, prefix: str = "optim.state.") -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                rest["state"].setdefault(str(pid), {})[k] = v
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict, prefix: str = "optim.state.") -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if name.startswith(prefix):
            pid, k = name[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in rest.get("state", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in rest["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, pstate, gauss = random.getstate()
    tensors["rng.python"] = torch.tensor(pstate, dtype=torch.int64)
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"rng.cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], i)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(x) for x in tensors["rng.python"].tolist()), gauss))


def save_checkpoint(path: str | Path, *, step: int, model: torch.nn.Module, ema: torch.nn.Module | None,
                    optimizer: torch.optim.Optimizer, extra: dict | None = None,
                    scaler_state: dict | None = None, method: str = "", critic: torch.nn.Module | None = None,
                    critic_optimizer: torch.optim.Optimizer | None = None,
                    critic_scaler_state: dict | None = None) -> Path:
    """One atomic file; ``critic`` and ``critic_optimizer`` (both or neither): an adversary
    trained beside the model, with its optimizer and gradient scaler."""
    from safetensors.torch import save_file

    from portraitrig.io.atomic import atomic_path

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    ot, orest = flatten_optimizer(optimizer.state_dict())
    tensors.update(ot)
    rt, rmeta = rng_state()
    tensors.update(rt)
    meta = {"format": FORMAT, "method": method, "step": str(step), "optimizer": json.dumps(orest), "rng": json.dumps(rmeta),
            "extra": json.dumps(extra or {}), "scaler": json.dumps(scaler_state or {})}
    if critic is not None:
        tensors.update({f"critic.{k}": v.detach().cpu().contiguous() for k, v in critic.state_dict().items()})
        ct, crest = flatten_optimizer(critic_optimizer.state_dict(), CRITIC_OPTIM)
        tensors.update(ct)
        meta["critic_optimizer"] = json.dumps(crest)
        meta["critic_scaler"] = json.dumps(critic_scaler_state or {})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_checkpoint(path: str | Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, header) of a checkpoint; header values decoded from JSON, step as int.
    ``tensors=False`` reads the header alone (tensors ``{}``)."""
    from portraitrig.io.tensorfile import read_safetensors

    path = Path(path)
    tensors, md = read_safetensors(path, "checkpoint", tensors=tensors)
    if md.get("format") not in (FORMAT, *LEGACY_FORMATS):
        raise InputError(path, "not a portraitrig training checkpoint")
    try:
        header = {k: json.loads(md[k]) for k in ("optimizer", "rng", "extra", "scaler")}
        header["step"] = int(md["step"])
        # a run with a critic (absent from runs without one)
        header["critic_optimizer"] = json.loads(md["critic_optimizer"]) if "critic_optimizer" in md else None
        header["critic_scaler"] = json.loads(md.get("critic_scaler") or "{}")
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"damaged checkpoint header ({exc.__class__.__name__}: {exc})") from None
    header["method"] = md.get("method") or ("diffusion" if md.get("format") in LEGACY_FORMATS else "")
    return tensors, header


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if NAME.match(p.name))


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:08d}.safetensors"


def prune(directory: str | Path, keep: int) -> None:
    for p in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
