"""The model-folder format every neural renderer saves and loads.

``DIR/config.json``: ``{"format": "portraitrig.model", "method": NAME, "version": N, "config": {...}}``
``DIR/model.safetensors``: the network's state dict (no pickle).

Loading never builds a network before checking it: the config is validated against the
method's limits, the network is built on the ``meta`` device (no memory), its parameter shapes
are compared with the shapes in the weights file's header, and only then is it materialised
and filled. A config that asks for a huge network, or weights of another shape, is an
InputError naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from portraitrig.errors import InputError

FORMAT = "portraitrig.model"
LEGACY = {"portraitrig.DiffusionRig": ("diffusion", 1)}  # older folders: config.json IS the config
CONFIG, WEIGHTS = "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20


def write_model_folder(directory: str | Path, method: str, version: int, config: dict, module: nn.Module,
                       metadata: dict[str, str] | None = None) -> Path:
    """Write ``module``'s weights and the config (atomically) into ``directory``."""
    from safetensors.torch import save_file

    from portraitrig.io.atomic import atomic_path, write_json

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(d / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "method": method, **(metadata or {})})
    write_json(d / CONFIG, {"format": FORMAT, "method": method, "version": version, "config": config})
    return d


def read_model_config(directory: str | Path) -> tuple[str, int, dict]:
    """(method, version, config data) of a model folder; InputError if it is not one."""
    d = Path(directory)
    cfg_path = d / CONFIG
    if not d.is_dir() or not cfg_path.is_file() or not (d / WEIGHTS).is_file():
        raise InputError(d, f"not a portraitrig model folder (needs {CONFIG} and {WEIGHTS})")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(cfg_path, "config file is too large")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(cfg_path, f"cannot read model config ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(cfg_path, "not a portraitrig model config")
    fmt = data.get("format")
    if fmt in LEGACY:
        method, version = LEGACY[fmt]
        return method, version, {k: v for k, v in data.items() if k != "format"}
    if fmt != FORMAT or not isinstance(data.get("method"), str) or not isinstance(data.get("config"), dict):
        raise InputError(cfg_path, "not a portraitrig model config")
    version = data.get("version")
    if not isinstance(version, int):
        raise InputError(cfg_path, "model config has no version number")
    return data["method"], version, data["config"]


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's header (nothing else is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise InputError(path, f"cannot read model weights ({exc.__class__.__name__}: {exc})") from None


def load_module(build: Callable[[], nn.Module], weights: str | Path, device="cpu") -> nn.Module:
    """Build a network on the meta device, check its parameter names and shapes against the
    weights file, then materialise it on ``device`` and load the weights. Returns it in eval mode."""
    from portraitrig.io.tensorfile import read_safetensors

    with torch.device("meta"):
        module = build()
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = weight_shapes(weights)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        detail = "; ".join(x for x in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(extra[:3])}" if extra else "",
            f"{wrong[0]} is {have[wrong[0]]} but the config makes {want[wrong[0]]}" if wrong else "") if x)
        raise InputError(weights, f"weights do not match the model config ({detail})")
    state, _ = read_safetensors(weights, "model weights")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(weights, f"non-finite weights in {', '.join(bad[:3])}" + (" ..." if len(bad) > 3 else ""))
    module = module.to_empty(device=device)
    module.load_state_dict(state)
    return module.eval()


__all__ = ["FORMAT", "CONFIG", "WEIGHTS", "write_model_folder", "read_model_config", "weight_shapes", "load_module"]
