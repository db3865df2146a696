"""The fit-folder format: what ``portraitrig fit`` writes and every later stage reads.

A fit folder holds one parameter file per item (``<id>.safetensors`` or ``.npz``, see
:meth:`portraitrig.face.params.RigParams.save`), optionally ``<id>.crop.png``, and
``manifest.json``::

    {"tool": "portraitrig fit", "settings": {...}, "summary": {"ok": N, "error": M},
     "sources": {"<video path>": {"kind": "video", "status": "ok", "items": [ids]}},
     "items": [{"id": ..., "source": ..., "status": "ok" | "error", "message": ...,
                "params": "<id>.safetensors", "crop": "<id>.crop.png", ...}]}

A long video fitted in chunks also records, in its ``sources`` entry, ``"chunk_frames"``,
``"chunks_done"`` (chunks finished, from the start; ``items`` lists their frames while the
status is ``"partial"``) and ``"identity"``: the file beside the items holding the identity and
albedo used for all its frames (a parameter file of batch 1).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from portraitrig.errors import InputError
from portraitrig.io.atomic import write_json

MANIFEST = "manifest.json"


def is_fit_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def iter_manifest(out_dir: str | Path, status: str | None = "ok") -> Iterable[dict]:
    """Items of a fit folder's manifest (only those with ``status`` unless None)."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise InputError(out_dir, f"no {MANIFEST} here: not a `portraitrig fit` output folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data.get("items", [])
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise InputError(path, f"unreadable fit manifest ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(items, list):
        raise InputError(path, "unreadable fit manifest (items is not a list)")
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("id"), str):
            raise InputError(path, f"malformed manifest item {str(it)[:80]!r}")
        if status is None or it.get("status") == status:
            if status == "ok" and not isinstance(it.get("params"), str):
                raise InputError(path, f"item {it['id']!r} has no params file")
            yield it


SAVE_EVERY_S = 5.0  # the manifest is rewritten at most this often (and at the end)


class Manifest:
    """The job's record, keyed by item id; rewritten atomically."""

    def __init__(self, path: Path, settings: dict, output_settings=()):
        self.path = path
        self.items: dict[str, dict] = {}
        self.sources: dict[str, dict] = {}
        self.settings = settings
        self.reusable = True  # may finished items of an earlier run be skipped?
        self._saved = 0.0
        if path.exists():
            try:
                old = json.loads(path.read_text())
                self.items = {it["id"]: it for it in old.get("items", [])}
                self.sources = dict(old.get("sources", {}))
                before = old.get("settings", {})
            except (ValueError, KeyError, TypeError) as exc:
                # an unreadable manifest is kept aside, never silently overwritten
                path.rename(path.with_suffix(f".corrupt-{int(time.time())}.json"))
                print(f"warning: {path}: unreadable manifest ({exc}); moved aside, starting fresh")
                return
            changed = [k for k in output_settings if before.get(k) != settings.get(k)]
            if changed:
                print(f"note: {path.parent}: settings changed since the last run ({', '.join(changed)}); "
                      "refitting everything")
                self.reusable = False

    def done(self, item_id: str, out_dir: Path) -> bool:
        it = self.items.get(item_id)
        return bool(self.reusable and it and it.get("status") == "ok" and (out_dir / it["params"]).exists())

    def source_done(self, source: str, out_dir: Path) -> bool:
        """A video is done when it decoded to its end, its group fit succeeded, and every
        frame with a face has its file."""
        src = self.sources.get(source, {})
        if not (self.reusable and src.get("status") == "ok"):
            return False
        return all(self.done(i, out_dir) or self.items.get(i, {}).get("status") == "error"
                   for i in src.get("items", []))

    def save(self, force: bool = True) -> None:
        if not force and time.monotonic() - self._saved < SAVE_EVERY_S:
            return
        items = list(self.items.values())
        write_json(self.path, {
            "tool": "portraitrig fit",
            "settings": self.settings,
            "summary": {"ok": sum(i["status"] == "ok" for i in items),
                        "error": sum(i["status"] == "error" for i in items)},
            "sources": self.sources,
            "items": items,
        })
        self._saved = time.monotonic()


__all__ = ["MANIFEST", "Manifest", "is_fit_folder", "iter_manifest"]
