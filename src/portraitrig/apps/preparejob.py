"""``portraitrig prepare``: a neural renderers' training cache from fit folders or raw inputs.

Raw images / videos are fitted first (``portraitrig fit --save-crops`` into ``<out>.fits/``,
finished items reused); then every fitted item's crop and rig parameters go into one cache
file (:class:`portraitrig.neural.cache.FaceCache`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.io.fitfolder import is_fit_folder, iter_manifest
from portraitrig.io.images import read_image
from portraitrig.neural.cache import FaceCache, build_cache, group_of


def read_fit_folder(folder: str | Path, group_by: str = "source"):
    """(crops, RigParams, ids, groups) of the ok items of a ``portraitrig fit --save-crops`` folder.
    ``group_by``: "source" (video stem / photo stem) or "folder" (this folder's name)."""
    folder = Path(folder)
    images, plist, ids, groups = [], [], [], []
    for it in iter_manifest(folder):
        if not it.get("crop"):
            raise InputError(folder, "fit output has no crops: run `portraitrig fit --save-crops`")
        p = RigParams.load(folder / it["params"])
        images.append(read_image(folder / it["crop"]))
        plist.append(p.replace(sources=[it.get("source", it["id"])]))
        ids.append(f"{folder.name}/{it['id']}")
        groups.append(folder.name if group_by == "folder" else group_of(it.get("source", it["id"])))
    if not plist:
        raise InputError(folder, "no successfully fitted items in this folder")
    return images, RigParams.cat(plist), ids, groups


def prepare(inputs: Sequence[str | Path], out: str | Path, size: int = 256, quality: int = 95,
            group_by: str = "source", fit_dir: str | Path | None = None, device: str = "cpu",
            stride: int = 1, max_frames: int | None = None) -> FaceCache:
    """Build one cache file ``out`` from ``portraitrig fit`` folders and/or raw images/videos.

    Raw inputs are fitted first with the pipeline (``portraitrig fit --save-crops`` into
    ``fit_dir``, default ``<out>.fits/``; finished items are reused)."""
    folders = [Path(p) for p in inputs if is_fit_folder(p)]
    raw = [p for p in inputs if not is_fit_folder(p)]
    if raw:
        from portraitrig.apps.fitjob import FitJobConfig, run_fit

        fd = Path(fit_dir) if fit_dir else Path(str(out) + ".fits")
        run_fit(raw, fd, FitJobConfig(crop_size=max(size, 256), save_crops=True, device=device, stride=stride,
                                      max_frames=max_frames), progress=True)
        folders.append(fd)
    images, plist, ids, groups = [], [], [], []
    for f in folders:
        im, p, i, g = read_fit_folder(f, group_by)
        images += im
        plist.append(p)
        ids += i
        groups += g
    if not plist:
        raise InputError(None, "nothing to prepare: give `portraitrig fit` folders or images/videos")
    cache = build_cache(images, RigParams.cat(plist), ids, size, groups, quality)
    cache.save(out)
    return cache


__all__ = ["prepare", "read_fit_folder"]
