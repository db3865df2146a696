"""Training data of the video renderer: one target video in ONE fixed crop.

A video portrait renderer learns the background, hair and clothes from the video, so every
frame is cut with the same crop (:func:`fixed_crop`: the median of the per-frame face crops,
zoomed out) and the rig parameters are moved into that crop (:func:`params_to_crop`). The
data is a :class:`~portraitrig.neural.cache.FaceCache` (crops + parameters) plus a sidecar
``<cache stem>.video.safetensors`` beside it: per-frame person masks (PNG bytes), frame indices,
the crop, the video's size, frame rate and path, and how many leading frames are for
training (the rest, the video's end, is held out for evaluation).

:func:`prepare_video` makes it from a video (fit, segment, crop); :func:`from_frames` from
crops and known RigParams (synthetic data, tests).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from portraitrig.capture.types import Crop
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.io.imagepack import pack_images, unpack_images
from portraitrig.neural.cache import FaceCache, build_cache

FORMAT = "portraitrig.VideoData"
SIDECAR = ".video.safetensors"


def sidecar_path(cache_path: str | Path) -> Path:
    p = Path(cache_path)
    return p.with_name(p.name[: -len(p.suffix)] + SIDECAR if p.suffix else p.name + SIDECAR)


@dataclass
class VideoData:
    """One target video in a fixed crop. crops: (N, 3, S, S) uint8; params: batch N, in the
    fixed crop's NDC; masks: (N, 1, S, S) uint8 person masks (255 = person); frame_index: (N,)
    int64 frame numbers in the video; crop: the fixed crop (image -> crop pixels, size S);
    fps: frames per second; video: the video's path ('' for synthetic data); n_train: the
    first n_train items train, the rest are held out."""

    cache: FaceCache
    masks: torch.Tensor
    frame_index: torch.Tensor
    crop: Crop
    fps: float
    video: str
    n_train: int

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def size(self) -> int:
        return self.cache.size

    @property
    def params(self) -> RigParams:
        return self.cache.params

    def crops(self) -> torch.Tensor:
        return self.cache.images()

    def in_frame(self) -> torch.Tensor:
        """(1, 1, S, S) bool: the fixed crop's pixels inside the video frame. A crop zoomed out
        past the frame's edge (usual: ~35 % of the long clips' crops) is mirrored padding there,
        which no output shows (paste-back writes the frame only)."""
        from portraitrig.capture.align import crop_in_image

        return torch.from_numpy(crop_in_image(self.crop))[None, None]

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        from portraitrig.io.atomic import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.cache.save(path)
        meta = {"format": FORMAT, "fps": repr(float(self.fps)), "video": self.video, "n_train": str(self.n_train),
                "image_size": json.dumps(list(self.crop.image_size)), "size": str(self.crop.size)}
        png, offsets = encode_masks(self.masks)
        arrays = {"mask_png": png, "mask_offsets": offsets, "frame_index": self.frame_index.long().contiguous(),
                  "affine": torch.from_numpy(np.asarray(self.crop.affine, np.float64)).contiguous()}
        with atomic_path(sidecar_path(path)) as tmp:
            save_file(arrays, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "VideoData":
        from portraitrig.io.tensorfile import read_safetensors

        path = Path(path)
        side = sidecar_path(path)
        if not side.is_file():
            raise InputError(path, f"not a video-renderer cache (no {side.name} beside it; "
                                   "give the target video or make one with prepare_video)")
        cache = FaceCache.load(path)
        arrays, md = read_safetensors(side, "video data")
        if md.get("format") != FORMAT:
            raise InputError(side, "not a portraitrig video data file")
        try:
            n_train = int(md["n_train"])
            crop = Crop(arrays["affine"].double().numpy(), int(md["size"]), tuple(json.loads(md["image_size"])))
            frame_index, fps = arrays["frame_index"], float(md["fps"])
            N, S = len(cache), cache.size
            masks = arrays["masks"] if "masks" in arrays else \
                decode_masks(arrays["mask_png"], arrays["mask_offsets"], N, S, side)
        except (KeyError, ValueError) as exc:
            raise InputError(side, f"incomplete video data ({exc})") from None
        if tuple(masks.shape) != (N, 1, S, S) or frame_index.shape != (N,) or not 1 <= n_train <= N:
            raise InputError(side, f"video data does not match its cache {path.name} ({N} items of {S} px)")
        return cls(cache, masks, frame_index, crop, fps, md.get("video", ""), n_train)


def encode_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, S, S) uint8 masks -> PNG files back to back (uint8) and their offsets (N + 1,): a
    person mask compresses ~20x (raw masks were most of a video cache's size)."""
    return pack_images(masks.to(torch.uint8)[:, 0], "PNG")


def decode_masks(data: torch.Tensor, offsets: torch.Tensor, n: int, size: int, path) -> torch.Tensor:
    """The inverse of :func:`encode_masks`; every file must be an 8-bit grey PNG of size x size
    (checked from its header before it is decoded)."""
    out = unpack_images(data, offsets, n, (size, size), 1, path, "video data: person mask", fmt="PNG")
    return torch.from_numpy(out)[:, None]


# ---------------------------------------------------------------------- crops and parameters
def _similarity(affine: np.ndarray) -> tuple[float, float, float, float]:
    """(a, b, tx, ty) of a similarity [[a, -b, tx], [b, a, ty]] (least squares)."""
    A = np.asarray(affine, np.float64)
    return (A[0, 0] + A[1, 1]) / 2, (A[1, 0] - A[0, 1]) / 2, A[0, 2], A[1, 2]


def fixed_crop(crops: list[Crop], size: int, zoom_out: float = 1.25) -> Crop:
    """One crop for a whole video: the per-frame crops' median similarity (scale, rotation,
    centre), at ``size`` pixels, zoomed out ``zoom_out`` times about its centre (room for head
    motion, hair and shoulders)."""
    if not crops:
        raise ValueError("fixed_crop needs at least one crop")
    centres, scales, angles = [], [], []
    for c in crops:
        a, b, _, _ = _similarity(c.affine)
        centre = c.to_image(np.array([c.size / 2, c.size / 2]))
        centres.append(centre)
        scales.append(math.hypot(a, b) * size / c.size)   # image px -> output crop px
        angles.append(math.atan2(b, a))
    cx, cy = np.median(np.array(centres), 0)
    k = float(np.median(scales)) / zoom_out
    th = float(np.median(angles))
    a, b = k * math.cos(th), k * math.sin(th)
    # crop = [[a, -b], [b, a]] @ image + t with the centre going to (size/2, size/2)
    t = np.array([size / 2, size / 2]) - np.array([[a, -b], [b, a]]) @ np.array([cx, cy])
    affine = np.array([[a, -b, t[0]], [b, a, t[1]]], np.float64)
    return Crop(affine, int(size), tuple(crops[0].image_size))


def params_to_crop(params: RigParams, src: Crop, dst: Crop) -> RigParams:
    """Rig parameters fitted in crop ``src`` re-expressed in crop ``dst`` of the same image
    (the same mesh lands on the same image pixels): the crops' relative similarity is folded
    into scale, in-plane rotation and translation (weak perspective)."""
    from portraitrig.edits import move_in_image

    A = np.vstack([dst.affine, [0, 0, 1]]) @ np.linalg.inv(np.vstack([src.affine, [0, 0, 1]]))
    a, b, bx, by = _similarity(A[:2])
    lam = math.hypot(a, b) * src.size / dst.size
    th = math.atan2(b, a)
    dt, dev = params.scale.dtype, params.scale.device
    L = lam * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=dt, device=dev)
    shift = L @ torch.ones(2, dtype=dt, device=dev) + torch.tensor([2 * bx / dst.size - 1, 2 * by / dst.size - 1],
                                                                    dtype=dt, device=dev)
    return move_in_image(params, L, shift).replace(crop_size=dst.size)


def crop_frame(image: np.ndarray, crop: Crop) -> np.ndarray:
    """(S, S, 3) uint8: ``image`` cut with ``crop`` (mirrored padding outside the image)."""
    import cv2

    from portraitrig.capture.align import warp_affine

    return warp_affine(image, crop.affine, (crop.size, crop.size), border=cv2.BORDER_REFLECT_101)


def split_count(n: int, holdout: float) -> int:
    """Training items of ``n`` frames with the last ``holdout`` share held out (at least one trains)."""
    return max(1, min(n, int(math.ceil(n * (1 - holdout) - 1e-9))))


# ---------------------------------------------------------------------- builders
def from_frames(crops, params: RigParams, masks=None, fps: float = 25.0, holdout: float = 0.2,
                crop: Crop | None = None, frame_index=None, video: str = "") -> VideoData:
    """Video data from fixed-crop frames (N, S, S, 3) uint8 and their RigParams (batch N, in
    that crop's NDC); ``masks`` (N, S, S) in [0, 1] (None: the face mesh's mask, dilated)."""
    crops = [np.asarray(c, np.uint8) for c in crops]
    N = len(crops)
    if N == 0 or len(params) != N:
        raise ValueError(f"{N} frames and {len(params)} parameter sets")
    S = crops[0].shape[0]
    if masks is None:
        from portraitrig.face.model import load_default_model
        from portraitrig.render.buffers import render_buffers

        with torch.no_grad():
            m = render_buffers(params.to("cpu", torch.float32), load_default_model(), size=S, names=("mask",))["mask"]
        m = torch.nn.functional.max_pool2d(m, 2 * max(1, S // 16) + 1, stride=1, padding=max(1, S // 16))
        masks_u8 = (m * 255).round().to(torch.uint8)
    else:
        masks_u8 = torch.from_numpy((np.clip(np.asarray(masks, np.float32), 0, 1) * 255).round().astype(np.uint8))
        masks_u8 = masks_u8.reshape(N, 1, S, S)
    if crop is None:
        crop = Crop(np.array([[1.0, 0, 0], [0, 1.0, 0]]), S, (S, S))
    fi = torch.arange(N) if frame_index is None else torch.as_tensor(frame_index, dtype=torch.long)
    srcs = [f"{video or 'frames'}#frame={int(i)}" for i in fi]
    cache = build_cache(crops, params.replace(sources=srcs), [f"f{int(i):06d}" for i in fi], S,
                        groups=[Path(video).stem or "frames"] * N)
    return VideoData(cache, masks_u8, fi, crop, float(fps), str(video), split_count(N, holdout))


def prepare_video(video: str | Path, out: str | Path, size: int = 256, holdout: float = 0.2,
                  max_frames: int | None = None, device: str = "cpu", zoom_out: float = 1.25,
                  say=print, rigger=None) -> Path:
    """Fit ``video`` (tracking, shared identity, smoothing: ``Rigger.fit_video``), cut every
    fitted frame with one fixed crop, segment the person in it, and save the video data at
    ``out`` (a cache + its sidecar). Frames without a face are left out (counted). Returns
    ``out``."""
    from portraitrig.capture.segment import PersonSegmenter, crop_person_mask
    from portraitrig.io.video import iter_video_frames, video_info

    video = Path(video)
    info = video_info(video)
    if rigger is None:
        from portraitrig.pipeline import Rigger

        rigger = Rigger(crop_size=256, device=device)
    if say:
        say(f"fitting {video.name} ({info.frame_count} frames at {info.fps:.2f} fps)")
    fits = rigger.fit_video(video, max_frames=max_frames)
    skipped = len(getattr(rigger, "last_skipped", []))
    by_frame = {int(f.source.rsplit("#frame=", 1)[1]): f for f in fits}
    crop = fixed_crop([f.crop for f in fits], size, zoom_out)
    crops, plist, masks, idx = [], [], [], []
    with PersonSegmenter() as seg:
        for fr in iter_video_frames(video, max_frames=max_frames):
            f = by_frame.get(fr.index)
            if f is None:
                continue
            crops.append(crop_frame(fr.image, crop))
            masks.append(crop_person_mask(seg, fr.image, crop, path=video))
            plist.append(params_to_crop(f.params.to("cpu", torch.float32), f.crop, crop))
            idx.append(fr.index)
    if len(crops) < 2:
        raise InputError(video, f"a face was found in {len(crops)} frame(s); the video renderer needs at least 2")
    if say:
        say(f"{len(crops)} frames fitted" + (f", {skipped} without a face left out" if skipped else ""))
    data = from_frames(crops, RigParams.cat(plist), np.stack(masks), fps=info.fps, holdout=holdout, crop=crop,
                       frame_index=idx, video=str(video.resolve()))
    return data.save(out)


def load_or_prepare(data, size: int, work_dir: str | Path | None, holdout: float = 0.2,
                    max_frames: int | None = None, device: str = "cpu", say=print) -> VideoData:
    """VideoData from a VideoData, a video cache path, or a video (prepared once into
    ``work_dir/data/<stem>.safetensors`` and reused; into a temporary folder without one)."""
    if isinstance(data, VideoData):
        return data
    p = Path(data)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.suffix == ".safetensors":
        return VideoData.load(p)
    from portraitrig.io.images import is_video

    if not is_video(p):
        raise InputError(p, "neither a video nor a video-renderer cache (.safetensors)")
    if work_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return VideoData.load(prepare_video(p, Path(tmp) / f"{p.stem}.safetensors", size, holdout, max_frames,
                                                device, say=say))
    out = Path(work_dir) / "data" / f"{p.stem}.safetensors"
    if out.is_file() and sidecar_path(out).is_file():
        if say:
            say(f"reusing the prepared video data {out}")
        return VideoData.load(out)
    return VideoData.load(prepare_video(p, out, size, holdout, max_frames, device, say=say))


__all__ = ["VideoData", "FORMAT", "sidecar_path", "fixed_crop", "params_to_crop", "crop_frame", "split_count",
           "from_frames", "prepare_video", "load_or_prepare"]
