"""Training frames of one person, the avatars' data (methods ``avatar`` and ``splat``): aligned
crops, person masks and RigParams.

From a video: every ``stride``-th frame fitted with :meth:`portraitrig.pipeline.Rigger.fit_video`
(frames without a face are skipped and counted), person masks from
:class:`~portraitrig.capture.segment.PersonSegmenter`. Kept in one ``.safetensors`` file (a
RigParams file whose extras are the crops and masks packed as PNG, or the crops as JPEG:
:mod:`portraitrig.io.imagepack`; older files hold raw uint8 ``images`` (N, S, S, 3) and
``masks`` (N, S, S)), so a resumed run does not fit again. The last ``holdout`` share of frames
is held out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams

FRAMES_KIND = "portraitrig.avatar.frames"


@dataclass
class Frames:
    images: torch.Tensor       # (N, S, S, 3) uint8
    masks: torch.Tensor        # (N, S, S) uint8, 255 = person
    params: RigParams          # batch N
    source: str = ""
    skipped: int = 0           # frames without a face
    valid: torch.Tensor | None = None   # (N, S, S) bool: the crop's pixels inside the video frame (None: all);
                                        # the rest is mirrored padding, which no loss or score should see

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def in_frame(self) -> torch.Tensor:
        """(N, S, S) bool: where each crop shows its video frame (everywhere when not recorded)."""
        if self.valid is None:
            return torch.ones(self.images.shape[:3], dtype=torch.bool)
        return self.valid

    def split(self, holdout: float) -> tuple[list[int], list[int]]:
        """(training, held-out) indices: the last ``holdout`` share held out (at least one frame
        trains; none is held out of fewer than 2 frames)."""
        n = len(self)
        held = min(n - 1, int(math.floor(n * holdout + 0.5))) if n >= 2 else 0
        return list(range(n - held)), list(range(n - held, n))

    def subset(self, idx) -> "Frames":
        i = torch.as_tensor(list(idx), dtype=torch.long)
        return Frames(self.images[i], self.masks[i], self.params[i.tolist()], self.source, self.skipped,
                      None if self.valid is None else self.valid[i])

    def save(self, path: str | Path, jpeg_quality: int | None = None) -> Path:
        """Write the frames file; masks are packed as PNG, images too, or as JPEG at
        ``jpeg_quality`` (about 10x smaller than raw; lossy)."""
        from portraitrig.io.imagepack import pack_images

        img, img_off = pack_images(self.images, "JPEG" if jpeg_quality else "PNG", jpeg_quality or 95)
        msk, msk_off = pack_images(self.masks, "PNG")
        extras = {"images_packed": img, "images_offsets": img_off, "masks_packed": msk, "masks_offsets": msk_off}
        if self.valid is not None:
            extras["valid_packed"], extras["valid_offsets"] = pack_images(self.valid.to(torch.uint8) * 255, "PNG")
        return self.params.save(path, extras=extras,
                                meta={"kind": FRAMES_KIND, "source": self.source, "skipped": self.skipped,
                                      "size": self.size})

    @classmethod
    def load(cls, path: str | Path) -> "Frames":
        """Read a frames file: packed images and masks (:meth:`save`), or raw uint8 ``images``
        (N, S, S, 3) and ``masks`` (N, S, S) (older files); the in-frame masks where recorded
        (files made before them: every pixel counts as in the frame)."""
        from portraitrig.io.imagepack import unpack_images

        params, extras, meta = RigParams.load(path, with_extras=True)
        valid = None
        if not isinstance(meta, dict) or meta.get("kind") != FRAMES_KIND:
            raise InputError(path, "not an avatar frames file (a RigParams file with images and masks)")
        n = len(params)
        if "images_packed" in extras:
            try:
                size = int(meta["size"])
                if not 1 <= size <= 8192:
                    raise ValueError(size)
                images = torch.from_numpy(unpack_images(extras["images_packed"], extras["images_offsets"], n,
                                                        (size, size), 3, path, "frame image"))
                masks = torch.from_numpy(unpack_images(extras["masks_packed"], extras["masks_offsets"], n,
                                                       (size, size), 1, path, "person mask", fmt="PNG"))
                if "valid_packed" in extras:
                    valid = torch.from_numpy(unpack_images(extras["valid_packed"], extras["valid_offsets"], n,
                                                           (size, size), 1, path, "in-frame mask", fmt="PNG")) > 127
            except (KeyError, ValueError, TypeError) as exc:
                raise InputError(path, f"frames file has malformed packed images ({exc})") from None
        else:
            images, masks = extras.get("images"), extras.get("masks")
        if (images is None or masks is None or images.dtype != torch.uint8 or masks.dtype != torch.uint8
                or images.ndim != 4 or images.shape[0] != n or images.shape[3] != 3
                or tuple(masks.shape) != tuple(images.shape[:3]) or images.shape[1] != images.shape[2]):
            raise InputError(path, "frames file has malformed images or masks")
        return cls(images, masks, params, str(meta.get("source", "")), int(meta.get("skipped", 0)), valid)


def pose_spread(params: RigParams) -> tuple[float, float]:
    """(yaw, pitch) ranges in degrees (max - min) the frames' head poses cover."""
    e = params.euler_degrees()
    return float(e[:, 0].max() - e[:, 0].min()), float(e[:, 1].max() - e[:, 1].min())


def frames_from_video(path: str | Path, size: int, stride: int = 1, max_frames: int | None = None,
                      say=print) -> Frames:
    """Fit a one-person video and segment its crops (see the module docstring)."""
    from portraitrig.capture.align import crop_in_image
    from portraitrig.capture.segment import PersonSegmenter, crop_person_mask
    from portraitrig.io.video import iter_video_frames
    from portraitrig.pipeline import Rigger

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such video")
    with Rigger(crop_size=size, photometric=False) as rigger:
        fits = rigger.fit_video(path, stride=stride, max_frames=max_frames)
        skipped = len(rigger.last_skipped)
    by_index = {int(f.params.sources[0].rsplit("#frame=", 1)[1]): f for f in fits}
    masks = {}
    with PersonSegmenter() as seg:
        for fr in iter_video_frames(path, stride=stride, max_frames=max_frames):
            f = by_index.get(fr.index)
            if f is not None:
                masks[fr.index] = crop_person_mask(seg, fr.image, f.crop, path=path)
    order = [i for i in sorted(by_index) if i in masks]
    if len(order) < 2:
        raise InputError(path, f"only {len(order)} frame(s) with a face; an avatar needs at least 2")
    images = torch.from_numpy(np.stack([by_index[i].crop_image for i in order]))
    m = torch.from_numpy(np.stack([np.round(masks[i] * 255).astype(np.uint8) for i in order]))
    params = RigParams.cat([by_index[i].params for i in order])
    valid = torch.from_numpy(np.stack([crop_in_image(by_index[i].crop) for i in order]))
    if say:
        say(f"{path.name}: {len(order)} frames fitted" + (f", {skipped} without a face skipped" if skipped else ""))
    return Frames(images, m, params, str(path), skipped, valid)


def load_frames(data: str | Path, size: int, stride: int = 1, max_frames: int | None = None,
                cache: str | Path | None = None, say=print) -> Frames:
    """Frames from ``data``: an avatar frames file (.safetensors) or a video (fitted, and kept
    in ``cache`` when given; an existing ``cache`` is reused)."""
    data = Path(data)
    if data.suffix == ".safetensors":
        return Frames.load(data)
    if cache is not None and Path(cache).is_file():
        fr = Frames.load(cache)
        if fr.source == str(data) and fr.size == size:
            if say:
                say(f"frames: reusing {cache} ({len(fr)} frames)")
            return fr
    fr = frames_from_video(data, size, stride, max_frames, say)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        fr.save(cache)
    return fr


def synthetic_frames(n: int = 8, size: int = 32, seed: int = 0) -> Frames:
    """A synthetic rendered head (the shipped face model, shaded, over a gradient background)
    with changing smile / jaw and small head turns (deterministic; ``seed`` shifts the turns):
    tests' training data."""
    from portraitrig import edits
    from portraitrig.face.controls import apply_controls
    from portraitrig.face.model import load_default_model
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    p = RigParams.neutral(fm, n)
    k = torch.linspace(0, 1, n)
    e = torch.cat([apply_controls(p.expression[i:i + 1], model=fm, smile=float(k[i]), jaw_open=float(1 - k[i]) * 0.5)
                   for i in range(n)])
    p = p.replace(expression=e, sources=[f"synthetic#frame={i}" for i in range(n)], crop_size=size)
    p = RigParams.cat([edits.rotate_head(p[i:i + 1], float(8 * math.sin(i + seed)), float(4 * math.cos(i + seed)), model=fm)
                       for i in range(n)])
    buf = render_buffers(p, fm, size, names=("shaded", "mask"))
    yy = torch.linspace(0, 1, size)[:, None].expand(size, size)
    bg = torch.stack([0.2 + 0.3 * yy, 0.4 + 0 * yy, 0.6 - 0.3 * yy])[None]
    img = buf["shaded"].clamp(0, 1) * buf["mask"] + bg * (1 - buf["mask"])
    images = (img * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    masks = (buf["mask"][:, 0] * 255).to(torch.uint8)
    return Frames(images, masks, p, "synthetic", 0)


TRUST_MARGIN = 10.0  # degrees of head turn beyond the training video's spread a view is trusted


@dataclass
class FramesOptions:
    """The run options of a method trained on frames (a base of the avatars' ``Config``)."""

    holdout: float = field(default=0.2, metadata={"help": "share of the video's last frames held out of training"})
    stride: int = field(default=1, metadata={"help": "use every N-th video frame"})
    max_frames: int | None = field(default=None, metadata={"help": "fit at most this many video frames"})
    frames_cache: str | None = field(default=None, metadata={
        "help": "file (.safetensors) keeping the video's fitted frames and masks; reused when it exists",
        "metavar": "FILE"})
    sample_count: int = field(default=2, metadata={"help": "held-out frames in each sample picture"})

    def validate_frames(self) -> None:
        if self.stride < 1 or self.sample_count < 1:
            raise ValueError("stride and sample_count must be positive")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout is a share of frames in [0, 1), got {self.holdout}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError("max_frames must be at least 2")


def frames_for_training(options: FramesOptions, data, size: int, work_dir=None, say=print) -> "Frames":
    """The frames a run trains on: ``data`` itself (Frames), a frames file, or a video (fitted and
    kept in ``options.frames_cache``, default ``work_dir/frames.safetensors``, so a resumed run
    does not fit again)."""
    if isinstance(data, Frames):
        return data
    cache = options.frames_cache or (str(Path(work_dir) / "frames.safetensors") if work_dir is not None else None)
    return load_frames(data, size, options.stride, options.max_frames, cache, say)


@dataclass
class TrainingSplit:
    """Frames split for training (:func:`split_for_training`), with the head turns the training
    frames cover and the views they let a renderer trust (half the spread + ``TRUST_MARGIN``)."""

    train: "Frames"
    held: "Frames"
    trusted_yaw: float
    trusted_pitch: float


def split_for_training(frames: "Frames", holdout: float, face_model, name: str, say=print) -> TrainingSplit:
    """Hold out the last ``holdout`` share, check the frames were fitted with ``face_model``,
    and say (prefixed by ``name``) what was held out and how far novel views can be trusted,
    with a warning for short videos or little head motion."""
    if frames.params.model != face_model.id:
        raise InputError(frames.source, f"frames fitted with face model {frames.params.model}, not {face_model.id}")
    train_idx, held_idx = frames.split(holdout)
    train, held = frames.subset(train_idx), frames.subset(held_idx)
    yaw, pitch = pose_spread(train.params)
    out = TrainingSplit(train, held, round(yaw / 2 + TRUST_MARGIN, 1), round(pitch / 2 + TRUST_MARGIN, 1))
    if say:
        say(f"{name}: {len(train)} training frames, {len(held)} held out"
            + (f", {frames.skipped} without a face skipped" if frames.skipped else "")
            + f"; head turns seen: yaw {yaw:.1f} deg, pitch {pitch:.1f} deg -> novel views trusted to "
              f"about +-{out.trusted_yaw:.0f} deg yaw, +-{out.trusted_pitch:.0f} deg pitch")
        if len(train) < 30 or max(yaw, pitch) < 5:
            say(f"{name}: warning: short video or little head motion; expect artefacts in turned views")
    return out


def tiny_frames_file(directory: str | Path, n: int = 8) -> Path:
    """A tiny synthetic frames file (32 px rendered head, changing expression) for tests."""
    path = Path(directory) / "avatar_frames.safetensors"
    synthetic_frames(n, 32).save(path)
    return path


__all__ = ["Frames", "load_frames", "frames_from_video", "synthetic_frames", "pose_spread", "FRAMES_KIND",
           "FramesOptions", "frames_for_training", "TrainingSplit", "split_for_training", "tiny_frames_file",
           "TRUST_MARGIN"]
