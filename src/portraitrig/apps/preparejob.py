"""``portraitrig prepare``: a neural renderers' training cache from fit folders or raw inputs.

Raw images / videos are fitted first (``portraitrig fit --save-crops`` into ``<out>.fits/``,
finished items reused; ``workers`` processes, optionally only ``shard`` I/N of them); then
every fitted item's crop and rig parameters go into one cache file
(:class:`portraitrig.neural.cache.FaceCache`). Cache files among the inputs (``.safetensors``
made by ``prepare``, e.g. one per shard of a collection) are merged into it
(:func:`portraitrig.neural.cache.merge_caches`). Inputs that could not be fitted are reported
(how many, and the first messages); nothing prepared at all is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.io.fitfolder import is_fit_folder, iter_manifest
from portraitrig.io.images import read_image
from portraitrig.neural.cache import FaceCache, build_cache, group_of, merge_caches


def read_fit_folder(folder: str | Path, group_by: str = "source"):
    """(crops, RigParams, ids, groups) of the ok items of a ``portraitrig fit --save-crops`` folder.
    ``group_by``: "source" (video stem / photo stem) or "folder" (this folder's name)."""
    from portraitrig.io.fitfolder import MANIFEST
    from portraitrig.io.safepath import confined

    folder = Path(folder)
    manifest = folder / MANIFEST
    images, plist, ids, groups = [], [], [], []
    for it in iter_manifest(folder):
        if not it.get("crop"):
            raise InputError(folder, "fit output has no crops: run `portraitrig fit --save-crops`")
        # paths a manifest names stay inside its folder
        p = RigParams.load(confined(it["params"], folder, manifest))
        images.append(read_image(confined(it["crop"], folder, manifest)))
        plist.append(p.replace(sources=[it.get("source", it["id"])]))
        ids.append(f"{folder.name}/{it['id']}")
        groups.append(folder.name if group_by == "folder" else group_of(it.get("source", it["id"])))
    if not plist:
        raise InputError(folder, "no successfully fitted items in this folder")
    return images, RigParams.cat(plist), ids, groups


def _is_cache_file(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix == ".safetensors" and p.is_file()


def prepare(inputs: Sequence[str | Path], out: str | Path, size: int = 256, quality: int = 95,
            group_by: str = "source", fit_dir: str | Path | None = None, device: str = "cpu",
            stride: int = 1, max_frames: int | None = None, workers: int = 1, shard: str | None = None,
            progress: bool = True) -> FaceCache:
    """Build one cache file ``out`` from ``portraitrig fit`` folders, raw images/videos and
    earlier caches (``.safetensors`` files made by ``prepare``, merged in; same size required).

    Raw inputs are fitted first with the pipeline (``portraitrig fit --save-crops`` into
    ``fit_dir``, default ``<out>.fits/``; finished items are reused) in ``workers`` processes,
    only shard ``shard`` ("I/N") of them when given. How many raw inputs failed is printed;
    InputError when nothing could be prepared."""
    caches = [Path(p) for p in inputs if _is_cache_file(p)]
    folders = [Path(p) for p in inputs if is_fit_folder(p)]
    raw = [p for p in inputs if not is_fit_folder(p) and not _is_cache_file(p)]
    if raw:
        from portraitrig.apps.fitjob import FitJobConfig, run_fit

        fd = Path(fit_dir) if fit_dir else Path(str(out) + ".fits")
        summary = run_fit(raw, fd, FitJobConfig(crop_size=max(size, 256), save_crops=True, device=device,
                                                stride=stride, max_frames=max_frames, workers=workers,
                                                shard=shard), progress=progress)
        if summary.errors:
            print(f"prepare: {summary.errors} input(s) could not be fitted and are left out; "
                  f"{summary.ok + summary.skipped} fitted")
            print(summary.text())
        if summary.ok + summary.skipped == 0:
            first = f" (first: {summary.failed[0][1]})" if summary.failed else ""
            raise InputError(fd, f"nothing could be prepared: none of the inputs was fitted{first}")
        folders.append(fd)
    images, plist, ids, groups = [], [], [], []
    for f in folders:
        im, p, i, g = read_fit_folder(f, group_by)
        images += im
        plist.append(p)
        ids += i
        groups += g
    if not plist and not caches:
        raise InputError(None, "nothing to prepare: give `portraitrig fit` folders, caches or images/videos")
    parts: list = [build_cache(images, RigParams.cat(plist), ids, size, groups, quality)] if plist else []
    cache = merge_caches(parts + caches) if caches else parts[0]
    cache.save(out)
    return cache


__all__ = ["prepare", "read_fit_folder"]
