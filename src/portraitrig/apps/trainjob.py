"""``portraitrig train METHOD DATA -o RUN``: any registered method on the shared training loop.

The run's configuration is a preset (``--preset``, or a JSON file with ``--config``) with the
flags the user gave written over it; it is saved as ``RUN/run.json`` (``--config RUN/run.json``
repeats the run) and recorded in every checkpoint, so a resume with other settings is refused
or reported (:mod:`portraitrig.training.loop`).
"""
from __future__ import annotations

from pathlib import Path

from portraitrig.config import load_json, to_dict
from portraitrig.errors import InputError
from portraitrig.methods import get

RUN_CONFIG = "run.json"


def method_config(method: str, preset: str | None = None, config_file: str | Path | None = None):
    """The method's config: from a JSON file (a run's ``run.json`` or a config object) or a
    named preset (default: the method's default preset)."""
    mod = get(method).module()
    if config_file is not None:
        import json

        try:
            data = json.loads(Path(config_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(config_file, "no such config file") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(config_file, f"cannot read config ({exc.__class__.__name__}: {exc})") from None
        key = "config" if isinstance(data, dict) and "config" in data and "method" in data else None
        if key and data["method"] != method:
            raise InputError(config_file, f"a {data['method']!r} run config, not a {method!r} one")
        return load_json(mod.Config, config_file, key=key)
    name = preset or mod.DEFAULT_PRESET
    if name not in mod.PRESETS:
        raise InputError(None, f"unknown preset {name!r} for {method}; choose from {', '.join(mod.PRESETS)}")
    return mod.PRESETS[name]()


def run_train(method: str, data, out_dir: str | Path, config, *, init: str | Path | None = None,
              device: str | None = None, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) ``method`` on ``data`` into ``out_dir``; returns the model folder."""
    import torch

    from portraitrig.io.atomic import clean_orphans, write_json
    from portraitrig.training.loop import default_device, dist_info, latest_checkpoint, train

    mod = get(method).module()
    dev = default_device(device)
    if dev.type == "cuda":  # before anything touches the GPU: each rank's work and context on its own GPU
        torch.cuda.set_device(dev)
    out = Path(out_dir)
    rank = dist_info()[1]
    resuming = latest_checkpoint(out, warn=None) is not None
    if init is not None and not Path(init).exists():
        raise InputError(init, "no such model folder or checkpoint")
    torch.manual_seed(config.train.seed)
    import inspect

    extra = {"work_dir": out} if "work_dir" in inspect.signature(mod.Method.create).parameters else {}
    m = mod.Method.create(config, data, dev, init=None if resuming else init, say=print if rank == 0 else None,
                          **extra)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        clean_orphans(out, recursive=True)  # partial files of a killed run
        write_json(out / RUN_CONFIG, {"method": method, "config": to_dict(config),
                                      "data": str(data), "init": None if init is None else str(init)})
    return train(m, config.train, out, config=to_dict(config), progress=progress and rank == 0,
                 stop_after=stop_after, desc=f"{method} stage {getattr(config, 'stage', '')}".strip())


__all__ = ["method_config", "run_train", "RUN_CONFIG"]
