"""Expand command-line inputs (files, folders, glob patterns) into sources and items.

A :class:`Source` is one file (an image or a video); its items are what a batch job processes:
one item per image, one per kept video frame. Every item has an ``id`` that names its output
files: filesystem-safe, unique within one ``expand_inputs`` call, and stable for the same
inputs - so a resumed job recognises finished items. Image ids are known without decoding
anything; video frame ids (``<video name>.f<frame:06d>``) come from the frame index, and
video frames are decoded sequentially (frames already done are skipped without conversion
when ``iter_items(skip=...)`` says so).

Ids: the file stem (``photo``); when two inputs share it, the full name (``photo.png``), then
parent folders are prefixed (``a_photo.png``); a short hash of the path is the last resort.
Video ids always keep the extension (``clip.mp4``). Ids compare case-insensitively.
"""
from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from portraitrig.errors import InputError
from portraitrig.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_video, read_image

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FRAME_SUFFIX = re.compile(r"^(.*)\.f\d+$", re.IGNORECASE)
_MAX_ID = 120
_MAX_PARENTS = 3  # parent folders tried in ids before falling back to a hash


@dataclass
class Item:
    """One unit of work. ``load()`` returns (H, W, 3) uint8 RGB (images are read only then).
    ``frame_index`` / ``time_s`` are set for video frames, None for images."""

    id: str
    source: str
    _loader: Callable[[], np.ndarray] = field(repr=False)
    frame_index: int | None = None
    time_s: float | None = None

    def load(self) -> np.ndarray:
        return self._loader()


@dataclass
class Source:
    """One input file. ``id`` is the base of its items' ids; ``stride`` applies to videos."""

    path: Path
    kind: Literal["image", "video"]
    id: str
    stride: int = 1

    def iter_items(self, skip: Callable[[str], bool] | None = None) -> Iterator[Item]:
        """Yield the items of this source; items whose id ``skip(id)`` accepts are left out
        (for images without touching the file, for videos without colour conversion).
        Unreadable videos raise InputError while iterating (after the frames read so far)."""
        if self.kind == "image":
            if skip is None or not skip(self.id):
                path = self.path
                yield Item(self.id, str(path), lambda: read_image(path))
            return
        from portraitrig.io.video import iter_video

        want = None if skip is None else (lambda i: not skip(self.frame_id(i)))
        for fr in iter_video(self.path, stride=self.stride, want=want):
            image = fr.image
            yield Item(self.frame_id(fr.index), f"{self.path}#frame={fr.index},t={fr.time_s:.2f}s",
                       lambda image=image: image, fr.index, fr.time_s)

    def frame_id(self, index: int) -> str:
        """Item id of frame ``index`` of a video source."""
        return f"{self.id}.f{index:06d}"


def expand_inputs(inputs: list[str | Path], stride: int = 1, recursive: bool = False,
                  exclude: Callable[[Path], bool] | None = None) -> list[Source]:
    """Sources for files, folders (sorted; images and videos inside, other files skipped;
    sub-folders only with ``recursive``) and glob patterns (files with known extensions).
    Files of a folder or pattern that ``exclude(path)`` accepts are left out (a job's own
    outputs when its output folder is also an input).

    An explicitly named file is always a source - an image unless its extension is a video's -
    even when it is missing or not an image: it fails when loaded, so batch jobs report it.
    A folder or pattern that yields nothing raises InputError. Duplicates are dropped."""
    if stride < 1:
        raise ValueError("stride must be >= 1")
    paths: list[Path] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            found = _media_in(p.rglob("*") if recursive else p.iterdir(), exclude)
            if not found:
                raise InputError(p, "folder contains no images or videos")
            paths += found
        elif not p.exists() and glob.has_magic(str(inp)):
            found = _media_in((Path(m) for m in glob.glob(str(inp), recursive=recursive)), exclude)
            if not found:
                raise InputError(inp, "no image or video file matches this pattern")
            paths += found
        else:
            paths.append(p)
    seen, unique = set(), []
    for p in paths:
        key = _resolved(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    kinds = ["video" if is_video(p) else "image" for p in unique]
    ids = _unique_ids(unique, kinds)
    return [Source(p, k, i, stride) for p, k, i in zip(unique, kinds, ids)]


def _media_in(paths, exclude: Callable[[Path], bool] | None = None) -> list[Path]:
    exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    return sorted((p for p in paths if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in exts and not (exclude and exclude(p))), key=lambda p: str(p))


def _resolved(p: Path) -> str:
    try:
        return str(p.resolve())
    except OSError:
        return str(p.absolute())


def safe_name(text: str) -> str:
    """A filesystem-safe version of ``text``: [A-Za-z0-9._-] only, no leading dot."""
    s = _UNSAFE.sub("_", text).lstrip(".") or "_"
    if len(s) > _MAX_ID:
        s = s[:_MAX_ID - 9] + "_" + hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return s


def _candidate(p: Path, kind: str, level: int) -> str:
    """Level 0: stem (images) / name (videos); 1: name; 2+: name with level-1 parent folders."""
    if level == 0:
        return safe_name(p.stem if kind == "image" else p.name)
    parents = [q.name for q in Path(_resolved(p)).parents][: level - 1][::-1]
    return safe_name("_".join([*parents, p.name]))


def _unique_ids(paths: list[Path], kinds: list[str]) -> list[str]:
    n = len(paths)
    levels = [0] * n
    top = [min(len(Path(_resolved(p)).parents), _MAX_PARENTS) + 1 for p in paths]
    while True:
        ids = [_candidate(p, k, lv) for p, k, lv in zip(paths, kinds, levels)]
        for i in range(n):  # an image id must not look like a frame of a video source
            m = _FRAME_SUFFIX.match(ids[i])
            if kinds[i] == "image" and m and any(
                    kinds[j] == "video" and ids[j].lower() == m.group(1).lower() for j in range(n)):
                levels[i] = max(levels[i], 1)
                ids[i] = _candidate(paths[i], kinds[i], levels[i])
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(ids):
            groups.setdefault(s.lower(), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return ids
        stuck = True
        for g in clashes:
            for i in g:
                if levels[i] < top[i]:
                    levels[i] += 1
                    stuck = False
        if stuck:  # names equal up to case or unsafe characters: add a hash of the path
            for g in clashes:
                for i in g:
                    digest = hashlib.sha1(_resolved(paths[i]).encode("utf-8", "surrogateescape")).hexdigest()[:8]
                    ids[i] = f"{_candidate(paths[i], kinds[i], 1)}_{digest}"
            return ids


_FRAME = re.compile(r"^(?P<path>.+)#frame=(?P<index>\d+)")


def split_frame_source(source: str | Path) -> tuple[str, int] | None:
    """``("clip.mp4", 12)`` for a video frame's source ``clip.mp4#frame=12[,t=...]``, else None."""
    m = _FRAME.match(str(source))
    return (m.group("path"), int(m.group("index"))) if m else None


def load_source(source: str | Path) -> np.ndarray:
    """The image an item's ``source`` names: a photo path, or ``video#frame=N[,t=...]`` (as
    :class:`Item` writes it for video frames, and as fits record it)."""
    frame = split_frame_source(source)
    if frame is None:
        return read_image(source)
    from portraitrig.io.video import iter_video_frames

    path, index = frame
    for fr in iter_video_frames(path, start=index, max_frames=1):
        return fr.image
    raise InputError(path, f"frame {index} not found")
