"""Training data cache: aligned crops (JPEG bytes) + stacked RigParams in ONE safetensors file.

No rendered buffers are stored: they are re-rendered from the parameters on the training device
(``render_buffers`` is batched and runs on the GPU), which keeps a 256 px item at ~20-30 kB of
JPEG plus ~6 kB of parameters instead of DiffusionRig's 2.4 MB of float buffers.

File layout (``.safetensors``):
    jpeg      uint8 (total_bytes,)   all crops' JPEG files back to back
    offsets   int64 (N + 1,)         item i is jpeg[offsets[i]:offsets[i+1]]
    group     int64 (N,)             index into metadata "groups" (a person / clip)
    params.*  RigParams tensor fields stacked over items (float32)
    metadata: format, size, model, ids, sources, groups (JSON strings)
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import TENSOR_FIELDS, RigParams
from portraitrig.io.images import decode_image

FORMAT = "portraitrig.DiffusionCache"


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))


def group_of(source: str) -> str:
    """Person / clip label of a source: the video's stem for "clip.mp4#frame=3", else the file stem."""
    return Path(source.split("#", 1)[0]).stem


@dataclass
class FaceCache:
    """Crops + rig parameters of N items (see the module docstring for the file layout)."""

    size: int
    jpeg: torch.Tensor         # uint8 (total,)
    offsets: torch.Tensor      # int64 (N + 1,)
    params: RigParams          # batch N, float32, CPU
    group: torch.Tensor        # int64 (N,)
    groups: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def sources(self) -> list[str]:
        return list(self.params.sources)

    def image(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 crop of item i."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return decode_image(self.jpeg[a:b].numpy().tobytes())

    def images(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """(n, 3, S, S) uint8 crops (all items by default)."""
        idx = range(len(self)) if indices is None else indices
        return torch.from_numpy(np.stack([self.image(int(i)) for i in idx])).permute(0, 3, 1, 2).contiguous()

    def bytes_per_item(self) -> float:
        """Mean stored bytes per item: JPEG + parameters."""
        pbytes = sum(v.numel() * v.element_size() for v in self.params.tensors().values())
        return (self.jpeg.numel() + pbytes) / max(len(self), 1)

    # ---------------------------------------------------------------- selection
    def subset(self, indices: Sequence[int]) -> "FaceCache":
        idx = [int(i) for i in indices]
        parts, offs = [], [0]
        for i in idx:
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            parts.append(self.jpeg[a:b])
            offs.append(offs[-1] + b - a)
        jpeg = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
        params = self.params[torch.as_tensor(idx, dtype=torch.long)] if idx else self.params[0:0]
        return FaceCache(self.size, jpeg, torch.as_tensor(offs, dtype=torch.int64), params,
                         self.group[idx].clone(), list(self.groups), [self.ids[i] for i in idx])

    def indices_of(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[int]:
        """Items whose group is in ``include`` (all if empty) and not in ``exclude``."""
        for g in list(include) + list(exclude):
            if g not in self.groups:
                raise InputError(None, f"no group {g!r} in the cache (groups: {', '.join(self.groups)})")
        inc = {self.groups.index(g) for g in include}
        exc = {self.groups.index(g) for g in exclude}
        return [i for i, g in enumerate(self.group.tolist()) if (not inc or g in inc) and g not in exc]

    def split_group(self, name: str, n_train: int) -> tuple[list[int], list[int]]:
        """One person's items split into ``n_train`` evenly spaced training items and the rest."""
        idx = self.indices_of([name])
        if n_train >= len(idx):
            return idx, []
        pick = set(np.linspace(0, len(idx) - 1, n_train).round().astype(int).tolist())
        return [idx[k] for k in sorted(pick)], [idx[k] for k in range(len(idx)) if k not in pick]

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        from portraitrig.io.atomic import atomic_path

        arrays = {"jpeg": self.jpeg.contiguous(), "offsets": self.offsets.contiguous(), "group": self.group.contiguous()}
        arrays.update({f"params.{k}": v.detach().float().cpu().contiguous() for k, v in self.params.tensors().items()})
        meta = {"format": FORMAT, "size": str(self.size), "model": self.params.model, "ids": json.dumps(self.ids),
                "sources": json.dumps(self.sources), "groups": json.dumps(self.groups)}
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(arrays, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FaceCache":
        from portraitrig.io.tensorfile import read_safetensors

        path = Path(path)
        arrays, md = read_safetensors(path, "cache file")
        if md.get("format") != FORMAT:
            raise InputError(path, "not a portraitrig diffusion cache (make one with `portraitrig prepare`)")
        missing = [k for k in ("jpeg", "offsets", "group", *(f"params.{k}" for k in TENSOR_FIELDS)) if k not in arrays]
        missing += [k for k in ("size", "model", "sources", "groups", "ids") if k not in md]
        if missing:
            raise InputError(path, f"damaged cache: {', '.join(missing)} missing")
        try:
            size = int(md["size"])
            sources, groups, ids = (json.loads(md[k]) for k in ("sources", "groups", "ids"))
        except ValueError as exc:
            raise InputError(path, f"damaged cache: malformed metadata ({exc})") from None
        if not 1 <= size <= 8192:
            raise InputError(path, f"damaged cache: crop size {size} is outside 1..8192")
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in (sources, groups, ids)):
            raise InputError(path, "damaged cache: sources, groups and ids must be lists of strings")
        params = RigParams(**{k: arrays[f"params.{k}"] for k in TENSOR_FIELDS}, model=md["model"],
                           crop_size=size, sources=sources).check(path)
        jpeg, offsets, group, n = arrays["jpeg"], arrays["offsets"], arrays["group"], len(params)
        if jpeg.dtype != torch.uint8 or jpeg.ndim != 1:
            raise InputError(path, f"damaged cache: jpeg must be 1-D uint8, not {tuple(jpeg.shape)} {jpeg.dtype}")
        if (offsets.dtype != torch.int64 or offsets.shape != (n + 1,) or int(offsets[0]) != 0
                or int(offsets[-1]) != jpeg.numel() or bool((offsets[1:] < offsets[:-1]).any())):
            raise InputError(path, f"damaged cache: offsets must be {n + 1} increasing int64 from 0 to "
                                   f"{jpeg.numel()} (the JPEG bytes)")
        if (group.dtype != torch.int64 or group.shape != (n,) or len(ids) != n or len(sources) != n
                or (n and not 0 <= int(group.min()) <= int(group.max()) < len(groups))):
            raise InputError(path, f"damaged cache: group, ids and sources must have {n} entries "
                                   f"and group index {len(groups)} group names")
        return cls(size, jpeg, offsets, params, group, groups, ids)


def build_cache(images: Sequence[np.ndarray], params: RigParams, ids: Sequence[str], size: int,
                groups: Sequence[str] | None = None, quality: int = 95) -> FaceCache:
    """A cache from (S, S, 3) uint8 crops and their RigParams (batch N)."""
    if len(images) != len(params) or len(ids) != len(images):
        raise ValueError(f"{len(images)} images, {len(params)} parameter sets and {len(ids)} ids differ")
    blobs = [np.frombuffer(encode_jpeg(_resize(np.asarray(im), size), quality), dtype=np.uint8) for im in images]
    offs = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    srcs = list(params.sources) if params.sources else list(ids)
    labels = list(groups) if groups is not None else [group_of(s) for s in srcs]
    names = sorted(set(labels))
    params = params.to("cpu", torch.float32).detach().replace(crop_size=size, sources=srcs)
    return FaceCache(size, torch.from_numpy(np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)),
                     torch.from_numpy(offs), params, torch.as_tensor([names.index(g) for g in labels], dtype=torch.int64),
                     names, list(ids))


def merge_caches(paths: Sequence[str | Path | FaceCache], out: str | Path | None = None) -> FaceCache:
    """One cache of all items of several caches (e.g. made by ``portraitrig prepare`` on shards of
    one collection), in the given order; groups of the same name are one group. Written to
    ``out`` when given. The caches must have the same crop size and face model and no item id
    in common (InputError naming the file otherwise); a FaceCache object may stand in for a path."""
    caches, names = [], []
    for p in paths:
        caches.append(p if isinstance(p, FaceCache) else FaceCache.load(p))
        names.append(None if isinstance(p, FaceCache) else Path(p))
    if not caches:
        raise InputError(None, "no caches to merge")
    first, first_name = caches[0], names[0] or "the first cache"
    seen: dict[str, str | Path] = {}
    for c, name in zip(caches, names):
        where = name or "a cache being merged"
        if c.size != first.size:
            raise InputError(name, f"crop size {c.size} differs from {first.size} of {first_name}")
        if c.params.model != first.params.model:
            raise InputError(name, f"face model {c.params.model!r} differs from {first.params.model!r} of {first_name}")
        for i in c.ids:
            if i in seen:
                raise InputError(name, f"item id {i!r} is also in {seen[i]} (ids must not collide)")
            seen[i] = where
    groups = sorted({g for c in caches for g in c.groups})
    jpeg = torch.cat([c.jpeg for c in caches])
    starts = np.cumsum([0] + [int(c.jpeg.numel()) for c in caches[:-1]])
    offsets = torch.cat([caches[0].offsets[:1]] + [c.offsets[1:] + int(s) for c, s in zip(caches, starts)])
    group = torch.cat([torch.as_tensor([groups.index(c.groups[g]) for g in c.group.tolist()], dtype=torch.int64)
                       for c in caches])
    params = RigParams.cat([c.params for c in caches]).replace(crop_size=first.size)
    merged = FaceCache(first.size, jpeg, offsets.to(torch.int64), params, group, groups,
                       [i for c in caches for i in c.ids])
    if out is not None:
        merged.save(out)
    return merged
