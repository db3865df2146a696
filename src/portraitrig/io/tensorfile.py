"""Reading safetensors files with their header metadata; errors name the file."""
from __future__ import annotations

from pathlib import Path

from portraitrig.errors import InputError


def read_safetensors(path: str | Path, what: str = "file", tensors: bool = True) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a ``.safetensors`` file (``tensors=False``: only the header's
    metadata, tensors ``{}``). A missing, truncated or corrupt file raises
    ``InputError(path, "cannot read <what> ...")``; no code in the file is ever run."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"no such {what}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return ({k: f.get_tensor(k) for k in f.keys()} if tensors else {}), dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for damaged files
        raise InputError(path, f"cannot read {what} ({exc.__class__.__name__}: {exc})") from exc
