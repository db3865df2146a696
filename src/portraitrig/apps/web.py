"""``portraitrig serve``: a local web app over the same Python API as the CLI (Gradio).

Four tabs, each a thin layer over a job the CLI runs (no model code here; edits go through the
one edit-spec parser, :func:`portraitrig.editspec.parse`):

- **Rig**: a photo (or the built-in portrait) is fitted (:class:`portraitrig.pipeline.Rigger`);
  light, expression-control, head-pose and gaze sliders re-render the rig's buffers live.
- **Edit**: the same controls applied by a DiffusionRig model (:func:`~portraitrig.apps.editjob.run_edit`).
- **Video**: a video renderer's target performs a driver video, or relights itself under an
  orbiting light (:func:`~portraitrig.apps.reenactjob.run_reenact`).
- **Avatar**: an avatar (``avatar`` or ``splat``) seen from any view with any expression, a
  turntable or a driver's performance (:func:`~portraitrig.apps.avatarjob.run_avatar`).

Every job writes into its own folder under ``out`` with the CLI's manifest. Limits a public demo
needs: upload size (``max_upload_mb``), image and video sides (``max_side``), video length
(``max_video_s``), allowed file types; uploads are decoded by portraitrig's readers (nothing is
unpickled or executed); Gradio's upload cache is cleaned hourly. Model folders are picked from
those found under ``runs`` (and ``model``), never typed in, or uploaded as a .zip of a model
folder (:func:`import_model_zip`: only a model folder's own files, size-checked, unpacked under
``out/models``). Long jobs run one at a time in
Gradio's queue. The server binds to 127.0.0.1 unless ``host`` says otherwise.

The functions below the config (``fit_photo``, ``preview``, ``edit_photo``, ``reenact``,
``avatar_view``, ...) are the app's logic without Gradio, tested directly; :func:`build_app`
wires them to the page.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from portraitrig.apps.avatarjob import AVATAR_METHODS
from portraitrig.errors import InputError

PHOTO_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_TYPES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
ENV_TYPES = (".hdr", ".exr", ".png", ".jpg", ".jpeg")
LIGHTS = ("photo", "direction", "left", "right", "top", "bottom", "front", "rim_left", "rim_right", "ambient",
          "environment map")


@dataclass
class WebConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (0.0.0.0: every interface)"})
    port: int = field(default=7860, metadata={"help": "port"})
    model: str | None = field(default=None, metadata={"help": "a DiffusionRig model folder for the Edit tab"})
    runs: str | None = field(default=None, metadata={"help": "folder searched for model folders (RUN/model) of "
                                                             "every method, offered in the tabs"})
    out: str = field(default="portraitrig-web", metadata={"help": "where every job's outputs are written"})
    max_upload_mb: int = field(default=50, metadata={"help": "largest upload, MB"})
    max_side: int = field(default=4096, metadata={"help": "largest image / video side, pixels"})
    max_video_s: float = field(default=60.0, metadata={"help": "longest driver video, seconds"})
    edit_steps: int = field(default=20, metadata={"help": "DDIM steps of an edit"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda when available)"})

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not (1 <= self.max_upload_mb <= 10_000 and 64 <= self.max_side <= 20_000 and self.max_video_s > 0
                and 1 <= self.edit_steps <= 1000):
            raise ValueError("max_upload_mb in 1..10000, max_side in 64..20000, max_video_s > 0, edit_steps 1..1000")


# ------------------------------------------------------------------ the edit spec from the controls
def colour_multipliers(colour: str | None) -> tuple[float, float, float] | None:
    """A colour picker's value ("#rrggbb" or "rgb(r, g, b)" / "rgba(...)") as light R,G,B
    multipliers with the largest at 1 (None for white, black or nothing)."""
    import re

    if not colour:
        return None
    c = colour.strip()
    if c.startswith("#") and len(c) in (4, 7):
        h = c[1:] if len(c) == 7 else "".join(ch * 2 for ch in c[1:])
        rgb = [int(h[i:i + 2], 16) for i in (0, 2, 4)]
    else:
        m = re.match(r"rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)", c)
        if m is None:
            raise ValueError(f"not a colour: {colour!r}")
        rgb = [float(v) for v in m.groups()]
    top = max(rgb)
    if top <= 0 or min(rgb) == top:
        return None
    return tuple(round(v / top, 3) for v in rgb)


def edit_spec(light: str = "photo", azimuth: float = 0.0, elevation: float = 0.0, strength: float = 1.0,
              env_map: str | None = None, controls: dict[str, float] | None = None, yaw: float = 0.0,
              pitch: float = 0.0, roll: float = 0.0, gaze_yaw: float = 0.0, gaze_pitch: float = 0.0,
              colour: str | None = None):
    """The :class:`~portraitrig.editspec.EditSpec` the page's controls mean (``colour``: the
    light's tint from a colour picker); controls left at 0 are no edit."""
    from portraitrig.editspec import EditSpec

    word = None
    if light == "direction":
        word = f"{azimuth:g},{elevation:g}"
    elif light == "environment map":
        word = f"env:{env_map}" if env_map else None
    elif light and light != "photo":
        word = light
    return EditSpec(light=word, strength=strength if word else 1.0,
                    colour=colour_multipliers(colour) if word else None,
                    controls={k: v for k, v in (controls or {}).items() if v}, yaw=yaw, pitch=pitch, roll=roll,
                    gaze=(gaze_yaw, gaze_pitch) if gaze_yaw or gaze_pitch else None)


def spec_text(*args, **kwargs) -> str:
    """The edit-spec words (:mod:`portraitrig.editspec`) the page's controls mean (the arguments
    of :func:`edit_spec`)."""
    return edit_spec(*args, **kwargs).text()


# ------------------------------------------------------------------ uploads
def check_upload(path: str | Path | None, kinds: tuple[str, ...], what: str, cfg: WebConfig,
                 too_large: str = "") -> Path:
    """An uploaded file's path after the checks a public page needs: present, an allowed type,
    not larger than ``max_upload_mb`` (``too_large``: what the message then adds). InputError
    naming the file otherwise."""
    if path is None:
        raise InputError(None, f"no {what} uploaded")
    p = Path(path)
    if not p.is_file():
        raise InputError(p.name, f"{what} upload is missing")
    if p.suffix.lower() not in kinds:
        raise InputError(p.name, f"not an allowed {what} type ({', '.join(kinds)})")
    if p.stat().st_size > cfg.max_upload_mb * 1e6:
        raise InputError(p.name, f"larger than the {cfg.max_upload_mb} MB upload limit{too_large}")
    return p


def load_photo(path: str | Path, cfg: WebConfig) -> np.ndarray:
    """Decode an uploaded photo (portraitrig's reader: any failure is an InputError naming the
    file), refusing sides beyond ``max_side`` before decoding."""
    from PIL import Image, UnidentifiedImageError

    from portraitrig.io.images import read_image

    p = check_upload(path, PHOTO_TYPES, "photo", cfg)
    try:
        with Image.open(p) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(p.name, "not an image (the file could not be read as a photo)") from None
    if max(w, h) > cfg.max_side:
        raise InputError(p.name, f"{w}x{h} pixels: larger than the {cfg.max_side}-pixel limit")
    return read_image(p)


def check_video(path: str | Path, cfg: WebConfig) -> Path:
    from portraitrig.io.video import video_info

    p = check_upload(path, VIDEO_TYPES, "video", cfg)
    info = video_info(p)
    if max(info.width, info.height) > cfg.max_side:
        raise InputError(p.name, f"{info.width}x{info.height} video: larger than the {cfg.max_side}-pixel limit")
    if info.duration_s and info.duration_s > cfg.max_video_s:
        raise InputError(p.name, f"{info.duration_s:.0f} s long: longer than the {cfg.max_video_s:g}-second limit")
    return p


# ------------------------------------------------------------------ jobs
_job_counter = itertools.count()


def job_dir(cfg: WebConfig, kind: str) -> Path:
    """A new output folder for one job: ``out/KIND-YYYYmmdd-HHMMSS-N``."""
    d = Path(cfg.out) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{next(_job_counter)}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def builtin_portrait(cfg: WebConfig) -> Path:
    """The built-in portrait (scikit-image's astronaut) as a PNG in the output folder."""
    from skimage import data

    from portraitrig.io.atomic import write_image

    p = Path(cfg.out) / "builtin_portrait.png"
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True)
        write_image(p, np.ascontiguousarray(data.astronaut()))
    return p


@dataclass
class Fit:
    """What the Rig and Edit tabs keep of a fitted photo."""

    photo: str
    params: object          # RigParams (one item)
    crop: np.ndarray        # aligned crop
    overlay: np.ndarray     # photo with the mesh
    size: int


_RIGGERS: dict[int, object] = {}
_RIGGER_LOCK = threading.Lock()


def fit_photo(path: str | Path | None, cfg: WebConfig, size: int = 256) -> Fit:
    """Fit an uploaded photo (None: the built-in portrait)."""
    from portraitrig.capture.align import paste_back
    from portraitrig.pipeline import Rigger
    from portraitrig.render.buffers import overlay_mesh

    from portraitrig.io.images import read_image

    if path is None:  # our own file: no upload limits
        path = builtin_portrait(cfg)
        image = read_image(path)
    else:
        image = load_photo(path, cfg)
    with _RIGGER_LOCK:
        if size not in _RIGGERS:  # one rigger per crop size, kept: MediaPipe's graphs load once
            _RIGGERS[size] = Rigger(crop_size=size)
        rigger = _RIGGERS[size]
        fit = rigger.fit_image(image, Path(path).name)
    over_crop = overlay_mesh(fit.crop_image, fit.params, rigger.model, size)
    over = paste_back(image, over_crop, fit.crop, feather=0.02)
    return Fit(str(path), fit.params, fit.crop_image, over, size)


def preview(fit: Fit, spec: str, names=("shaded", "normal", "albedo")) -> np.ndarray:
    """The rig's buffers re-rendered under the edit ``spec``: the buffers side by side (uint8)."""
    import torch

    from portraitrig.editspec import parse
    from portraitrig.face.model import load_default_model
    from portraitrig.render.buffers import buffers_to_images, render_buffers

    fm = load_default_model()
    fn = parse(spec).params_fn(fm) if spec else None
    params = fn(fit.params) if fn is not None else fit.params
    with torch.no_grad():
        bufs = render_buffers(params, fm, size=fit.size, names=tuple(names))
    imgs = buffers_to_images(bufs)
    return np.concatenate([imgs[n] if imgs[n].ndim == 3 else np.repeat(imgs[n][..., None], 3, -1) for n in names], 1)


def find_models(cfg: WebConfig, methods: tuple[str, ...]) -> list[str]:
    """Model folders of ``methods`` under ``runs`` (and ``model`` itself), sorted."""
    from portraitrig.neural.modelio import read_model_config

    found = set()
    candidates = [Path(cfg.model)] if cfg.model else []
    for root in (Path(cfg.runs) if cfg.runs else None, Path(cfg.out) / MODELS_DIR):
        if root is not None and root.is_dir():
            candidates += [p.parent for p in sorted(root.glob("**/config.json"))][:500]
    for d in candidates:
        try:
            method, _, _ = read_model_config(d)
        except InputError:
            continue
        if method in methods:
            found.add(str(d))
    return sorted(found)


MODELS_DIR = "models"                               # uploaded model folders, under out/
MODEL_FILES = ("config.json", "model.safetensors", "target.safetensors")
MAX_MODEL_BYTES = 4 << 30                            # uncompressed size of an uploaded model folder


def import_model_zip(path: str | Path | None, cfg: WebConfig, methods: tuple[str, ...], what: str) -> str:
    """An uploaded model folder (a .zip of RUN/model) unpacked under ``out/models/`` and checked:
    only a model folder's own files (config.json, model.safetensors, target.safetensors) at the
    top or in one folder, no links, at most ``MAX_MODEL_BYTES`` unpacked and at most 200x
    compression; the folder must be a model of ``methods``. Returns its path (offered from then
    on). The weights are safetensors and the config JSON: nothing is unpickled or run."""
    import hashlib
    import shutil
    import stat
    import zipfile

    from portraitrig.neural.modelio import read_model_config

    # trained models are often larger than the photo-sized default limit
    p = check_upload(path, (".zip",), "model folder (.zip)", cfg,
                     too_large=": start the server with a larger --max-upload-mb, or with --runs FOLDER to pick "
                               "model folders on its disk without uploading")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError):
        raise InputError(p.name, "not a zip file") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        tops = {Path(m.filename).parts[0] for m in members if len(Path(m.filename).parts) > 1}
        total = 0
        for m in members:
            parts = Path(m.filename).parts
            if (m.filename.startswith(("/", "\\")) or ".." in parts or len(parts) > 2
                    or (len(parts) == 2 and len(tops) != 1) or parts[-1] not in MODEL_FILES):
                raise InputError(p.name, f"{m.filename!r} is not a file of a model folder "
                                         f"({', '.join(MODEL_FILES)}, at the top or in one folder)")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise InputError(p.name, f"{m.filename!r} is a link")
            total += m.file_size
            if m.file_size > 200 * max(m.compress_size, 1) or total > MAX_MODEL_BYTES:
                raise InputError(p.name, "unpacks too large (a model folder is at most "
                                         f"{MAX_MODEL_BYTES >> 30} GB, compressed at most 200x)")
        with open(p, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
        dest = Path(cfg.out) / MODELS_DIR / digest
        if not dest.is_dir():
            tmp = dest.with_name(dest.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for m in members:
                with zf.open(m) as src, open(tmp / Path(m.filename).name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            tmp.rename(dest)
    try:
        method, _, _ = read_model_config(dest)
    except InputError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InputError(p.name, f"not a model folder ({exc})") from None
    if method not in methods:
        raise InputError(p.name, f"a {method!r} model, not a {what} model")
    return str(dest)


def _allowed_model(model_dir: str | None, cfg: WebConfig, methods: tuple[str, ...], what: str) -> str:
    """``model_dir`` if it is one the server offers (:func:`find_models`: ``model``, or a model
    folder of ``methods`` under ``runs`` or the uploaded ones), checked without scanning them all."""
    from portraitrig.neural.modelio import read_model_config

    if not model_dir:
        raise InputError(None, f"pick a {what} model (serve --runs DIR finds them)")
    d = Path(model_dir).resolve()
    roots = [Path(r).resolve() for r in (cfg.runs, Path(cfg.out) / MODELS_DIR) if r]
    offered = (cfg.model is not None and d == Path(cfg.model).resolve()) or any(d.is_relative_to(r) for r in roots)
    try:
        method = read_model_config(d)[0] if offered else None
    except InputError:
        method = None
    if method not in methods:
        raise InputError(model_dir, f"not a {what} model this server offers")
    return model_dir


_editors: dict[str, object] = {}
_edit_subjects: dict[str, object] = {}
_EDIT_LOCK = threading.Lock()   # one edit (or warm-up) at a time on the one loaded model
MAX_EDIT_SUBJECTS = 16


def _editor(model_dir: str, photo: str, job):
    """The DiffusionRig renderer of ``model_dir`` (one in memory at a time: loaded, and on a GPU
    compiled, once) and ``photo`` fitted for it (the last few photos kept). Call it holding
    ``_EDIT_LOCK``."""
    from portraitrig.apps.editjob import load_editor

    if model_dir not in _editors:
        _editors.clear()
        _edit_subjects.clear()
        _editors[model_dir] = load_editor(model_dir, job)
    renderer = _editors[model_dir]
    if photo not in _edit_subjects:
        while len(_edit_subjects) >= MAX_EDIT_SUBJECTS:
            _edit_subjects.pop(next(iter(_edit_subjects)))
        _edit_subjects[photo] = renderer.subject(photo)
    return renderer, _edit_subjects[photo]


def warm_editor(model_dir: str | None, cfg: WebConfig, wait: bool = False) -> threading.Thread | None:
    """Load ``model_dir`` and run one edit of the built-in portrait in a background thread, so
    that a visitor's first edit does not wait for the load and (on a GPU) the compilation of the
    fast path (about 2 minutes cold on an H200 for the 256 model). Edits wait for it. None when
    there is nothing to warm: the folder is not a DiffusionRig model this server offers, or it is
    the one loaded."""
    from portraitrig.apps.editjob import EditJobConfig

    try:
        model_dir = _allowed_model(model_dir, cfg, ("diffusion",), "DiffusionRig")
    except InputError:
        return None
    if model_dir in _editors:
        return None

    def run():
        from portraitrig.editspec import parse
        from portraitrig.neural.contract import Edit

        with _EDIT_LOCK:
            try:
                renderer, subject = _editor(model_dir, str(builtin_portrait(cfg)), EditJobConfig(device=cfg.device))
                fn = parse("smile=0.1").params_fn(renderer.face_model)
                renderer.edit([subject], [Edit("reconstruction"), Edit("edit", fn)], steps=cfg.edit_steps)
            except Exception as exc:  # noqa: BLE001 - a warm-up failure shows again, clearly, at the first edit
                print(f"portraitrig serve: warming up {model_dir} failed: {exc}")

    thread = threading.Thread(target=run, name="portraitrig-warm-editor", daemon=True)
    thread.start()
    if wait:
        thread.join()
    return thread


def edit_photo(fit: Fit, spec: str, model_dir: str | None, cfg: WebConfig,
               light_sweep: int = 0) -> tuple[Path, Path | None, list[Path], Path]:
    """The photo edited by a DiffusionRig model, as the job's files: (the photo, the edited
    photo pasted back (None without an edit), the light sweep's photos (``light_sweep``
    directions, left to right, with the other edits), the job folder)."""
    import json

    from portraitrig.apps.editjob import EditJobConfig, run_edit
    from portraitrig.editspec import parse

    model_dir = _allowed_model(model_dir, cfg, ("diffusion",), "DiffusionRig")
    if not spec and not light_sweep:
        raise InputError(None, "move a control or ask for a light sweep first: there is no edit to make")
    out = job_dir(cfg, "edit")
    job = EditJobConfig(steps=cfg.edit_steps, light_sweep=light_sweep, device=cfg.device)
    with _EDIT_LOCK:
        renderer, subject = _editor(model_dir, fit.photo, job)
        summary = run_edit(model_dir, [subject], out, parse(spec), job, renderer=renderer)
    if summary.failed:
        raise InputError(Path(fit.photo).name, summary.failed[0])

    def pasted(item):
        full = out / (item["generated"][:-len(".png")] + ".full.png")
        return full if full.is_file() else out / item["generated"]

    items = json.loads((out / "manifest.json").read_text())["items"]
    edited = [pasted(it) for it in items if it["edit"] == "edit"]
    sweep = [pasted(it) for it in items if it["edit"].startswith("light")]
    return Path(fit.photo), (edited[0] if edited else None), sweep, out


def reenact(model_dir: str | None, driver: str | None, cfg: WebConfig, light: str = "photo",
            azimuth: float = 0.0, elevation: float = 0.0, orbit_s: float = 0.0, max_frames: int | None = None,
            env_map: str | None = None, target_video: str | None = None,
            light_background: bool = False) -> tuple[Path, Path, str]:
    """A video renderer's target driven by ``driver`` (None: by itself, to relight it): paths of
    result.mp4 and compare.mp4, and the job's summary text. ``target_video``: the target's video
    when it is not where the model says (an uploaded model). ``light_background``: the background
    takes the new light too (``reenact --background-light match``)."""
    from portraitrig.apps.reenactjob import ReenactConfig, run_reenact

    model_dir = _allowed_model(model_dir, cfg, ("video",), "video")
    drv = None if driver is None else str(check_video(driver, cfg))
    light_spec = None
    if light == "direction":
        light_spec = f"{azimuth:g},{elevation:g}"
    elif light == "environment map" and env_map:
        light_spec = "env:" + str(check_upload(env_map, ENV_TYPES, "environment map", cfg))
    elif light not in ("photo", "environment map"):
        light_spec = light
    tv = None if target_video is None else str(check_video(target_video, cfg))
    rc = ReenactConfig(light=light_spec, light_orbit=orbit_s or None, self_drive=drv is None, device=cfg.device,
                       max_frames=max_frames, target_video=tv,
                       background_light="match" if light_background else "keep")
    out = job_dir(cfg, "video")
    summary = run_reenact(model_dir, drv, out, rc, progress=True, say=None)
    return out / "result.mp4", out / "compare.mp4", summary.text()


_avatars: dict[str, object] = {}


def _avatar(model_dir: str, cfg: WebConfig):
    from portraitrig.apps.avatarjob import load_avatar
    from portraitrig.training.loop import default_device

    if model_dir not in _avatars:
        _avatars.clear()  # one avatar in memory at a time
        _avatars[model_dir] = load_avatar(model_dir, default_device(cfg.device))
    return _avatars[model_dir]


def avatar_view(model_dir: str | None, cfg: WebConfig, yaw: float = 0.0, pitch: float = 0.0,
                controls: dict[str, float] | None = None, size: int | None = None) -> tuple[np.ndarray, list[str]]:
    """The avatar's reference rig with named ``controls``, seen from (yaw, pitch): (image, notes)."""
    import torch

    from portraitrig.neural.contract import to_uint8

    model_dir = _allowed_model(model_dir, cfg, AVATAR_METHODS, "avatar")
    r = _avatar(model_dir, cfg)
    fn = edit_spec(controls=controls).params_fn(r.face_model)
    params = fn(r.reference) if fn is not None else r.reference
    with torch.no_grad():
        imgs, notes = r.render_views(params, [(yaw, pitch)], size=size)
    return to_uint8(imgs[:1, :3])[0], notes


def avatar_video(model_dir: str | None, cfg: WebConfig, driver: str | None = None, orbit: int = 0,
                 controls: dict[str, float] | None = None) -> tuple[Path, str]:
    """A turntable (``orbit`` views) or a driver's performance as an mp4: (path, summary text)."""
    from portraitrig.apps.avatarjob import AvatarJobConfig, run_avatar
    from portraitrig.training.loop import default_device

    model_dir = _allowed_model(model_dir, cfg, AVATAR_METHODS, "avatar")
    drv = None if driver is None else str(check_video(driver, cfg))
    if drv is None and orbit < 2:
        raise InputError(None, "give a driver video or a turntable of at least 2 views")
    out = job_dir(cfg, "avatar")
    spec = spec_text(controls=controls) or None
    s = run_avatar(model_dir, out, AvatarJobConfig(orbit=orbit, video=True, device=str(default_device(cfg.device))),
                   driver=drv, spec=spec, say=None)
    if s.exit_code != 0 or not s.written:
        raise InputError(model_dir, "; ".join(s.failed) or "nothing was rendered")
    return s.written[0], s.text()


# ------------------------------------------------------------------ the page
def _message(exc: Exception) -> str:
    return f"**Error:** {exc}"


def build_app(cfg: WebConfig):
    """The Gradio Blocks app over the functions above."""
    import gradio as gr

    from portraitrig.face.controls import control_names
    from portraitrig.face.model import load_default_model

    names = control_names(load_default_model())
    # the upload limit is sized for photos and clips: a trained model may be larger (serve it with --runs)
    zip_label = f"or upload a model folder (.zip of RUN/model, at most {cfg.max_upload_mb} MB; larger: --runs)"
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts fetched
    with gr.Blocks(title="portraitrig", delete_cache=(900, 3600)) as app:
        gr.Markdown("# portraitrig\nRig a portrait, edit it, drive a video portrait, turn an avatar. "
                    "Every job also writes its outputs (with the CLI's manifest) to "
                    f"`{cfg.out}`.")
        fit_state = gr.State(None)
        with gr.Tab("Rig", id="rig"):
            with gr.Row():
                with gr.Column(scale=1):
                    photo = gr.File(label="photo", file_types=list(PHOTO_TYPES), type="filepath", height=120,
                                    elem_id="photo")
                    builtin = gr.Button("use the built-in portrait", elem_id="builtin")
                    status = gr.Markdown("Upload a photo or use the built-in portrait.", elem_id="rig-status")
                    with gr.Accordion("light", open=True):
                        light = gr.Dropdown(list(LIGHTS), value="photo", label="light", elem_id="light")
                        with gr.Row():
                            az = gr.Slider(-180, 180, 0, step=1, label="azimuth (deg)", elem_id="azimuth")
                            el = gr.Slider(-90, 90, 0, step=1, label="elevation (deg)", elem_id="elevation")
                        with gr.Row():
                            strength = gr.Slider(0, 1, 1, step=0.05, label="strength", elem_id="strength")
                            tint = gr.ColorPicker("#ffffff", label="colour", elem_id="light-colour")
                        env = gr.File(label="environment map (HDR / LDR)", file_types=list(ENV_TYPES),
                                      type="filepath", height=80)
                    with gr.Accordion("expression", open=True):
                        ctrl = [gr.Slider(-1, 1, 0, step=0.05, label=n, elem_id=f"ctrl-{n}") for n in names]
                    with gr.Accordion("head pose and gaze", open=True):
                        with gr.Row():
                            yaw = gr.Slider(-45, 45, 0, step=1, label="yaw (deg)", elem_id="yaw")
                            pitch = gr.Slider(-30, 30, 0, step=1, label="pitch (deg)", elem_id="pitch")
                            roll = gr.Slider(-30, 30, 0, step=1, label="roll (deg)", elem_id="roll")
                        with gr.Row():
                            gy = gr.Slider(-30, 30, 0, step=1, label="gaze yaw (deg)", elem_id="gaze-yaw")
                            gp = gr.Slider(-30, 30, 0, step=1, label="gaze pitch (deg)", elem_id="gaze-pitch")
                with gr.Column(scale=2):
                    with gr.Row():
                        overlay = gr.Image(label="fit: photo with the mesh", type="numpy", elem_id="overlay")
                        crop = gr.Image(label="aligned crop", type="numpy", elem_id="crop")
                    live = gr.Image(label="live preview: shaded | normals | albedo", type="numpy", elem_id="preview")
                    spec_box = gr.Textbox(label="edit spec (the CLI's --spec words for these controls)",
                                          interactive=False, elem_id="spec")
        controls_in = [light, az, el, strength, tint, env, *ctrl, yaw, pitch, roll, gy, gp]

        def spec_of(light_, az_, el_, s_, tint_, env_, *rest):
            vals = rest[:len(names)]
            y_, p_, r_, gy_, gp_ = rest[len(names):]
            return spec_text(light_, az_, el_, s_, env_, dict(zip(names, vals)), y_, p_, r_, gy_, gp_, tint_)

        def do_fit(path):
            t = time.perf_counter()
            try:
                f = fit_photo(path, cfg)
            except InputError as exc:
                return None, None, None, None, _message(exc)
            return (f, f.overlay, f.crop, preview(f, ""),
                    f"Fitted **{Path(f.photo).name}** in {time.perf_counter() - t:.2f} s.")

        def do_preview(f, *vals):
            spec = spec_of(*vals)
            if f is None:
                return None, spec, gr.update()
            try:
                return preview(f, spec), spec, gr.update()
            except (InputError, ValueError) as exc:
                return None, spec, _message(exc)

        fit_outputs = [fit_state, overlay, crop, live, status]
        # the upload box empties again after each photo, ready for the next (the fit shows the photo)
        photo.upload(lambda path: (*do_fit(path), None), photo, [*fit_outputs, photo])
        builtin.click(lambda: do_fit(None), None, fit_outputs, api_name="fit_builtin")
        for c in controls_in:
            c.change(do_preview, [fit_state, *controls_in], [live, spec_box, status], show_progress="hidden",
                     trigger_mode="always_last", queue=False)

        with gr.Tab("Edit", id="edit"):
            gr.Markdown("The Rig tab's photo and controls, applied by a DiffusionRig model "
                        "(inversion, then decoding under the edited rig).")
            with gr.Row():
                edit_model = gr.Dropdown(find_models(cfg, ("diffusion",)), label="DiffusionRig model",
                                         elem_id="edit-model")
                edit_zip = gr.File(label=zip_label, file_types=[".zip"],
                                   type="filepath", height=80, elem_id="edit-zip")
                sweep_n = gr.Number(0, label="light sweep: directions (0: none)", minimum=0, maximum=16,
                                    precision=0, elem_id="edit-sweep")
                edit_btn = gr.Button("edit the photo", variant="primary", elem_id="edit-run")
            edit_status = gr.Markdown("", elem_id="edit-status")
            with gr.Row():
                before = gr.Image(label="before", type="numpy", height=360, elem_id="edit-before")
                after = gr.Image(label="after", type="numpy", height=360, elem_id="edit-after")
            sweep_gallery = gr.Gallery(label="light sweep (left to right)", columns=4, elem_id="edit-sweep-gallery")
            edit_file = gr.File(label="download", elem_id="edit-file")

        shown = gr.State(None)   # the photo the "before" view shows (sent again only when it changes)

        def do_edit(f, model_dir, n_sweep, shown_, *vals, progress=gr.Progress(track_tqdm=True)):
            if f is None:
                return None, None, None, None, _message(InputError(None, "fit a photo in the Rig tab first")), None
            t = time.perf_counter()
            try:
                a, b, sweep, out = edit_photo(f, spec_of(*vals), model_dir, cfg, int(n_sweep or 0))
            except (InputError, ValueError) as exc:
                return None, None, None, None, _message(exc), None
            b = str(b) if b is not None else None  # the job's PNGs go to the page as they are
            return (gr.skip() if shown_ == str(a) else str(a), b, [str(p) for p in sweep] or None, b,
                    f"Edited in {time.perf_counter() - t:.2f} s; outputs (with the CLI's manifest) in `{out}`.",
                    str(a))

        edit_btn.click(do_edit, [fit_state, edit_model, sweep_n, shown, *controls_in],
                       [before, after, sweep_gallery, edit_file, edit_status, shown], api_name="edit")

        with gr.Tab("Video", id="video"):
            gr.Markdown("A video renderer's target performs a driver video, or (no driver) relights itself.")
            with gr.Row():
                with gr.Column():
                    vid_model = gr.Dropdown(find_models(cfg, ("video",)), label="video model", elem_id="video-model")
                    vid_zip = gr.File(label=zip_label, file_types=[".zip"],
                                      type="filepath", height=80, elem_id="video-zip")
                    vid_target = gr.File(label="the target's video (for an uploaded model)",
                                         file_types=list(VIDEO_TYPES), type="filepath", height=80,
                                         elem_id="video-target")
                    driver = gr.File(label="driver video (empty: the target drives itself)",
                                     file_types=list(VIDEO_TYPES), type="filepath", elem_id="video-driver")
                    v_light = gr.Dropdown(list(LIGHTS), value="photo", label="light", elem_id="video-light")
                    v_az = gr.Slider(-180, 180, 0, step=1, label="light azimuth (deg)")
                    v_el = gr.Slider(-90, 90, 0, step=1, label="light elevation (deg)")
                    v_env = gr.File(label="environment map", file_types=list(ENV_TYPES), type="filepath")
                    v_orbit = gr.Number(0, label="light orbit: seconds per turn (0: fixed)", minimum=0,
                                        elem_id="video-orbit")
                    v_bg = gr.Checkbox(False, label="light the background too", elem_id="video-bg-light")
                    v_btn = gr.Button("reenact", variant="primary", elem_id="video-run")
                    v_status = gr.Markdown("", elem_id="video-status")
                with gr.Column():
                    v_result = gr.Video(label="result", elem_id="video-result")
                    v_compare = gr.Video(label="driver | target | result", elem_id="video-compare")

        def do_reenact(model_dir, drv, target_, light_, az_, el_, env_, orbit_, bg_,
                       progress=gr.Progress(track_tqdm=True)):
            try:
                res, comp, text = reenact(model_dir, drv, cfg, light_, az_, el_, float(orbit_ or 0), env_map=env_,
                                          target_video=target_, light_background=bool(bg_))
            except (InputError, ValueError) as exc:
                return None, None, _message(exc)
            return str(res), str(comp), f"```\n{text}\n```"

        v_btn.click(do_reenact, [vid_model, driver, vid_target, v_light, v_az, v_el, v_env, v_orbit, v_bg],
                    [v_result, v_compare, v_status])

        with gr.Tab("Avatar", id="avatar"):
            with gr.Row():
                with gr.Column():
                    av_model = gr.Dropdown(find_models(cfg, AVATAR_METHODS), label="avatar model",
                                           elem_id="avatar-model")
                    av_zip = gr.File(label=zip_label, file_types=[".zip"],
                                     type="filepath", height=80, elem_id="avatar-zip")
                    av_yaw = gr.Slider(-60, 60, 0, step=1, label="view yaw (deg)", elem_id="avatar-yaw")
                    av_pitch = gr.Slider(-40, 40, 0, step=1, label="view pitch (deg)", elem_id="avatar-pitch")
                    av_ctrl = [gr.Slider(-1, 1, 0, step=0.05, label=n, elem_id=f"avatar-{n}") for n in names]
                    av_btn = gr.Button("render the view", elem_id="avatar-run")
                    av_orbit = gr.Number(24, label="turntable views", minimum=2, maximum=360, elem_id="avatar-orbit")
                    av_driver = gr.File(label="driver video (optional)", file_types=list(VIDEO_TYPES),
                                        type="filepath")
                    av_video_btn = gr.Button("make the video (turntable, or the driver's performance)",
                                             elem_id="avatar-video-run")
                    av_status = gr.Markdown("", elem_id="avatar-status")
                with gr.Column():
                    av_img = gr.Image(label="view", type="numpy", height=420, elem_id="avatar-view")
                    av_video = gr.Video(label="video", elem_id="avatar-video")

        def do_view(model_dir, y_, p_, *vals):
            try:
                img, notes = avatar_view(model_dir, cfg, y_, p_, dict(zip(names, vals)))
            except (InputError, ValueError) as exc:
                return None, _message(exc)
            return img, "; ".join(notes)

        def do_av_video(model_dir, n, drv, *vals, progress=gr.Progress(track_tqdm=True)):
            try:
                path, text = avatar_video(model_dir, cfg, drv, int(n or 0), dict(zip(names, vals)))
            except (InputError, ValueError) as exc:
                return None, _message(exc)
            return str(path), f"```\n{text}\n```"

        av_inputs = [av_model, av_yaw, av_pitch, *av_ctrl]
        av_btn.click(do_view, av_inputs, [av_img, av_status])
        for c in (av_yaw, av_pitch, *av_ctrl):
            c.release(do_view, av_inputs, [av_img, av_status], show_progress="hidden", trigger_mode="always_last")
        av_video_btn.click(do_av_video, [av_model, av_orbit, av_driver, *av_ctrl], [av_video, av_status])
        def importer(methods, what):
            def run(path):
                try:
                    d = import_model_zip(path, cfg, methods, what)
                except InputError as exc:
                    return gr.update(), _message(exc), None
                return (gr.update(choices=find_models(cfg, methods), value=d), f"Model unpacked into `{d}`.",
                        None)  # the upload box empties, ready for another
            return run

        edit_zip.upload(importer(("diffusion",), "DiffusionRig"), edit_zip, [edit_model, edit_status, edit_zip])
        # a picked model loads (and compiles) in the background while the visitor sets up the edit
        edit_model.change(lambda m: warm_editor(m, cfg) and None, edit_model, None, queue=False)
        vid_zip.upload(importer(("video",), "video"), vid_zip, [vid_model, v_status, vid_zip])
        av_zip.upload(importer(AVATAR_METHODS, "avatar"), av_zip, [av_model, av_status, av_zip])
    app.queue(default_concurrency_limit=1)
    app.portraitrig_theme = theme
    return app


def serve(cfg: WebConfig, block: bool = True):
    """Start the app (``block=False``: return the running app, for tests)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    cfg.validate()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    app = build_app(cfg)
    models = find_models(cfg, ("diffusion",))
    if models:  # the Edit tab's first choice
        warm_editor(models[0], cfg)
    app.launch(server_name=cfg.host, server_port=cfg.port or None, max_file_size=f"{cfg.max_upload_mb}mb",
               allowed_paths=[str(Path(cfg.out).resolve())], prevent_thread_lock=not block, quiet=not block,
               show_error=True, theme=app.portraitrig_theme, footer_links=[], ssr_mode=False)
    return app


__all__ = ["WebConfig", "edit_spec", "spec_text", "check_upload", "load_photo", "check_video", "fit_photo", "preview",
           "find_models", "edit_photo", "warm_editor", "reenact", "avatar_view", "avatar_video", "build_app", "serve", "Fit"]
