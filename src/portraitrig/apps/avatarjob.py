"""``portraitrig avatar MODEL -o OUT``: render a trained avatar (``portraitrig train avatar``).

What is rendered: the avatar's reference rig (its first training frame), or a driver video's
frames (``driver``: fitted; by default its expressions and head turns relative to its first
frame, so another person can drive; ``relative=False`` takes the driver's rig as is, for the
person's own held-out frames, which then become the references of the manifest), with named
edits on top (``spec``: an :class:`~portraitrig.editspec.EditSpec`, e.g. ``smile=0.8``), seen
from one view (``yaw``/``pitch``) or a turntable (``orbit`` views along a figure of eight
reaching +-``orbit_yaw`` and +-``orbit_pitch`` degrees; with a driver the view moves along it
over the video). Views beyond the limits are clamped, views beyond what training covered noted.

Writes ``OUT/frames/NNNNNN.png`` (RGBA with ``rgba``) and ``OUT/params/NNNNNN.safetensors``, or
``OUT/avatar.mp4`` (``video``; with the driver's audio), and ``OUT/manifest.json`` (the results
layout ``portraitrig eval`` reads).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from portraitrig.errors import InputError


@dataclass
class AvatarJobConfig:
    size: int | None = field(default=None, metadata={"help": "output size in pixels (default: the model's)"})
    yaw: float = field(default=0.0, metadata={"help": "head turn of the view, degrees"})
    pitch: float = field(default=0.0, metadata={"help": "head tilt of the view, degrees (positive: chin down)"})
    orbit: int = field(default=0, metadata={"help": "a turntable of N views (or a moving view over a driver)"})
    orbit_yaw: float = field(default=30.0, metadata={"help": "turntable yaw reach, degrees"})
    orbit_pitch: float = field(default=15.0, metadata={"help": "turntable pitch reach, degrees"})
    rgba: bool = field(default=False, metadata={"help": "PNGs with the avatar's opacity as alpha (no background)"})
    background: str = field(default="learned", metadata={"help": "learned (the video's) or none (black)",
                                                         "choices": ("learned", "none")})
    video: bool = field(default=False, metadata={"help": "write an mp4 (with the driver's audio) instead of PNGs"})
    fps: float = field(default=25.0, metadata={"help": "frame rate of the mp4 without a driver"})
    relative: bool = field(default=True, metadata={"help": "driver's expressions and head turns relative to its "
                                                           "first frame (off: the driver's rig as is)"})
    stride: int = field(default=1, metadata={"help": "use every N-th driver frame"})
    max_frames: int | None = field(default=None, metadata={"help": "at most N driver frames"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    compile: bool = field(default=False, metadata={"help": (
        "a Gaussian avatar on CUDA: compile its posing into one CUDA graph (3x the frames per second at 512² "
        "on an H200, after ~10 s of compiling: worth it for real-time use or thousands of frames)")})

    def validate(self) -> None:
        if self.size is not None and not 16 <= self.size <= 4096:
            raise ValueError(f"size must be in 16..4096, got {self.size}")
        if self.orbit < 0 or self.stride < 1 or not self.fps > 0:
            raise ValueError("orbit >= 0, stride >= 1 and fps > 0")
        if self.background not in ("learned", "none"):
            raise ValueError(f"background must be learned or none, got {self.background!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be positive")
        for k in ("yaw", "pitch", "orbit_yaw", "orbit_pitch"):
            if not math.isfinite(getattr(self, k)):
                raise ValueError(f"{k} must be a finite number")


@dataclass
class AvatarJobSummary:
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_frames: int = 0

    @property
    def exit_code(self) -> int:
        return 0 if self.written and not self.failed else 1

    def text(self) -> str:
        lines = [f"{len(self.written)} file(s) written -> {self.out_dir}"]
        if self.skipped_frames:
            lines.append(f"  {self.skipped_frames} driver frame(s) without a face skipped")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  error: {m}" for m in self.failed[:20]]
        return "\n".join(lines)


def orbit_views(n: int, yaw: float, pitch: float) -> list[tuple[float, float]]:
    """n (yaw, pitch) degrees on a figure of eight through the frontal view: yaw = Y sin(th),
    pitch = P sin(2 th), th = 2 pi k / n (rounded to 1e-6 degrees, so exact zeros read as 0)."""
    return [(round(yaw * math.sin(2 * math.pi * k / n), 6) + 0.0, round(pitch * math.sin(4 * math.pi * k / n), 6) + 0.0)
            for k in range(n)]


def drive(reference, driver, relative: bool = True):
    """Rig parameters (T) for the avatar from a driver's fitted params (T): relative (another
    person): the reference's rig with the driver's expression change, head-rotation change and
    translation change since its first frame and its gaze; absolute (the same person): the
    driver's rig with the avatar's identity."""
    from portraitrig.face.params import axis_angle_to_matrix, matrix_to_axis_angle

    T = len(driver)
    ref = reference.to(driver.device).repeat(T) if len(reference) == 1 else reference
    if not relative:
        return driver.replace(identity=ref.identity)
    d0 = driver[0:1]
    R0, Rt, Rr = (axis_angle_to_matrix(x.rotation) for x in (d0, driver, ref))
    rot = matrix_to_axis_angle(Rr @ (R0.transpose(1, 2) @ Rt))
    return ref.replace(expression=ref.expression + driver.expression - d0.expression, gaze=driver.gaze,
                       rotation=rot, translation=ref.translation + driver.translation - d0.translation,
                       sources=list(driver.sources))


AVATAR_METHODS = ("avatar", "splat")


def load_avatar(model_dir, device="cpu", compile: bool = False):
    """The renderer of an avatar model folder: a radiance field (``train avatar``) or Gaussians
    (``train splat``; ``compile``: its posing compiled, see
    :class:`~portraitrig.methods.splat.renderer.SplatRenderer`); another method's folder is
    refused by name."""
    from portraitrig.methods import load_renderer
    from portraitrig.neural.modelio import read_model_config

    method, _, _ = read_model_config(model_dir)
    if method not in AVATAR_METHODS:
        raise InputError(model_dir, f"a {method!r} model folder, not an avatar (train one with "
                                    f"`portraitrig train avatar` or `train splat`)")
    return load_renderer(model_dir, device=device, **({"compile": True} if compile and method == "splat" else {}))


def run_avatar(model_dir, out_dir, config: AvatarJobConfig | None = None, driver=None, spec=None,
               say=print) -> AvatarJobSummary:
    """Render an avatar model folder into ``out_dir`` (see the module docstring); ``spec`` an
    EditSpec (or its text)."""
    from portraitrig.io.atomic import write_image, write_json
    from portraitrig.neural.contract import resize_images, to_uint8

    cfg = config or AvatarJobConfig()
    cfg.validate()
    out = Path(out_dir)
    summary = AvatarJobSummary(out)
    r = load_avatar(model_dir, cfg.device, cfg.compile)
    if cfg.compile and not getattr(r, "compiled", False):
        summary.notes.append("--compile speeds up Gaussian avatars (train splat) only: rendered as it is")
    if isinstance(spec, str):
        from portraitrig.editspec import parse

        spec = parse(spec)
    if spec is not None and (spec.light is not None or spec.appearance):
        summary.notes.append("the avatar keeps the video's light and appearance: light/appearance edits ignored")
        spec = type(spec)(**{**vars(spec), "light": None, "strength": 1.0, "absolute": False, "appearance": None})
    if spec is not None and (spec.yaw or spec.pitch):  # head turns are views: clamped and noted like --yaw/--pitch
        cfg = dataclasses.replace(cfg, yaw=cfg.yaw + spec.yaw, pitch=cfg.pitch + spec.pitch)
        spec = type(spec)(**{**vars(spec), "yaw": 0.0, "pitch": 0.0})
    references = None
    fps = cfg.fps
    audio = None
    if driver is not None:
        params, crops, fps, audio, skipped = _fit_driver(driver, r.size, cfg)
        summary.skipped_frames = skipped
        if skipped and audio is not None and video_wanted(cfg):
            summary.notes.append(f"{skipped} driver frame(s) without a face skipped: the video runs ahead of the audio")
        params = drive(r.reference, params, cfg.relative)
        references = crops if not cfg.relative else None
    else:
        params = r.reference.to("cpu")
    edit = spec.params_fn(r.face_model.to("cpu")) if spec is not None else None
    if edit is not None:
        params = edit(params.to("cpu", torch.float32))
    T = len(params)
    if cfg.orbit > 0:
        views = orbit_views(cfg.orbit, cfg.orbit_yaw, cfg.orbit_pitch)
        jobs = [(t, views[t % len(views)]) for t in range(T)] if driver is not None else \
            [(0, v) for v in views]
    else:
        jobs = [(t, (cfg.yaw, cfg.pitch)) for t in range(T)]
    size = cfg.size or r.size
    video = video_wanted(cfg)
    if cfg.video and cfg.rgba:
        summary.notes.append("RGBA output is written as PNGs (an mp4 has no alpha)")
    out.mkdir(parents=True, exist_ok=True)
    items = []
    from portraitrig.io.media import VideoWriter

    with (VideoWriter(out / "avatar.mp4", fps, audio=audio) if video else contextlib.nullcontext()) as writer:
        for k, (t, (yaw, pitch)) in enumerate(jobs):
            yaw, pitch, notes = r.clamp_view(yaw, pitch)
            p, _ = r.view_params(params[t:t + 1].to(r.device), yaw, pitch)
            summary.notes += [n for n in notes if n not in summary.notes]
            img = r.render(p, background="none" if cfg.rgba else cfg.background, rgba=cfg.rgba)
            img = to_uint8(resize_images(img.float(), size))[0]
            if writer is not None:
                writer.write(img)
                continue
            name = f"{k:06d}"
            gen = write_image(out / "frames" / f"{name}.png", img)
            prm = p.to("cpu").save(_mkdir(out / "params") / f"{name}.safetensors")
            item = {"id": name, "generated": str(gen.relative_to(out)), "requested_params": str(prm.relative_to(out)),
                    "view": [yaw, pitch]}
            if references is not None:
                ref = write_image(out / "reference" / f"{name}.png", _resize_np(references[t], size))
                item["reference"] = str(ref.relative_to(out))
            items.append(item)
            summary.written.append(gen)
    if video:
        summary.written.append(out / "avatar.mp4")
        items.append({"id": "avatar", "generated": "avatar.mp4"})
    write_json(out / "manifest.json", {"items": items, "method": "avatar", "model": str(model_dir),
                                       "notes": summary.notes})
    if say:
        say(summary.text())
    return summary


def _fit_driver(driver, size: int, cfg: AvatarJobConfig):
    from portraitrig.face.params import RigParams
    from portraitrig.io.media import read_audio
    from portraitrig.io.video import video_info
    from portraitrig.pipeline import Rigger

    path = Path(driver)
    if not path.is_file():
        raise InputError(path, "no such driver video")
    with Rigger(crop_size=size, photometric=False) as rigger:
        fits = rigger.fit_video(path, stride=cfg.stride, max_frames=cfg.max_frames)
        skipped = len(rigger.last_skipped)
    info = video_info(path)
    fps = (info.fps_exact or info.fps or cfg.fps) / cfg.stride
    audio = read_audio(path) if info.has_audio else None
    return RigParams.cat([f.params for f in fits]), [f.crop_image for f in fits], fps, audio, skipped


def video_wanted(cfg: AvatarJobConfig) -> bool:
    return cfg.video and not cfg.rgba


def _mkdir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def _resize_np(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


__all__ = ["AvatarJobConfig", "AvatarJobSummary", "run_avatar", "orbit_views", "drive"]
