"""``portraitrig reenact MODEL DRIVER -o OUT``: the target of a video-renderer model performs a
driver's expressions, head motion, gaze and blinks, under a requested light (also over time).

Steps: the driver (a video, a folder of photos, one photo, or a RigParams sequence file) is
fitted (frames without a face hold the last good parameters and are counted), moved into one
fixed crop (so its head motion is kept), resampled to the target's frame rate, and retargeted
onto the target's neutral frame (:func:`portraitrig.retarget.retarget`). ``self_drive``: the
target's own parameters drive it (relighting alone). Each output frame is rendered in the
target's fixed crop, colour matched to the target's frame on the crop's border and pasted back
with a soft mask (one crop for all frames: no jitter): by default only the person (where the
model's matte says the driven person is; for a model without one, where the renderer may draw
them) and where the target's own frame may show them, so the still background stays the target's
real frame (``paste="crop"``: the whole crop). When the driver is longer than the
target video, the target's frames are looped (``background="loop"``) or its last frame held.

Writes OUT/result.mp4 (H.264, audio of the driver / target / none), OUT/compare.mp4 (driver |
target | result; a parameter-file driver shows as its shaded rig), OUT/params.safetensors (the rendered frames' RigParams, lights included),
OUT/driver_params.safetensors and OUT/manifest.json (results layout of ``portraitrig eval``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams


def _h(text: str, **kw) -> dict:
    return {"help": text, **kw}


@dataclass
class ReenactConfig:
    light: str | None = field(default=None, metadata=_h(
        "light: a preset name, AZ,EL degrees, an environment map (.hdr/.exr/.pic, or env:IMAGE for an LDR one), "
        "a photo or parameter file to copy the light from, or a video (or folder of photos) whose light, frame by "
        "frame, the result follows; default: the target's"))
    light_strength: float = field(default=1.0, metadata=_h("blend from the target's light (0) to the requested (1)"))
    light_orbit: float | None = field(default=None, metadata=_h(
        "rotate the light (or environment) once around the person every SECONDS", metavar="SECONDS"))
    env_rotate: float | None = field(default=None, metadata=_h(
        "turn the light (or environment) around the person at DEG_PER_S degrees per second (negative: the "
        "other way)", metavar="DEG_PER_S"))
    absolute_light: bool = field(default=False, metadata=_h(
        "use the light's own brightness (default: matched to the target video's exposure)"))
    motion: str = field(default="relative", metadata=_h(
        "relative: the driver's changes from its neutral frame; absolute: its values",
        choices=("relative", "absolute")))
    head_pose: bool = field(default=True, metadata=_h("transfer head motion (--no-head-pose keeps the target's)"))
    keep_target_gaze: bool = field(default=False, metadata=_h("keep the target's gaze instead of the driver's"))
    self_drive: bool = field(default=False, metadata=_h("the target drives itself (relighting alone; no DRIVER)"))
    audio: str = field(default="driver", metadata=_h("audio track of the result", choices=("driver", "target", "none")))
    background: str = field(default="loop", metadata=_h(
        "driver longer than the target video: loop its frames or hold the last", choices=("loop", "hold")))
    background_light: str = field(default="keep", metadata=_h(
        "under a new light, the background keeps the target's light (keep), or takes the new light's brightness "
        "and colour (match: lit like a wall behind the person, facing the camera; so is what of the person lies "
        "outside the rendered crop)", choices=("keep", "match")))
    max_frames: int | None = field(default=None, metadata=_h("use at most this many driver frames"))
    workers: int = field(default=1, metadata=_h("processes fitting a driver video (in chunks, one torch thread each)"))
    feather: float = field(default=0.08, metadata=_h("paste-back edge softness, share of the crop side"))
    paste: str = field(default="person", metadata=_h(
        "what of the rendered crop is pasted back: the person (in this frame and where the target's own frame may "
        "show them, with a soft margin; the rest stays the target's real frame, so its still background "
        "does not flicker) or the whole crop", choices=("person", "crop")))
    matte: bool = field(default=True, metadata=_h(
        "with a model that renders the person's matte, paste where it says the driven person is (and where the "
        "target's own frame may show them), with a margin of MARGIN (off, or without a matte: where the renderer "
        "may draw the person, with a margin of FEATHER / 2)"))
    margin: float = field(default=0.015, metadata=_h(
        "soft margin around the pasted person when the model renders a matte, share of the crop side"))
    target_video: str | None = field(default=None, metadata=_h("the target video, if it moved since training"))
    device: str | None = field(default=None, metadata=_h("rendering device (default: cuda when available)"))
    crf: int = field(default=18, metadata=_h("H.264 quality (0 best .. 51 worst)"))
    fast: bool = field(default=True, metadata=_h(
        "on a GPU, the renderers' fast paths: the video renderer replays the per-frame conditioning and network as "
        "CUDA graphs; DiffusionRig (--renderer diffusion) runs its compiled bf16 loop, after ~2 minutes of "
        "compiling, which a clip of a few hundred frames does not win back (off: the plain paths)"))
    renderer: str = field(default="video", metadata=_h(
        "video: the model's video renderer (real time); diffusion: DiffusionRig per frame, the target's frame "
        "inverted and decoded with the new rig (the baseline; seconds per frame)", choices=("video", "diffusion")))
    diffusion_model: str | None = field(default=None, metadata=_h(
        "the target's DiffusionRig model folder for --renderer diffusion, trained on the video model's cache "
        "(`portraitrig train diffusion RUN/data/TARGET.safetensors --preset stage2-256 --init PRIOR`)", metavar="DIR"))
    diffusion_steps: int = field(default=20, metadata=_h("DDIM steps of inversion and decoding (--renderer diffusion)"))

    def validate(self) -> None:
        if self.motion not in ("relative", "absolute"):
            raise ValueError(f"motion must be relative or absolute, got {self.motion!r}")
        if self.audio not in ("driver", "target", "none") or self.background not in ("loop", "hold"):
            raise ValueError("audio must be driver/target/none and background loop/hold")
        if self.background_light not in ("keep", "match"):
            raise ValueError(f"background_light must be keep or match, got {self.background_light!r}")
        if self.light_orbit is not None and not self.light_orbit > 0:
            raise ValueError(f"light_orbit must be a positive number of seconds, got {self.light_orbit}")
        if self.env_rotate is not None and not (math.isfinite(self.env_rotate) and abs(self.env_rotate) <= 36000):
            raise ValueError(f"env_rotate must be a number of degrees per second within +-36000, got {self.env_rotate}")
        if self.env_rotate is not None and self.light_orbit is not None:
            raise ValueError("give light_orbit (seconds per turn) or env_rotate (degrees per second), not both")
        if not 0 <= self.feather < 0.5 or not 0 <= self.margin < 0.25 or not 0 <= self.crf <= 51:
            raise ValueError("feather must be in [0, 0.5), margin in [0, 0.25) and crf in 0..51")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        if not 1 <= self.workers <= 256:
            raise ValueError(f"workers must be in 1..256, got {self.workers}")
        if self.paste not in ("person", "crop"):
            raise ValueError(f"paste must be person or crop, got {self.paste!r}")
        if self.renderer not in ("video", "diffusion"):
            raise ValueError(f"renderer must be video or diffusion, got {self.renderer!r}")
        if self.renderer == "diffusion" and not self.diffusion_model:
            raise ValueError("--renderer diffusion needs --diffusion-model DIR (the target's DiffusionRig model)")
        if not 1 <= self.diffusion_steps <= 1000:
            raise ValueError(f"diffusion_steps must be in 1..1000, got {self.diffusion_steps}")


@dataclass
class ReenactSummary:
    frames: int = 0
    driver_frames: int = 0
    held_frames: int = 0                     # driver frames without a face (last parameters held)
    background: str = ""                     # how the target's frames were used
    audio: str = "none"
    files: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.frames > 0 else 1

    def text(self) -> str:
        lines = [f"reenact: {self.frames} frames written ({self.driver_frames} driver frames, "
                 f"{self.held_frames} without a face held), background: {self.background}, audio: {self.audio}"]
        lines += [f"  {n}" for n in self.notes]
        lines += [f"  {k}: {v}" for k, v in self.files.items()]
        return "\n".join(lines)


# ---------------------------------------------------------------------- driver
@dataclass
class Driver:
    params: RigParams            # batch T (fixed-crop NDC of the driver's own footage)
    fps: float
    frames: list | None          # per driver frame, an (H, W, 3) uint8 thumbnail (None: none)
    held: int
    path: Path | None
    has_audio: bool = False


def _thumb(image: np.ndarray, height: int = 256) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def _fixed(fits) -> RigParams:
    """Fits of one person's footage moved into one crop (head motion kept)."""
    from portraitrig.methods.video.data import fixed_crop, params_to_crop

    crop = fixed_crop([f.crop for f in fits], 256, 1.0)
    return RigParams.cat([params_to_crop(f.params.to("cpu", torch.float32), f.crop, crop) for f in fits])


def load_driver(driver: str | Path, fps: float, rigger, max_frames: int | None = None, say=print,
                workers: int = 1, what: str = "driver") -> Driver:
    """Fit the driver: a video, a folder of photos, one photo, or a RigParams sequence file
    (``.safetensors`` / ``.npz``; played at the ``fps`` its metadata names, else at ``fps``).
    Photos play at ``fps``, one per frame. ``workers`` > 1: a video is fitted in that many
    processes (:func:`portraitrig.pipeline.fit_video_parallel`). ``what`` names it in errors."""
    from portraitrig.io.images import IMAGE_EXTENSIONS, is_video, read_image
    from portraitrig.retarget import hold_missing

    p = Path(driver)
    if not p.exists():
        raise InputError(p, f"no such {what} file or folder")
    if p.is_file() and p.suffix in (".safetensors", ".npz"):
        params, _, meta = RigParams.load(p, with_extras=True)
        rate = meta.get("fps") if isinstance(meta, dict) else None
        rate = float(rate) if isinstance(rate, (int, float)) and rate > 0 else fps
        return Driver(params[:max_frames] if max_frames else params, rate, None, 0, p)
    if p.is_file() and is_video(p):
        from portraitrig.io.video import iter_video_frames, video_info

        info = video_info(p)
        if workers > 1:
            from portraitrig.pipeline import fit_video_parallel

            fits, _ = fit_video_parallel(p, workers, rigger, max_frames=max_frames)
        else:
            fits = rigger.fit_video(p, max_frames=max_frames)  # InputError when no frame has a face
        by_frame = {int(f.source.rsplit("#frame=", 1)[1]): k for k, f in enumerate(fits)}
        thumbs = [_thumb(fr.image) for fr in iter_video_frames(p, max_frames=max_frames)]
        if not thumbs:
            raise InputError(p, "no frame could be decoded")
        found = torch.tensor([i in by_frame for i in range(len(thumbs))])
        params, held = hold_missing(_fixed([fits[by_frame[i]] for i in sorted(by_frame)]), found)
        return Driver(params, info.fps or fps, thumbs, held, p, info.has_audio)
    files = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS) if p.is_dir() else [p]
    if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(p, f"{what} is neither a video, a photo, a folder of photos nor a parameter file")
    if max_frames:
        files = files[:max_frames]
    if not files:
        raise InputError(p, f"no photos in the {what} folder")
    fits, found, thumbs = [], [], []
    for f in files:
        img = read_image(f)
        thumbs.append(_thumb(img))
        try:
            fits.append(rigger.fit_image(img, str(f)))
            found.append(True)
        except InputError as err:
            found.append(False)
            if say:
                say(f"reenact: {err} (the previous photo's parameters are held)")
    if not fits:
        raise InputError(p, f"no face found in any {what} photo")
    params, held = hold_missing(_fixed(fits), torch.tensor(found))
    return Driver(params, fps, thumbs, held, p)


# ---------------------------------------------------------------------- target frames
def target_frames(video: str | Path, frame_index: list[int], count: int, mode: str) -> Iterator[np.ndarray]:
    """``count`` background frames: the target's fitted frames (``frame_index``) in order,
    looped (``mode="loop"``) or with the last one held (``"hold"``) when more are needed."""
    from portraitrig.io.video import iter_video

    wanted = set(frame_index)
    made, last = 0, None
    while made < count:
        got = 0
        for fr in iter_video(video, want=lambda i: i in wanted):
            if fr.index not in wanted:
                continue
            last = fr.image
            yield last
            made += 1
            got += 1
            if made >= count:
                return
        if got == 0:
            raise InputError(video, "none of the target's frames could be read")
        if mode == "hold":
            while made < count:
                yield last
                made += 1


# ---------------------------------------------------------------------- lights
def light_path(base: torch.Tensor, config: ReenactConfig, fps: float, load_light=None,
               notes: list | None = None) -> torch.Tensor:
    """(T, 9, 3) lights of the output frames: ``base`` (T, 9, 3, the target's) or the requested
    light (exposure matched to it unless ``absolute_light``), blended by ``light_strength`` and
    turned about the vertical axis (once every ``light_orbit`` seconds, or ``env_rotate``
    degrees per second). A light copied from a photo, parameter file or video comes from
    ``load_light(path)`` -> (RigParams, fps): one frame is held; a sequence is played at its fps
    against the output's (its last light held past its end, said in ``notes``)."""
    from portraitrig.editspec import light_source
    from portraitrig.edits import resolve_light
    from portraitrig.io.media import resample_indices
    from portraitrig.light import sh

    T = base.shape[0]
    if config.light is None and config.light_orbit is None and config.env_rotate is None:
        return base
    sequence = []

    def load(path):
        if load_light is None:
            raise InputError(path, "copying a light needs a fitter, and none was given")
        params, rate = load_light(path)
        sequence.append((path, len(params), rate))
        return params.light, rate

    src = light_source(config.light if config.light is not None else "front", lambda p: load(p)[0])
    if sequence and sequence[0][1] > 1:   # a video (or folder, or parameter sequence): follow it in time
        path, n, rate = sequence[0]
        idx = resample_indices(n, rate, fps)
        held = max(0, T - len(idx))
        idx = (idx + [idx[-1]] * held)[:T]
        src = src[torch.as_tensor(idx)]
        if notes is not None:
            notes.append(f"light from {Path(path).name}: {n} frames at {rate:g} fps"
                         + (f"; its last light held for the final {held} frame(s)" if held else ""))
    L = resolve_light(src, T, base.device, base.dtype)
    rate_deg = 360.0 / config.light_orbit if config.light_orbit is not None else config.env_rotate
    if rate_deg:
        ang = torch.arange(T, dtype=torch.float64) / fps * math.radians(rate_deg)
        c, s = ang.cos(), ang.sin()
        z, o = torch.zeros_like(c), torch.ones_like(c)
        R = torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], 1)
        L = sh.rotate_sh(L, R.to(L.device))
    if not config.absolute_light:
        L = sh.match_exposure(L, base)
    return base + config.light_strength * (L - base)


def background_gain(new: torch.Tensor, old: torch.Tensor, limit: float = 8.0) -> np.ndarray:
    """(T, 3) per-channel gains that relight the background from the ``old`` lights to the
    ``new`` ones (T, 9, 3 each): the ratio of their shading of a wall facing the camera (normal
    towards it), within 1/``limit``..``limit``."""
    from portraitrig.light import sh

    n = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(new.shape[0], 1, 3)
    a = sh.shade(n, new.double())[:, 0]
    b = sh.shade(n, old.double())[:, 0]
    return (a.clamp(min=1e-4) / b.clamp(min=1e-4)).clamp(1 / limit, limit).numpy().astype(np.float32)


def relight_background(frame: np.ndarray, person: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 with what is not ``person`` (H, W) in [0, 1] scaled by ``gain`` (3,)."""
    f = frame.astype(np.float32)
    m = person.astype(np.float32)[..., None]
    return np.clip(np.rint(f * (m + (1 - m) * gain)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------- paste-back
def border_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) float32: 1 inside, falling smoothly to 0 at the crop's border over
    ``feather * size`` pixels."""
    c = np.arange(size, dtype=np.float32) + 0.5
    d = np.minimum(c, size - c)
    t = np.clip(d / max(feather * size, 1e-6), 0, 1)
    ramp = t * t * (3 - 2 * t)
    return np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)


def colour_ring(border: np.ndarray) -> np.ndarray:
    """(S, S) float32 weights of the colour match (:func:`colour_match`): the crop's band where
    the ``border`` mask (:func:`border_mask`) fades, which shows the target's background."""
    return ((border > 0.02) & (border < 0.6)).astype(np.float32)


def person_pastes(drawn: torch.Tensor, own: torch.Tensor | None, border: np.ndarray, ring: np.ndarray,
                  reach: float, matte: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """``--paste person``'s paste-back masks (:func:`paste_masks`) and colour-match rings
    (:func:`still_rings`) of B frames: where the driven person is drawn (``drawn`` (B, 1, S, S): the
    model's matte, ``matte`` True, or where the renderer may draw them), united with where the
    target's own frame may show them (``own``, same shape; None: ``drawn`` alone)."""
    region = drawn if own is None else torch.maximum((drawn > 0.5).float() if matte else drawn, own)
    return paste_masks(region, border, reach), still_rings(ring, region)


def paste_masks(person: torch.Tensor, border: np.ndarray, reach: float) -> np.ndarray:
    """(B, S, S) float32 paste-back masks: 1 where the renderer may draw the person (``person``
    (B, 1, S, S) in [0, 1], above 0.01), falling smoothly to 0 over the ``2 * reach * S`` pixels
    around it; times the crop's ``border`` mask (S, S). Outside, the result keeps the target's own
    frame: its real, still background instead of the renderer's copy of it."""
    import torch.nn.functional as F

    S = person.shape[-1]
    r = max(1, round(reach * S))
    grown = F.max_pool2d((person.float() > 0.01).float(), 2 * r + 1, stride=1, padding=r)
    t = F.avg_pool2d(grown, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    soft = (t * t * (3 - 2 * t))[:, 0].cpu().numpy()
    return (soft * border[None]).astype(np.float32)


def colour_match(rendered: np.ndarray, actual: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """``rendered`` (S, S, 3) uint8 shifted per channel so its mean on ``ring`` (S, S) weights
    equals ``actual``'s there (the crop's border, where both show the target's background)."""
    w = ring[..., None]
    diff = ((actual.astype(np.float32) - rendered.astype(np.float32)) * w).sum((0, 1)) / max(float(w.sum()), 1e-6)
    return np.clip(rendered.astype(np.float32) + diff, 0, 255).round().astype(np.uint8)


def still_rings(ring: np.ndarray, person: torch.Tensor, least: float = 0.25) -> list[np.ndarray]:
    """Per frame, the colour match's ``ring`` (S, S) weights less where ``person`` (B, 1, S, S) in
    [0, 1] may show the person (in the render or in the target's frame): where the two differ there,
    it is the person's place or pose, not the colour, so only the still background is compared.
    Where less than ``least`` of the ring's weight would remain, the whole ring."""
    keep = ring[None] * (1 - person[:, 0].float().clamp(0, 1).cpu().numpy())
    total = float(ring.sum())
    return [k.astype(np.float32) if float(k.sum()) >= least * total else ring for k in keep]


def paste_frame(background: np.ndarray, rendered: np.ndarray, crop, mask: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """The rendered crop, colour matched, pasted into the target's frame with ``mask``."""
    from portraitrig.capture.align import paste_back
    from portraitrig.methods.video.data import crop_frame

    matched = colour_match(rendered, crop_frame(background, crop), ring)
    return paste_back(background, matched, crop, mask=mask, feather=0.0)


# ---------------------------------------------------------------------- the job
def _load_renderer(model_dir: str | Path, device, fast: bool = True):
    from portraitrig.methods.video.model import METHOD
    from portraitrig.methods.video.renderer import VideoRenderer
    from portraitrig.neural.modelio import read_model_config

    method, _, _ = read_model_config(model_dir)
    if method != METHOD:
        raise InputError(model_dir, f"a {method!r} model; reenact needs a video-renderer model "
                                    "(`portraitrig train video TARGET.mp4`)")
    r = VideoRenderer.from_pretrained(model_dir, device=device, fast=None if fast else False)
    if r.target is None:
        raise InputError(model_dir, "model folder has no target.safetensors (the target video's description)")
    return r


def _load_diffusion(model_dir: str | Path, device, fast: bool = True):
    from portraitrig.methods import load_renderer
    from portraitrig.neural.modelio import read_model_config

    method, _, _ = read_model_config(model_dir)
    if method != "diffusion":
        raise InputError(model_dir, f"a {method!r} model; --diffusion-model needs a DiffusionRig model "
                                    "(`portraitrig train diffusion`)")
    return load_renderer(model_dir, device=device, fast=None if fast else False)


class DiffusionFrames:
    """Renders output frames with DiffusionRig: each output frame's target frame (its crop and
    fitted parameters) is DDIM-inverted under its own buffers and decoded under the frame's new
    parameters (DiffusionRig's edit, per frame)."""

    def __init__(self, renderer, target, size: int, steps: int):
        self.r, self.tgt, self.size, self.steps = renderer, target, size, steps

    def __call__(self, params: RigParams, backgrounds: list[np.ndarray], target_index: list[int]) -> torch.Tensor:
        from portraitrig.methods.video.data import crop_frame
        from portraitrig.neural.contract import Edit, Subject, resize_images

        subjects = [Subject(f"target frame {t}", crop_frame(bg, self.tgt.crop), self.tgt.params[t:t + 1].to("cpu"))
                    for bg, t in zip(backgrounds, target_index)]
        with torch.no_grad():
            out = self.r.render_edits(subjects, params.to("cpu", torch.float32), [Edit("reenact")], steps=self.steps)
        return resize_images(out.float(), self.size)


def run_reenact(model_dir: str | Path, driver: str | Path | None, out_dir: str | Path,
                config: ReenactConfig | None = None, rigger=None, progress: bool = True, say=print) -> ReenactSummary:
    """Reenact the model's target with ``driver`` (see the module doc) into ``out_dir``."""
    from portraitrig.io.atomic import write_json
    from portraitrig.capture.align import warp_affine
    from portraitrig.io.media import VideoWriter, read_audio, resample_indices, side_by_side
    from portraitrig.render.buffers import render_buffers
    from portraitrig.retarget import neutral_frame, retarget
    from portraitrig.training.loop import default_device

    config = config or ReenactConfig()
    config.validate()
    dev = default_device(config.device)
    rend = _load_renderer(model_dir, dev, config.fast)
    tgt = rend.target
    video = Path(config.target_video or tgt.video)
    if not video.is_file():
        raise InputError(video, "target video not found (give its new place with --target-video)")
    fps = tgt.fps
    summary = ReenactSummary()
    N = len(tgt.params)
    # ------------------------------------------------ what drives
    if config.self_drive:
        drv = Driver(tgt.params, fps, None, 0, video)
        params = tgt.params.clone()
        idx = list(range(N if config.max_frames is None else min(N, config.max_frames)))
        params = params[idx]
    else:
        if driver is None:
            raise InputError(None, "give a DRIVER (video, photos or parameter file), or --self")
        if rigger is None:
            from portraitrig.pipeline import Rigger

            rigger = Rigger(crop_size=256)
        drv = load_driver(driver, fps, rigger, config.max_frames, say=say, workers=config.workers)
        idx = resample_indices(len(drv.params), drv.fps, fps)
        if len(drv.params) == 1:
            idx = [0] * N
            summary.notes.append("one-frame driver: its expression and pose are held over the target video")
        src = drv.params[torch.as_tensor(idx)]
        tref = tgt.params[neutral_frame(tgt.params[:tgt.n_train])]
        sref = drv.params[neutral_frame(drv.params)]
        params = retarget(src, tref, sref, mode=config.motion, head_pose=config.head_pose,
                          gaze=not config.keep_target_gaze, model=rend.face_model)
    T = len(params)
    summary.driver_frames, summary.held_frames = len(drv.params), drv.held
    if drv.held:
        summary.notes.append(f"{drv.held} driver frame(s) without a face: the last good parameters were held")
    summary.background = ("target frames in step" if T <= N else
                          f"driver longer than the target ({T} > {N} frames): target frames {config.background}ed"
                          if config.background == "loop" else
                          f"driver longer than the target ({T} > {N} frames): last target frame held")
    def load_light(path):  # a photo, folder, video or parameter file to copy the light from
        nonlocal rigger
        if rigger is None:
            from portraitrig.pipeline import Rigger

            rigger = Rigger(crop_size=256)
        from portraitrig.io.images import is_video

        need = None  # a video: only the frames the output's length needs are fitted
        if is_video(path) and Path(path).is_file():
            from portraitrig.io.video import video_info

            rate = video_info(path).fps
            need = math.ceil(T / fps * rate) + 1 if rate else None
        src = load_driver(path, fps, rigger, max_frames=need, say=say, workers=config.workers, what="light source")
        if src.held:
            summary.notes.append(f"light source {Path(path).name}: {src.held} frame(s) without a face held "
                                 "the last good light")
        return src.params, src.fps

    old_light = params.light.float()
    params = params.replace(light=light_path(old_light, config, fps, load_light,
                                             summary.notes).to(params.light.dtype))
    gains, crop_inv = None, tgt.crop.inverse
    if config.background_light == "match":
        gains = background_gain(params.light.float().cpu(), old_light.cpu())
        summary.notes.append("background relit with the new light (gain per frame, mean R,G,B "
                             + ",".join(f"{g:.2f}" for g in gains.mean(0)) + ")")
    # ------------------------------------------------ audio
    audio = None
    src_audio = {"driver": drv.path if drv.has_audio else None, "target": video, "none": None}[config.audio]
    if config.self_drive and config.audio == "driver":
        src_audio = video
    if src_audio is not None:
        audio = read_audio(src_audio)
        summary.audio = f"{config.audio} ({Path(src_audio).name})" if audio is not None else "none (no audio track)"
    elif config.audio == "driver":
        summary.audio = "none (the driver has no audio)"
    # ------------------------------------------------ render, paste, write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    S = rend.size
    mask = border_mask(S, config.feather)
    ring = colour_ring(mask)
    fidx = [int(i) for i in tgt.frame_index.tolist()]
    backgrounds = target_frames(video, fidx, T, config.background)
    chunk = 16
    diffusion = None
    if config.renderer == "diffusion":
        diffusion = DiffusionFrames(_load_diffusion(config.diffusion_model, dev, config.fast), tgt, S,
                                    config.diffusion_steps)
    stream = rend.stream()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=T, desc="reenact", unit="frame")
    with VideoWriter(out / "result.mp4", fps, audio=audio, crf=config.crf) as w, \
            VideoWriter(out / "compare.mp4", fps, crf=config.crf) as wc:
        for i in range(0, T, chunk):
            j = min(T, i + chunk)
            bgs = [next(backgrounds) for _ in range(j - i)]
            # output frame k shows target frame k (looped) or the last one (held)
            shown = [k % N if config.background == "loop" else min(k, N - 1) for k in range(i, j)]
            frames = stream(params[i:j]) if diffusion is None else diffusion(params[i:j], bgs, shown)
            crops = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            matte = stream.last_matte if diffusion is None and config.matte else None
            if gains is not None or config.paste == "person":  # the person: its matte, or where it may be drawn
                if matte is not None:
                    drawn = matte.clamp(0, 1)
                elif diffusion is None:
                    drawn = rend.cond.drawn_mask(stream.last_faces, stream.last_heads)
                else:
                    drawn = rend.drawn_mask(params[i:j])
                if gains is not None:
                    person = drawn[:, 0].cpu().numpy() * mask
            pastes, rings = [mask] * (j - i), [ring] * (j - i)
            if config.paste == "person":  # and where the target's own frame may show them (self-driven
                # without a matte, where the renderer may draw them is the same)
                own = rend.drawn_mask(tgt.params[shown]) if matte is not None or not config.self_drive else None
                pastes, rings = person_pastes(drawn, own, mask, ring,
                                              config.margin if matte is not None else config.feather / 2,
                                              matte is not None)
            if drv.frames is None and not config.self_drive:  # a parameter file: show the driver's rig
                rig = render_buffers(drv.params[torch.as_tensor(idx[i:j])].to(dev, torch.float32), rend.face_model,
                                     size=256, names=("shaded",))["shaded"]
                rig = (rig.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for k in range(j - i):
                bg = bgs[k]
                res = paste_frame(bg, crops[k], tgt.crop, pastes[k], rings[k])
                if gains is not None:
                    full = np.clip(warp_affine(np.ascontiguousarray(person[k]), crop_inv, bg.shape[1::-1]), 0, 1)
                    res = relight_background(res, full, gains[i + k])
                w.write(res)
                left = drv.frames[idx[i + k]] if drv.frames is not None else bg if config.self_drive else rig[k]
                wc.write(side_by_side(left, bg, res, height=256))
            summary.frames = j
            if bar is not None:
                bar.update(j - i)
    if bar is not None:
        bar.close()
    params.save(out / "params.safetensors", meta={"fps": float(fps)})
    drv.params.save(out / "driver_params.safetensors", meta={"fps": float(drv.fps)})
    item = {"id": "result", "generated": "result.mp4", "requested_params": "params.safetensors"}
    if (config.self_drive and config.light is None and config.light_orbit is None and config.env_rotate is None
            and fidx == list(range(T))):
        item["reference"] = str(video.resolve())
    write_json(out / "manifest.json", {"items": [item], "method": "video", "model": str(Path(model_dir).resolve()),
                                       "driver": None if drv.path is None else str(Path(drv.path).resolve()),
                                       "fps": float(fps), "frames": T, "held_frames": drv.held,
                                       "renderer": config.renderer,
                                       "background": summary.background, "audio": summary.audio})
    summary.files = {k: str(out / v) for k, v in (("result", "result.mp4"), ("compare", "compare.mp4"),
                                                  ("params", "params.safetensors"), ("manifest", "manifest.json"))}
    return summary


__all__ = ["ReenactConfig", "ReenactSummary", "run_reenact", "load_driver", "light_path", "background_gain",
           "relight_background", "border_mask", "colour_ring", "person_pastes", "paste_masks",
           "colour_match", "still_rings", "paste_frame", "target_frames"]
