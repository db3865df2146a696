"""Video-renderer benchmark: train the 256 preset on a clip's first 80 % for a few minutes, then
on the held-out 20 %: self-reenactment PSNR / SSIM (in the fixed crop: whole crop and masked to
the face mesh; at full frame after paste-back: whole frame), render speed at 256² and 512²
(batch 1, a frame sequence; fits excluded: rig buffers + whole-portrait normals + network), a
compare picture (target | render | relit left | relit right | light from above), and a
reenactment of the target by a driver (fitted here) with a light orbit. Prints a table and
writes ``video.json`` and pictures to --out.

Two steps. Here, where mediapipe is installed (fit + segmentation)::

    python bench/bench_video.py prepare --video /work/shared/data/faces/videos/hdtf_katiehill.mp4 \
        --driver /work/shared/data/faces/videos/liveportrait_d10.mp4 --dir .devdata/video

(writes .devdata/video/{target.mp4, target_256.safetensors + sidecar, driver.safetensors}, ~20 MB);
then on the GPU machine (bench/device/video.sh, which also runs the baseline and ``fps``)::

    python bench/bench_video.py run --dir .devdata/video --out OUT --minutes 4 [--no-fps] [--set train.lr=2e-4]
    python bench/bench_video.py baseline --dir .devdata/video --out OUT/baseline --stage1-cache CACHE
    python bench/bench_video.py fps --dir .devdata/video --out OUT

and back here, on what came back (MediaPipe re-fits, dlib identity, jitter, flicker, relit light,
seam)::

    python bench/bench_video.py score --dir .devdata/video --out OUT

and the README's reenactment picture and clip (driver | target | result | relit result)::

    python bench/bench_video.py picture --dir .devdata/video --out OUT --driver-video DRIVER.mp4
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from portraitrig.config import set_from_text, to_dict
from portraitrig.io.atomic import write_image, write_json


def prepare(video: Path, driver: Path | None, d: Path, size: int, max_frames: int | None) -> None:
    from portraitrig.methods.video.data import prepare_video

    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, d / "target.mp4")
    t = time.time()
    prepare_video(d / "target.mp4", d / f"target_{size}.safetensors", size=size, max_frames=max_frames)
    print(f"target prepared in {time.time() - t:.0f} s")
    if driver is not None:
        from portraitrig.apps.reenactjob import load_driver
        from portraitrig.pipeline import Rigger

        drv = load_driver(driver, 25.0, Rigger(crop_size=256), max_frames)
        drv.params.save(d / "driver.safetensors", meta={"fps": float(drv.fps)})
        print(f"driver: {len(drv.params)} frames at {drv.fps} fps, {drv.held} without a face held")


#: exposures of the requested lights for the relit frames, relative to the frame's own (1: the same
#: mean shading over the camera-facing hemisphere). At 1 a strong side light blows out 9-19 % of the
#: face (the lit side doubles in brightness): a re-fit cannot recover a light from clipped pixels,
#: even on a perfectly relit frame, so the relit frames are also rendered at half exposure.
RELIT_EXPOSURES = (1.0, 0.5)


def machine_name() -> str:
    """What the figures were measured on: the GPU's name, else the CPU architecture."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine()


def u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def metrics_fn():
    """(name, fn(generated, reference, mask) -> dict): scikit-image's (portraitrig.eval.image)
    where installed, else the same uniform-window SSIM in torch."""
    try:
        from portraitrig.eval.image import image_metrics

        return "portraitrig.eval.image", image_metrics
    except ImportError:
        from portraitrig.neural.losses import ssim_torch

        def fallback(a, b, mask=None):
            ta = torch.from_numpy(a).float().permute(2, 0, 1)[None] / 255
            tb = torch.from_numpy(b).float().permute(2, 0, 1)[None] / 255
            mse = float(((ta - tb) ** 2).mean())
            out = {"psnr": 10 * np.log10(1 / max(mse, 1e-12)), "ssim": float(ssim_torch(ta, tb))}
            if mask is not None:
                m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
                msem = float((((ta - tb) ** 2) * m).sum() / (3 * m.sum()).clamp_min(1))
                out["psnr_masked"] = 10 * np.log10(1 / max(msem, 1e-12))
            return out

        return "torch fallback (no scikit-image)", fallback


def render_fps(r, params, n: int = 100, rounds: int = 2) -> dict:
    """Frames per second of rendering a sequence frame by frame (batch 1, r.stream: rig buffers,
    head warps, whole-portrait normals, network), fp32 and bf16 network; fits excluded. On CUDA
    the plain path (``fps_<dtype>``) and the CUDA graphs (``fps_<dtype>_fast``) alternate
    ``rounds`` times (lists, one value a round: the host's launch rate swings between and within
    runs); ``capture_s_<dtype>``: the fast path's first frames (graph capture included).
    ``chunked_fps_*`` / ``chunked_peak_mb_*``: the whole sequence rendered in chunks of 16 (bf16),
    plain and graphed (peak memory the allocator reserved, the graphs' pool included).
    ``net_fps``: the network alone; ``raster_fps``: the face buffers' rasterizer alone, which the
    graphs leave out (its sparse scan has data-dependent sizes)."""
    dev = r.device
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    seq = params[:n].to(dev)

    def warm(fast: bool) -> float:
        """A stream's first frames (with ``fast``, the graphs' capture): seconds."""
        r.fast = fast
        sync()
        t = time.perf_counter()
        stream = r.stream()
        for i in range(min(5, len(seq))):
            stream(seq[i:i + 1])
        sync()
        return time.perf_counter() - t

    def timed(fast: bool) -> float:
        warm(fast)
        t = time.perf_counter()
        stream = r.stream()
        for i in range(len(seq)):
            stream(seq[i:i + 1])
        sync()
        return round(len(seq) / (time.perf_counter() - t), 1)

    out = {}
    for mode in ("fp32", "bf16") if cuda else ("fp32",):
        if mode == "bf16":
            r.use_half()
        if cuda:
            out[f"capture_s_{mode}"] = round(warm(True), 2)
            runs = [(timed(False), timed(True)) for _ in range(rounds)]
            out[f"fps_{mode}"], out[f"fps_{mode}_fast"] = [a for a, _ in runs], [b for _, b in runs]
        else:
            out[f"fps_{mode}"] = timed(False)
        x = torch.zeros(1, r.config.in_channels, r.size, r.size, device=dev, dtype=r.dtype)
        for _ in range(5):
            r.net(x)
        sync()
        t = time.perf_counter()
        for _ in range(50):
            r.net(x)
        sync()
        out[f"net_fps_{mode}"] = round(50 / (time.perf_counter() - t), 1)
    if cuda:   # whole sequences in chunks of 16 (reenactment's batches): rate and peak memory, bf16
        for fast in (False, True):
            r.fast = fast
            torch.cuda.empty_cache()                  # what the last path cached (not a live graph's pool)
            r.render(seq[:40])                        # warm-up (and the graphs' capture)
            sync()
            torch.cuda.reset_peak_memory_stats(dev)
            t = time.perf_counter()
            r.render(seq)
            sync()
            key = "fast" if fast else "plain"
            out[f"chunked_fps_{key}"] = round(len(seq) / (time.perf_counter() - t), 1)
            out[f"chunked_peak_mb_{key}"] = round(torch.cuda.max_memory_reserved(dev) / 2 ** 20)
    sync()
    t = time.perf_counter()
    for i in range(len(seq)):                         # the rasterizer alone (outside the graphs)
        r.cond.face(seq[i:i + 1])
    sync()
    out["raster_fps"] = round(len(seq) / (time.perf_counter() - t), 1)
    return out


def resized(net, config):
    """A random-weight VideoNet of ``config`` (another image size) with ``net``'s person prior,
    reference frame, head placement and head ellipse: the inputs of ``net``'s clip at that size,
    for timing."""
    from portraitrig.methods.video.model import VideoNet

    big = VideoNet(config)
    size = (config.image_size, config.image_size)
    with torch.no_grad():
        for name, b in big.named_buffers():
            if hasattr(net, name):
                src = getattr(net, name).float().cpu()
                b.copy_(torch.nn.functional.interpolate(src, size=size, mode="bilinear", align_corners=False)
                        if b.dim() == 4 else src)
    return big


def speed(model: Path, data, device: str, fps_frames: int = 100) -> dict:
    """Render fps of the trained model at its size, and of an untrained 512 preset network with
    the same inputs (speed does not depend on the weights)."""
    from portraitrig.methods.video.config import PRESETS
    from portraitrig.methods.video.renderer import VideoRenderer

    r = VideoRenderer.from_pretrained(model, device=device)
    res = {"fps_256": render_fps(r, data.params, fps_frames)}
    if torch.cuda.is_available():
        res["fps_512"] = render_fps(VideoRenderer(resized(r.net, PRESETS["512"]().model), r.target, device=device),
                                    data.params, fps_frames)
    return res


def untrained_fps(data, preset: str, device: str, overrides: dict | None = None, fps_frames: int = 100) -> dict:
    """:func:`render_fps` of the ``preset``'s network (with ``overrides``, as ``run``'s ``--set``)
    with random weights, its person prior, median frame and head placement set from ``data`` as
    training sets them (for a preset of another size than the data's, made at the data's size
    and resized, :func:`resized`): the render rate of a setting without training a model."""
    from portraitrig.methods.video.config import PRESETS
    from portraitrig.methods.video.method import VideoMethod
    from portraitrig.methods.video.renderer import Target, VideoRenderer

    cfg = set_from_text(PRESETS[preset](), overrides or {})
    here = cfg if cfg.model.image_size == data.size else set_from_text(PRESETS[str(data.size)](), overrides or {})
    net = VideoMethod(here, data, device, say=None).model.eval()
    if here is not cfg:
        net = resized(net, cfg.model)
    # the target description, as a trained model folder holds it (a retrieval bank relights from it)
    target = Target(data.params, data.frame_index, data.crop, data.fps, data.video, data.n_train)
    return render_fps(VideoRenderer(net, target, device=device), data.params, fps_frames)


def run(d: Path, out: Path, minutes: float, size: int, device: str, fps_frames: int = 100,
        reenact_frames: int | None = None, preset: str | None = None, fps: bool = True,
        overrides: dict | None = None, save_every: int = 1) -> dict:
    from portraitrig.apps.reenactjob import (ReenactConfig, border_mask, colour_ring, paste_frame, person_pastes,
                                             run_reenact)
    from portraitrig.io.video import iter_video_frames
    from portraitrig.light import sh
    from portraitrig.methods.video.config import PRESETS
    from portraitrig.methods.video.data import VideoData
    from portraitrig.methods.video.method import ADV_RAMP, VideoMethod
    from portraitrig.methods.video.renderer import VideoRenderer
    from portraitrig.render.buffers import render_buffers
    from portraitrig.training.loop import train

    out.mkdir(parents=True, exist_ok=True)
    data = VideoData.load(d / f"target_{size}.safetensors")
    video = d / "target.mp4"
    cfg = PRESETS[preset or str(size)]()
    cfg.train.ckpt_every, cfg.train.sample_every = 100_000, 2000
    cfg = set_from_text(cfg, overrides or {})   # train.KEY, model.KEY or a Config field
    t = time.time()
    method = VideoMethod(cfg, data, device)
    rate = None
    if cfg.train.schedule == "constant":
        cfg.train.steps, cfg.train.time_limit = 200_000, minutes
    else:   # the preset's decaying schedule, sized to the time budget
        from common import budget_schedule, steps_per_second

        # with a critic: timed where its terms are fully on (it runs over most of the steps)
        rate = steps_per_second(method, cfg, at_step=method.adversarial_start() + ADV_RAMP
                                if method.critic is not None else 0)
        fixed = cfg.train.steps if "train.steps" in (overrides or {}) else None
        cfg.train.steps, cfg.train.time_limit = budget_schedule(rate, minutes)
        if fixed:   # a fixed schedule: runs sharing a GPU compared step for step
            cfg.train.steps = fixed
    model = train(method, cfg.train, out / "run", config=to_dict(cfg), progress=False)
    log = [json.loads(x) for x in (out / "run" / "log.jsonl").read_text().splitlines()]
    res = {"machine": machine_name(), "steps_per_s": rate and round(rate, 1),
           "config": to_dict(cfg), "train_s": round(time.time() - t, 1), "steps": max(rec.get("step", 0) for rec in log),
           "final_loss": log[-1].get("loss"), "frames_train": data.n_train, "frames_heldout": len(data) - data.n_train}
    r = VideoRenderer.from_pretrained(model, device=device)
    # ---------------------------------------------------- held-out self-reenactment
    n0 = data.n_train
    held = data.params[n0:]
    ctx = data.params[max(0, n0 - 2):n0]
    with torch.no_grad():
        pred, matte = r.render_matte(held, context=ctx)
        pred = pred.cpu()
        face = render_buffers(held.to(device), r.face_model, size=size, names=("mask",))["mask"].cpu()
        own = r.drawn_mask(held) if matte is not None else None   # where the frames' own rig may show the person
    crops = data.crops()[n0:]
    keep = torch.arange(0, len(held), max(1, int(save_every)))   # what comes back for the CPU-side scores
    np.save(out / "heldout_pred.npy", (pred[keep].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    name, metric = metrics_fn()
    per_crop, per_frame, per_inside = [], [], []
    inside = data.in_frame()[0, 0].numpy()   # the crop's pixels inside the video frame (the rest is padding)
    S = data.size
    rc = ReenactConfig()
    mask = border_mask(S, rc.feather)
    ring = colour_ring(mask)
    if matte is not None:   # as `reenact --self` pastes: the matte's person, and where the frame's rig may be
        pastes, rings = person_pastes(matte.clamp(0, 1), own, mask, ring, rc.margin, matte=True)
    per_person = []
    frames = {fr.index: fr.image for fr in iter_video_frames(video) if fr.index in set(data.frame_index[n0:].tolist())} \
        if video.is_file() else {}   # without the clip (a call short of carry room): no full-frame figures
    for k in range(len(held)):
        g, ref = u8(pred[k]), crops[k].permute(1, 2, 0).numpy()
        per_crop.append(metric(g, ref, face[k, 0].numpy()))
        m = metric(g, ref, inside)
        per_inside.append({"psnr": m["psnr_masked"], "ssim": m["ssim_masked"]})
        fi = int(data.frame_index[n0 + k])
        if fi in frames:
            full = paste_frame(frames[fi], g, data.crop, mask, ring)
            per_frame.append(metric(full, frames[fi]))
            if matte is not None:
                full = paste_frame(frames[fi], g, data.crop, pastes[k], rings[k])
                per_person.append(metric(full, frames[fi]))
    mean = lambda rows, key: round(float(np.mean([x[key] for x in rows])), 3) if rows else None  # noqa: E731
    res["metrics"] = name
    res["heldout_saved_index"] = keep.tolist()
    res["heldout_crop"] = {k: mean(per_crop, k) for k in per_crop[0]}
    res["heldout_crop_in_frame"] = {"share": round(float(inside.mean()), 3), **{k: mean(per_inside, k) for k in per_inside[0]}}
    res["heldout_full_frame"] = {k: mean(per_frame, k) for k in (per_frame[0] if per_frame else {})}
    if per_person:   # the person alone pasted into the frame, as `reenact --self` writes it (the whole crop above)
        res["heldout_full_frame_person_paste"] = {k: mean(per_person, k) for k in per_person[0]}
    # ---------------------------------------------------- compare picture
    pick = torch.linspace(0, len(held) - 1, 4).round().long()
    rows = []
    with torch.no_grad():
        for k in pick.tolist():
            p = held[k:k + 1]
            c = held[max(0, k - 2):k] if k else ctx
            lights = [sh.match_exposure(sh.preset(n)[None], p.light) for n in ("left", "right", "top")]
            cols = [crops[k].permute(1, 2, 0).numpy(), u8(pred[k])]
            cols += [u8(r.render(p, light=L.to(device), context=c)[0].cpu()) for L in lights]
            rows.append(np.concatenate(cols, 1))
    write_image(out / "video_compare.png", np.concatenate(rows, 0))
    # ---------------------------------------------------- speed
    if fps:
        res.update(speed(model, data, device, fps_frames))
    # ---------------------------------------------------- relit held-out frames (scored on the CPU: re-fit, seam)
    pick = torch.linspace(0, len(held) - 1, min(16, len(held))).round().long()
    relit, lights, which = [], [], []
    with torch.no_grad():
        for exposure in RELIT_EXPOSURES:
            for name in ("left", "right", "top"):
                L = exposure * sh.match_exposure(sh.preset(name)[None].expand(len(pick), 9, 3), held.light[pick])
                light = held.light.clone()
                light[pick] = L
                relit.append(r.render(held, light=light.to(device), context=ctx).cpu()[pick])
                lights.append(L)
                which += [(int(k), name, exposure) for k in pick]
    pred = (torch.cat(relit).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez_compressed(out / "relit.npz", pred=pred, light=torch.cat(lights).float().numpy(),   # < 16 MiB
                        heldout=np.array([w[0] for w in which]), name=np.array([w[1] for w in which]),
                        exposure=np.array([w[2] for w in which]))
    # ---------------------------------------------------- reenactments: by the driver (expression figures),
    # by the driver under an orbiting light, and the target relit by an orbiting light (pictures)
    drv = d / "driver.safetensors"
    jobs = [("reenact", drv, ReenactConfig(audio="target")),
            ("reenact_orbit", drv, ReenactConfig(light="left", light_orbit=4.0, audio="target")),
            ("relight_orbit", None, ReenactConfig(self_drive=True, light="left", light_orbit=4.0, audio="target"))]
    if r.config.matte:   # the same without the model's matte (pasted where the person may be): its flicker beside
        jobs.insert(1, ("reenact_nomatte", drv, ReenactConfig(audio="target", matte=False)))
    for name, driver, rc in jobs:
        if (driver is not None and not driver.is_file()) or not video.is_file():
            continue
        rc.target_video, rc.device, rc.max_frames, rc.crf = str(video), device, reenact_frames, 23
        t = time.time()
        try:  # the reenactment writes H.264 through PyAV: the benchmark's other figures stand without it
            s = run_reenact(model, driver, out / name, rc, progress=False, say=None)
            res[name] = {"frames": s.frames, "seconds": round(time.time() - t, 1), "background": s.background}
        except Exception as exc:  # noqa: BLE001
            res[name] = {"error": f"{exc.__class__.__name__}: {exc}"}
    return res


def placement(params) -> torch.Tensor:
    """(N, 4) where each frame's head sits in the crop: shift x, y (NDC), in-plane roll
    (degrees) and size (the weak-perspective scale)."""
    from portraitrig.face.params import axis_angle_to_matrix

    R = axis_angle_to_matrix(params.rotation.float())
    roll = torch.rad2deg(torch.atan2(R[:, 1, 0], R[:, 0, 0]))
    return torch.cat([params.translation.float(), roll[:, None], params.scale.float().reshape(-1, 1)], 1)


def outside_training_placement(train, held) -> np.ndarray:
    """(N,) bool: held-out frames whose head placement (:func:`placement`) lies outside the
    training frames' range in any of its four numbers (what a renderer must extrapolate)."""
    a, b = placement(train), placement(held)
    return ((b < a.min(0).values) | (b > a.max(0).values)).any(1).numpy()


def by_placement(pred: np.ndarray, real: np.ndarray, outside: np.ndarray) -> dict:
    """Mean crop PSNR of renders (N, S, S, 3) uint8 against the real frames, for the frames
    ``outside`` the training placement and the rest."""
    _, metric = metrics_fn()
    psnr = np.array([metric(g, r)["psnr"] for g, r in zip(pred, real)])
    return {k: {"frames": int(m.sum()), "psnr": round(float(psnr[m].mean()), 3) if m.any() else None}
            for k, m in (("outside", outside), ("inside", ~outside))}


def nearest_frames(train, query) -> torch.Tensor:
    """Index of the training frame nearest each query frame in head pose and expression (the
    frame DiffusionRig inverts to render the query: its best available source)."""
    def feats(p):
        return torch.cat([p.rotation.reshape(len(p), -1), 0.1 * p.expression.reshape(len(p), -1),
                          p.translation.reshape(len(p), -1)], 1).float()
    return torch.cdist(feats(query), feats(train)).argmin(1)


def baseline(d: Path, out: Path, stage1_cache: Path, minutes1: float, minutes2: float, size: int, device: str,
             steps: int = 20, preset1: str | None = None, preset2: str | None = None,
             batch_size: int | None = None, every: int = 1, fast: bool | None = None) -> dict:
    """DiffusionRig with inversion on the same held-out frames (the issue's baseline, at an equal
    budget): stage 1 (the generic prior) on ``stage1_cache`` for ``minutes1``, stage 2 on the
    target's training frames in the video's fixed crop for ``minutes2``; each held-out frame is
    the DDIM inversion of the training frame nearest it in pose and expression, decoded with the
    held-out frame's rig buffers. Same metrics as ``run`` (crop, masked to the face mesh).
    ``every``: invert every k-th held-out frame only (0.22 s a frame on an H200 in batches of 16,
    plain fp32; their indices are in ``heldout_index``, and ``score`` compares the video renderer
    on the same frames).
    ``fast``: the renderer's bf16 CUDA-graph path (its default on a GPU; it compiles for ~2
    minutes first), False: the plain fp32 path, quicker for a few dozen frames."""
    from portraitrig.methods.diffusionrig import PRESETS as DPRESETS
    from portraitrig.methods.diffusionrig.method import DiffusionRigMethod
    from portraitrig.methods.diffusionrig.renderer import DiffusionRenderer
    from portraitrig.methods.video.data import VideoData
    from portraitrig.neural.cache import FaceCache, build_cache
    from portraitrig.neural.contract import Edit, Subject
    from portraitrig.render.buffers import render_buffers
    from portraitrig.training.loop import train

    out.mkdir(parents=True, exist_ok=True)
    data = VideoData.load(d / f"target_{size}.safetensors")
    n0 = data.n_train
    crops = data.crops()
    images = [c.permute(1, 2, 0).numpy() for c in crops]
    params = data.params.replace(sources=[f"target#frame={int(i)}" for i in data.frame_index.tolist()])
    person = build_cache(images[:n0], params[:n0], [f"t{i:05d}" for i in range(n0)], size,
                         groups=["target"] * n0)
    res = {"machine": machine_name(), "frames_train": n0, "frames_heldout": len(data) - n0}
    t0 = time.time()
    c1 = DPRESETS[preset1 or f"stage1-{size}"]()
    c1.train.steps, c1.train.time_limit, c1.train.ckpt_every, c1.train.sample_every = 200_000, minutes1, 200_000, 0
    c1.train.compile = False   # a run of minutes finishes more steps eager than a compile leaves
    if batch_size:
        c1.train.batch_size = batch_size
    s1 = train(DiffusionRigMethod.create(c1, FaceCache.load(stage1_cache), device, say=None), c1.train,
               out / "s1", config=to_dict(c1), progress=False)
    c2 = DPRESETS[preset2 or f"stage2-{size}"]()
    c2.train.steps, c2.train.time_limit, c2.train.ckpt_every, c2.train.sample_every = 200_000, minutes2, 200_000, 0
    if batch_size:
        c2.train.batch_size = batch_size
    s2 = train(DiffusionRigMethod.create(c2, person, device, init=s1, say=None), c2.train, out / "s2",
               config=to_dict(c2), progress=False)
    res["train_s"] = round(time.time() - t0, 1)
    for k, run_dir in (("stage1", "s1"), ("stage2", "s2")):
        log = [json.loads(x) for x in (out / run_dir / "log.jsonl").read_text().splitlines()]
        res[f"{k}_steps"] = max(rec.get("step", 0) for rec in log)
    r = DiffusionRenderer.from_pretrained(s2, device=device, fast=fast)
    res["fast"] = r.fast
    hk = torch.arange(0, len(data) - n0, max(1, int(every)))
    res["heldout_index"] = hk.tolist()
    held = data.params[n0:][hk]
    src = nearest_frames(data.params[:n0], held)
    subjects = [Subject(f"t{int(i):05d}", images[int(i)], data.params[int(i):int(i) + 1]) for i in src]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    preds = []
    with torch.no_grad():   # warm-up: kernels chosen / compiled before the clock starts
        r.render_edits(subjects[:1], held[:1], [Edit("reenact")], steps=steps)
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(held), 16):
            preds.append(r.render_edits(subjects[i:i + 16], held[i:i + 16], [Edit("reenact")], steps=steps).float().cpu())
    sync()
    res["edit_s_per_frame"] = round((time.perf_counter() - t) / len(held), 4)
    pred = torch.cat(preds)
    pred = torch.nn.functional.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False) \
        if pred.shape[-1] != size else pred
    np.save(out / "baseline_pred.npy", (pred.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        face = render_buffers(held.to(device), r.face_model, size=size, names=("mask",))["mask"].cpu()
    name, metric = metrics_fn()
    rows = [metric(u8(pred[j]), crops[n0 + int(k)].permute(1, 2, 0).numpy(), face[j, 0].numpy())
            for j, k in enumerate(hk.tolist())]
    res["metrics"] = name
    res["heldout_crop"] = {k: round(float(np.mean([x[k] for x in rows])), 3) for k in rows[0]}
    res["ddim_steps"] = steps
    for run_dir in ("s1", "s2"):
        for ck in (out / run_dir).glob("ckpt-*.safetensors"):
            ck.unlink()
    return res


def score(d: Path, out: Path, size: int = 256, max_frames: int = 150) -> dict:
    """The CPU side (MediaPipe fits, dlib identity) of what ``run`` and ``baseline`` wrote to
    ``out``: identity distances, expression re-fit error (self- and cross-reenactment) against
    the real-frame floor (and, for cross-reenactment, against the re-fit's own error on the rig's
    mesh under the same requests, textured from a real frame, ``mesh_floor``, both by thirds of
    distance from the target's own expressions), landmark jitter (the first ``max_frames``) and
    background flicker (every frame; without the model's matte too, when that reenactment is
    here) against the real target video's, decoded and cropped as the result is (beside the
    driver video's own jitter when that video is here: the motion the result copies, at its own
    frame rate), relit frames' re-fitted light against the floor (and against the re-fit's own
    error on the rig's mesh under the same lights, :func:`relit_mesh_floor`), and the seam measure
    (also split by training placement)."""
    from common import (by_condition_range, embed_crops, face_masks, fit_crops, render_textured, replay_oracle,
                        replay_rig_nearest, ssim_by_region, uv_texture)
    from portraitrig.eval.identity import IdentityEncoder, identity_distance
    from portraitrig.eval.image import psnr
    from portraitrig.eval.rig import expression_error, gaze_error, summarize
    from portraitrig.eval.video import flicker, landmark_jitter
    from portraitrig.face.params import RigParams
    from portraitrig.io.video import iter_video_frames
    from portraitrig.methods.video.data import VideoData, crop_frame
    from portraitrig.pipeline import Rigger
    from portraitrig.render.buffers import render_buffers

    data = VideoData.load(d / f"target_{size}.safetensors")
    n0, N = data.n_train, len(data)
    real = data.crops().permute(0, 2, 3, 1).numpy()
    rigger = Rigger(crop_size=size)
    enc = IdentityEncoder(fallback="aligned")

    def fit_all(images):
        return fit_crops(rigger, images, "frame")

    def expr(requested: RigParams, fits) -> dict:
        ok = [i for i, f in enumerate(fits) if f is not None]
        if not ok:
            return {"fit_failures": len(fits)}
        fitted = RigParams.cat([fits[i].params for i in ok])
        e = {**expression_error(requested[ok], fitted, rigger.model), "gaze_deg": gaze_error(requested[ok], fitted)}
        return {"fit_failures": len(fits) - len(ok), **{k: v["mean"] for k, v in summarize(e).items()}}

    def per_frame_expr(requested: RigParams, fits) -> np.ndarray:   # % IOD per item, NaN where no face
        e = np.full(len(fits), np.nan)
        ok = [i for i, f in enumerate(fits) if f is not None]
        if ok:
            e[ok] = expression_error(requested[ok], RigParams.cat([fits[i].params for i in ok]),
                                     rigger.model)["expression_vertex_pct_iod"]
        return e

    def embed(images):
        return embed_crops(enc, images)

    def jitter(fitted):   # landmark jitter of a sequence's re-fits (None for under 9 faces)
        tracks = [f.crop_landmarks.points[:, :2] for f in fitted if f is not None]
        return landmark_jitter(np.stack(tracks)) if len(tracks) >= 9 else None

    res: dict = {"frames_heldout": N - n0}
    held = data.params[n0:]
    outside = outside_training_placement(data.params[:n0], held)
    res["heldout_outside_training_placement"] = int(outside.sum())
    # --- the floors: the same re-fit on the real held-out frames, identity between real frames
    real_fits = fit_all(real[n0:])
    res["floor_expression"] = expr(held, real_fits)
    floor_light = light_errors(held.light, real_fits)
    res["floor_light_rmse"] = floor_light["light_rmse"]
    e_held, e_train = embed(real[n0:]), embed(real[:n0:max(1, n0 // 16)])
    res["identity_same_person"] = float(np.mean(identity_distance(e_held[:, None], e_train[None])))
    # --- self-reenactment (the video renderer, and DiffusionRig with inversion when it ran)
    def saved_index(path: Path, key: str) -> np.ndarray:   # the held-out frames a run brought back
        return np.array(json.loads(path.read_text()).get(key, range(N - n0))) if path.is_file() else np.arange(N - n0)

    index = {"video": saved_index(out / "video.json", "heldout_saved_index"),
             "diffusion": saved_index(out / "baseline" / "baseline.json", "heldout_index")}
    preds, masks_of = {}, {}
    in_frame = data.in_frame()[0, 0].numpy() > 0.5   # the crop's pixels inside the video frame
    for name, path in (("video", out / "heldout_pred.npy"), ("diffusion", out / "baseline" / "baseline_pred.npy")):
        if path.is_file():
            preds[name] = pred = np.load(path)
            k = index[name][:len(pred)]
            fits = fit_all(pred)
            res[f"self_{name}"] = {"frames": len(k),
                                   "identity_distance": float(np.mean(identity_distance(embed(pred), e_held[k]))),
                                   **expr(held[torch.from_numpy(k)], fits),
                                   "by_placement": by_placement(pred, real[n0 + k], outside[k])}
            # the renderer's own stability, with no driver's motion in it: the held-out frames'
            # jitter against the real frames' (the same frames, so the same stride when every
            # k-th came back), where they come at one stride
            steps = np.unique(np.diff(k))
            if len(steps) == 1 and (mine := jitter(fits)) and (theirs := jitter([real_fits[i] for i in k])):
                res[f"self_{name}"]["jitter"] = {"stride": int(steps[0]), "result": mine, "real": theirs}
            # where the crop's SSIM is lost (face mesh, the person's outline, the rest of the person,
            # the background; in the video frame) and how sharp the renders are where the rig has no surface
            kk = torch.from_numpy(k)
            person, face = masks_of[name] = (data.masks[n0:, 0][kk].float().numpy() / 255,
                                             face_masks(held[kk], rigger.model, size))
            res[f"self_{name}"]["ssim_by_region"] = ssim_by_region(pred, real[n0 + k], person, face, in_frame)
    # what replaying the best training frame would score on the held-out crops (an oracle), also
    # on the frames the renderer brought back, beside the renderer's own figures there
    k = index["video"][:len(preds["video"])] if "video" in preds else None
    res["heldout_replay_oracle"] = replay_oracle(real[:n0], real[n0:], data.masks[n0:, 0], keep=k)
    # ... and replaying the training frame whose rig lies nearest (no answer in hand: the retrieval
    # bank's choice, model.retrieve)
    res["heldout_replay_rig_nearest"] = replay_rig_nearest(real[:n0], real[n0:], data.params[:n0], held,
                                                           rigger.model, in_frame)
    if k is not None:
        person, face = masks_of["video"]
        res["heldout_by_condition_range"] = by_condition_range(preds["video"], real[n0 + k], held[torch.from_numpy(k)],
                                                               data.params[:n0], rigger.model, face)
        res["heldout_replay_oracle"]["saved_frames"].update({
            "renderer_psnr": round(float(np.mean([psnr(p, real[n0 + i]) for p, i in zip(preds["video"], k)])), 2),
            "renderer_psnr_masked": round(float(np.mean([psnr(p, real[n0 + i], m)
                                                         for p, i, m in zip(preds["video"], k, person)])), 2)})
    if len(preds) == 2 and len(index["diffusion"]) < N - n0:
        # both renderers on the frames the baseline inverted (it may invert every k-th only)
        common = np.intersect1d(index["video"], index["diffusion"])
        hp = held[torch.from_numpy(common)]
        face = render_buffers(hp, rigger.model, size=size, names=("mask",))["mask"]
        _, metric = metrics_fn()
        for name, pred in preds.items():
            row_of = {int(k): j for j, k in enumerate(index[name])}
            rows = [metric(pred[row_of[int(k)]], real[n0 + int(k)], face[j, 0].numpy()) for j, k in enumerate(common)]
            res[f"{name}_on_common_frames"] = {"frames": len(common), **{
                m: round(float(np.mean([x[m] for x in rows])), 3) for m in rows[0]}}
    # --- cross-reenactment: expression error against the retargeted parameters, identity, stability
    rdir = out / "reenact"
    if (rdir / "result.mp4").is_file():
        req = RigParams.load(rdir / "params.safetensors")
        # flicker (no re-fit) over every frame of the reenactment, the re-fits over the first max_frames
        every = [crop_frame(fr.image, data.crop) for fr in iter_video_frames(rdir / "result.mp4")]
        crops = every[:max_frames]
        fits = fit_all(crops)
        still, still_far = background_mask(data), background_mask(data, FAR_PX)

        def stability(frames: np.ndarray, fitted) -> dict:
            return {"jitter": jitter(fitted), "flicker": flicker(frames, still),
                    "flicker_far": flicker(frames, still_far), "flicker_frames": len(frames)}

        res["cross"] = {**expr(req[:len(crops)], fits),
                        "identity_distance_to_target": float(np.mean(identity_distance(
                            embed(crops[::5])[:, None], e_train[None]))),
                        **stability(np.stack(every), fits)}
        other = out / "reenact_nomatte" / "result.mp4"   # the same model pasted without its matte
        if other.is_file():
            ims = np.stack([crop_frame(fr.image, data.crop) for fr in iter_video_frames(other, max_frames=len(every))])
            res["cross_nomatte"] = {"flicker": flicker(ims, still), "flicker_far": flicker(ims, still_far)}
        # the re-fit's own error on these requested expressions: the target's mesh under each
        # requested rig (exactly its geometry), textured from its most neutral training frame and
        # laid over the result, so the re-fit sees the same hair and outline around it
        q = req[:len(crops)]
        r0 = int(data.params[:n0].expression.float().norm(dim=-1).argmin())
        texture = uv_texture(data.params[r0:r0 + 1], real[r0], rigger.model)
        mesh = []
        for a in range(0, len(q), 16):
            colour, m = render_textured(q[a:a + 16], texture, rigger.model, size)
            under = torch.from_numpy(np.stack(crops[a:a + 16])).permute(0, 3, 1, 2).float() / 255
            mesh += [u8(x) for x in colour + (1 - m) * under]
        mesh_fits = fit_all(mesh)
        # the same mesh's identity distance and jitter: what foreign expressions and the requested
        # motion alone bring to the measures, whatever draws them
        res["cross"]["mesh_floor"] = {**expr(q, mesh_fits), "jitter": jitter(mesh_fits),
                                      "identity_distance_to_target": float(np.mean(identity_distance(
                                          embed(mesh[::5])[:, None], e_train[None])))}
        # both errors by how far each request lies from the target's own expressions (thirds by
        # the distance to the nearest training frame's expression coefficients)
        far = torch.cdist(q.expression.float(), data.params[:n0].expression.float()).min(1).values.numpy()
        per = {"result": per_frame_expr(q, fits), "mesh_floor": per_frame_expr(q, mesh_fits)}
        res["cross"]["by_distance"] = [
            {"distance": float(far[t].mean()), "frames": len(t), **{k: float(np.nanmean(e[t])) for k, e in per.items()}}
            for t in np.array_split(np.argsort(far), 3) if len(t)]
        # the real video decoded and cropped as the result is (the cache's crops are JPEG: their
        # own noise flickered 1.9-2.8x the video's on still backgrounds), the cache's without it
        video = d / "target.mp4"
        ref = np.stack([crop_frame(fr.image, data.crop) for fr in iter_video_frames(video, max_frames=len(every))]) \
            if video.is_file() else real[:len(every)]
        res["real_video"] = {"source": video.name if video.is_file() else "cache",
                             **stability(ref, fit_all(ref[:max_frames]))}
        # the motion the result was asked to copy: the same jitter on the driver's own video
        # (when it is here), its frames' central square re-fitted like the results
        driver_video = source_video(d / "driver.safetensors")
        if driver_video is not None:
            ims = [central_square(fr.image, size) for fr in iter_video_frames(driver_video, max_frames=len(crops))]
            res["driver_video"] = {"video": str(driver_video), "frames": len(ims), "jitter": jitter(fit_all(ims))}
    # --- relighting: re-fitted light against the requested, and the seam at the mesh border
    if (out / "relit.npz").is_file():
        z = np.load(out / "relit.npz")
        res["floor_light_rmse_scale_inv"] = floor_light["light_rmse_scale_inv"]
        exposures = z["exposure"] if "exposure" in z.files else np.ones(len(z["pred"]))
        for x in np.unique(exposures)[::-1]:
            rows = np.nonzero(exposures == x)[0]
            key = "relight" if x == 1 else f"relight_exposure_{x:g}"
            res[key] = relight_scores(z["pred"][rows], torch.from_numpy(z["light"][rows]),
                                      torch.from_numpy(z["heldout"][rows]).long(), data, held, real[n0:], fit_all,
                                      rigger.model, size, outside)
    return res


def target_table(score_res: dict, video: dict | None = None):
    """The figures of ``score`` (and of ``run``'s video.json, ``video``) against the issue's
    targets: a :class:`common.Table` of (measure, value, target, met), met being yes / no, or '-'
    where the target is not a number here (a figure beside another)."""
    from common import Table

    t = Table("measure", "value", "target", "met", title="against the targets")

    def row(name, value, target, ok):
        t.add(name, None if value is None else float(value), target, "-" if ok is None else ("yes" if ok else "no"))

    ff = (video or {}).get("heldout_full_frame")
    if ff:
        row("held-out full frame PSNR (dB)", ff["psnr"], ">= 27", ff["psnr"] >= 27)
        row("held-out full frame SSIM", ff["ssim"], ">= 0.90", ff["ssim"] >= 0.90)
    pp = (video or {}).get("heldout_full_frame_person_paste")
    if pp:   # as `reenact --self` writes it: the person pasted into the frame (above: the whole crop)
        row("  the person pasted, as reenact does: PSNR (dB)", pp["psnr"], ">= 27", pp["psnr"] >= 27)
        row("  the person pasted, as reenact does: SSIM", pp["ssim"], ">= 0.90", pp["ssim"] >= 0.90)
    crop = (video or {}).get("heldout_crop")
    oracle = score_res.get("heldout_replay_oracle")
    if crop and oracle:
        row("held-out crop PSNR (dB)", crop["psnr"], "(beside)", None)
        row("  replaying the best training frame (oracle)", oracle["psnr"], "(beside)", None)
        near = score_res.get("heldout_replay_rig_nearest")
        if near:
            row("  replaying the training frame of the nearest rig", near["psnr"], "(beside)", None)
    saved = (oracle or {}).get("saved_frames")
    if saved and "psnr_masked" in saved:
        row("held-out PSNR on the person, saved frames (dB)", saved["renderer_psnr_masked"], "(beside)", None)
        row("  replaying the best training frame (oracle)", saved["psnr_masked"], "(beside)", None)
    same = score_res.get("identity_same_person")
    self_v = score_res.get("self_video", {})
    sr = self_v.get("ssim_by_region")
    if sr:
        row("held-out crop SSIM on the person outside the face mesh", sr["person_rest"]["ssim"], "(beside)", None)
        row("  its share of the crop's SSIM deficit", sr["person_rest"]["share_deficit"], "(beside)", None)
        row("  the renders' sharpness there / the real frames'", sr["sharpness_person_outside_face"], "(beside)", None)
    sj = self_v.get("jitter")
    if sj:
        r = sj["result"]["jitter_pct_iod"] / sj["real"]["jitter_pct_iod"]
        row(f"held-out jitter / the real frames' (frames {sj['stride']} apart)", r, "<= 1.2", r <= 1.2)
    if "identity_distance" in self_v:
        d = self_v["identity_distance"]
        row("held-out identity distance", d, f"<= {same:.3f}", d <= same)
    floor = score_res.get("floor_expression", {}).get("expression_vertex_pct_iod")
    cross = score_res.get("cross")
    if cross and floor and "expression_vertex_pct_iod" in cross:
        e = cross["expression_vertex_pct_iod"]
        row("cross expression / real-frame floor", e / floor, "<= 1.5", e / floor <= 1.5)
        mesh = cross.get("mesh_floor", {}).get("expression_vertex_pct_iod")
        if mesh:
            row("cross expression / textured-mesh floor", e / mesh, "(beside)", None)
        gfloor = score_res["floor_expression"].get("gaze_deg")
        if gfloor and "gaze_deg" in cross:   # the eyes' direction, re-fitted likewise (degrees)
            row("cross gaze error / real-frame floor", cross["gaze_deg"] / gfloor, "(beside)", None)
            if cross.get("mesh_floor", {}).get("gaze_deg"):
                row("  the textured mesh under the same requests / floor", cross["mesh_floor"]["gaze_deg"] / gfloor,
                    "(beside)", None)
            if self_v.get("gaze_deg"):
                row("  held-out frames' gaze error / floor", self_v["gaze_deg"] / gfloor, "(beside)", None)
        row("cross identity distance", cross["identity_distance_to_target"], f"<= {same:.3f}",
            cross["identity_distance_to_target"] <= same)
        mesh_id = cross.get("mesh_floor", {}).get("identity_distance_to_target")
        if mesh_id is not None:
            row("  the textured mesh under the same requests", mesh_id, "(beside)", None)
        real = score_res.get("real_video", {})
        if cross.get("jitter") and real.get("jitter"):
            r = cross["jitter"]["jitter_pct_iod"] / real["jitter"]["jitter_pct_iod"]
            row("jitter / real video's", r, "<= 1.2", r <= 1.2)
            drv = (score_res.get("driver_video") or {}).get("jitter")
            if drv:
                row("  the driver video's own / real video's", drv["jitter_pct_iod"] / real["jitter"]["jitter_pct_iod"],
                    "(beside)", None)
            req = cross.get("mesh_floor", {}).get("jitter")
            if req:   # the requested motion itself, drawn by the rig's textured mesh and re-fitted alike
                row("  the textured mesh under the same requests / real video's",
                    req["jitter_pct_iod"] / real["jitter"]["jitter_pct_iod"], "(beside)", None)
                row("  result / the textured mesh's", cross["jitter"]["jitter_pct_iod"] / req["jitter_pct_iod"],
                    "(beside)", None)
        if real.get("flicker"):
            r = cross["flicker"] / real["flicker"]
            row("flicker / real video's", r, "<= 1.2", r <= 1.2)
        if real.get("flicker_far") and cross.get("flicker_far") is not None:
            row(f"  {FAR_PX} px further from the person", cross["flicker_far"] / real["flicker_far"], "(beside)", None)
        other = score_res.get("cross_nomatte")
        if other and real.get("flicker"):
            row("  pasted without the matte", other["flicker"] / real["flicker"], "(beside)", None)
            if real.get("flicker_far"):
                row(f"  without the matte, {FAR_PX} px further", other["flicker_far"] / real["flicker_far"],
                    "(beside)", None)
    lfloor = score_res.get("floor_light_rmse_scale_inv")
    for key, label in (("relight", "own exposure"), ("relight_exposure_0.5", "half exposure")):
        rl = score_res.get(key)
        if rl and lfloor:
            r = rl["light_rmse_scale_inv"] / lfloor
            row(f"relit light / floor ({label})", r, "<= 2", r <= 2)
            row(f"relit targets' light / floor ({label})", rl["ratio_relit_light_rmse_scale_inv"] / lfloor,
                "(beside)", None)
            if rl.get("mesh_floor_light_rmse_scale_inv"):
                row(f"  the rig's own mesh so lit / floor ({label})", rl["mesh_floor_light_rmse_scale_inv"] / lfloor,
                    "(beside)", None)
            s = rl["seam_relit"] / rl["seam_real"]
            row(f"seam / real frames' ({label})", s, "<= 1", s <= 1)
            inside = rl.get("seam_ratio_by_placement", {}).get("inside", {}).get("ratio")
            if inside is not None:
                row("  on frames inside the training placement", inside, "(beside)", None)
    return t


def relight_scores(relit: np.ndarray, want: torch.Tensor, ks: torch.Tensor, data, held, real: np.ndarray,
                   fit_all, model, size: int, outside: np.ndarray | None = None) -> dict:
    """Scores of relit renders (N, S, S, 3) uint8 of held-out frames ``ks`` under lights ``want``
    (N, 9, 3) (``model``: the face model): the rig's light re-fitted on them against the requested
    (RMSE, and scale-invariant), the share of the face clipped, the seam at the mesh border against
    the real frames', and the same on the real frames relit by the shading ratio (:func:`relit_floor`).
    ``outside`` (per held-out frame, :func:`outside_training_placement`): the seam ratio (relit
    over real) also for the frames outside the training placement and the rest."""
    from portraitrig.render.buffers import render_buffers
    from portraitrig.render.portrait import seam_score

    fits = fit_all(relit)
    errs = light_errors(want, fits)
    face = render_buffers(held[ks], model, size=size, names=("mask",))["mask"]
    person = data.masks[data.n_train:][ks].float() / 255
    frames = real[ks.numpy()]
    relit_t, real_t = (torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255 for a in (relit, frames))
    sr, sq = (seam_score(x, face, person).numpy() for x in (relit_t, real_t))
    out = {"frames": len(relit), "fit_failures": sum(f is None for f in fits),
           "light_rmse": errs["light_rmse"], "light_rmse_scale_inv": errs["light_rmse_scale_inv"],
           "clipped_face_share": float(((relit_t.amax(1) >= 253 / 255) | (relit_t.amin(1) <= 2 / 255)).float()
                                       .mul(face[:, 0]).sum() / face.sum().clamp_min(1)),
           "seam_relit": float(sr.mean()), "seam_real": float(sq.mean())}
    if outside is not None:
        o = outside[ks.numpy()]
        out["seam_ratio_by_placement"] = {k: {"frames": int(m.sum()), "ratio": float(sr[m].mean() / sq[m].mean())
                                              if m.any() else None} for k, m in (("outside", o), ("inside", ~o))}
    # the relit floor: the same re-fit on the real frames relit by the shading ratio (what the
    # renderer is trained to produce), under the same requested lights
    floor, floor_img = relit_floor(data, held[ks], frames, person, want, fit_all)
    out.update(ratio_relit_light_rmse=floor["light_rmse"],
               ratio_relit_light_rmse_scale_inv=floor["light_rmse_scale_inv"],
               seam_ratio_relit=float(seam_score(floor_img, face, person).mean()))
    # the measure's own floor on these lights: the rig's Lambertian mesh under them
    mesh = relit_mesh_floor(held[ks], frames, want, model, fit_all, size)
    out.update(mesh_floor_light_rmse_scale_inv=mesh["requested"], mesh_floor_own_light_rmse_scale_inv=mesh["own"])
    return out


def relit_mesh_floor(params, frames: np.ndarray, lights: torch.Tensor, model, fit_all, size: int) -> dict:
    """How close the light re-fit comes on a relit image that is exactly the rig's own model: each
    real frame (N, S, S, 3) uint8 with its face mesh (``params``) redrawn Lambertian (each frame's
    per-vertex albedo solved photometrically, :func:`~portraitrig.fit.photometric.fit_appearance`,
    times the SH shading of the mesh's normals) under the requested ``lights`` (N, 9, 3), the rest
    of the frame as it is, then re-fitted like a render. Returns the mean scale-invariant light
    errors: ``requested`` (against ``lights``) and ``own`` (the mesh under its own solved light,
    against it: the measure's noise on a perfect image, which should sit at the real-frame floor)."""
    from portraitrig.fit.photometric import fit_appearance
    from portraitrig.render.buffers import render_buffers
    from portraitrig.render.portrait import portrait_shading

    img = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    p = fit_appearance(img, params.to("cpu", torch.float32), model)
    b = render_buffers(p, model, size=size, names=("albedo", "normal", "mask"))
    out = {}
    for key, light in (("requested", lights.float()), ("own", p.light.float())):
        drawn = torch.where(b["mask"] > 0.5, b["albedo"] * portrait_shading(b["normal"], light), img)
        out[key] = light_errors(light, fit_all([u8(x) for x in drawn])).get("light_rmse_scale_inv")
    return out


def light_errors(lights: torch.Tensor, fits: list) -> dict:
    """Mean light errors (:func:`~portraitrig.eval.rig.light_error`) of re-fits ``fits`` (a
    list, None where no face was found) against ``lights`` (N, 9, 3); empty when none fitted."""
    from portraitrig.eval.rig import light_error

    ok = [i for i, f in enumerate(fits) if f is not None]
    if not ok:
        return {}
    errs = light_error(lights[ok].float(), torch.cat([fits[i].params.light for i in ok]))
    return {k: float(np.mean(v)) for k, v in errs.items()}


def relit_floor(data, params, frames: np.ndarray, person: torch.Tensor, lights: torch.Tensor,
                fit_all) -> tuple[dict, torch.Tensor]:
    """Light errors (:func:`~portraitrig.eval.rig.light_error`, means) of the rig re-fitted on
    real frames (N, S, S, 3) uint8 relit to ``lights`` (N, 9, 3) by the whole-portrait shading
    ratio (:func:`relight_image`, the renderer's training targets) against those lights: how
    close a re-fit can come to a requested light on a relit frame, the floor a relit render is
    measured against (the real-frame floor holds for the frames' own light only). Also returns
    those relit frames (N, 3, S, S) in [0, 1]."""
    from portraitrig.methods.video.condition import Conditioner
    from portraitrig.methods.video.config import VideoNetConfig
    from portraitrig.render.portrait import relight_image

    p = params.to("cpu", torch.float32)
    cond = Conditioner(VideoNetConfig(image_size=data.size), "cpu")
    cond.set_prior(person.mean(0, keepdim=True))
    face = cond.face(p)
    normals = cond.normals(face, person)
    img = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    relit = relight_image(img, normals, person, p.light, lights.float(), face_mask=cond.face_mask(face))
    return light_errors(lights, fit_all([u8(x) for x in relit])), relit


def source_video(params_file: Path) -> Path | None:
    """The video a fitted rig file was made from (its frames' sources, ``VIDEO#frame=N``), when
    that video is on this machine; else None."""
    from portraitrig.face.params import RigParams
    from portraitrig.io.sources import split_frame_source

    if not params_file.is_file():
        return None
    sources = RigParams.load(params_file).sources
    frame = split_frame_source(sources[0]) if sources else None
    return Path(frame[0]) if frame is not None and Path(frame[0]).is_file() else None


def central_square(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3): the image's central square, resized (area) to ``size``."""
    import cv2

    h, w = image.shape[:2]
    k = min(h, w)
    y, x = (h - k) // 2, (w - k) // 2
    return cv2.resize(np.ascontiguousarray(image[y:y + k, x:x + k]), (size, size), interpolation=cv2.INTER_AREA)


#: the still background "far" from the person: FAR_PX further from every training frame's person
#: mask than :func:`background_mask`'s margin (a driven head placed beyond the target's own reaches
#: into the still background next to the person: flicker there is motion, not flicker)
FAR_PX = 20


def background_mask(data, margin: int = 0) -> np.ndarray:
    """(S, S) bool: crop pixels no training frame's person mask reaches (static background), 4 px
    from it, plus ``margin`` px."""
    import cv2

    reach = (data.masks.float().amax(0)[0] > 5).numpy().astype(np.uint8)
    k = 9 + 2 * margin
    return cv2.dilate(reach, np.ones((k, k), np.uint8)) == 0


def picture(d: Path, out: Path, driver_video: Path, rows: int = 4, seconds: float = 6.0, side: int = 192,
            size: int = 256) -> list[Path]:
    """The README's reenactment picture and clip from a run's reenactments (``out/reenact`` and
    ``out/reenact_orbit``, unpacked from reenact.tar): driver | target | the target performing
    the driver | the same under a light circling the head, each frame ``side`` px high. The
    driver's frames come from ``driver_video`` (the frames its fitted rig names), the target's
    from the clip's video. Writes ``out/reenact_picture.jpg`` (``rows`` frames spread over the
    reenactment) and ``out/reenact_picture.mp4`` (its first ``seconds``)."""
    from portraitrig.face.params import RigParams
    from portraitrig.io.media import VideoWriter, side_by_side
    from portraitrig.io.video import iter_video_frames, video_info
    from portraitrig.methods.video.data import VideoData

    req = RigParams.load(out / "reenact" / "params.safetensors")
    want = [int(s.rsplit("#frame=", 1)[1]) for s in req.sources]
    need = set(want)
    drv = {fr.index: fr.image for fr in iter_video_frames(driver_video) if fr.index in need}
    data = VideoData.load(d / f"target_{size}.safetensors")
    index = data.frame_index.tolist()
    T = len(req)
    tgt_need = {index[k % len(index)] for k in range(T)}
    tgt = {fr.index: fr.image for fr in iter_video_frames(d / "target.mp4") if fr.index in tgt_need}
    fps = video_info(out / "reenact" / "result.mp4").fps
    picks = set(np.linspace(0, T - 1, rows).round().astype(int).tolist())
    keep_video = int(round(seconds * fps))
    shown, frames_out = [], out / "reenact_picture.mp4"
    with VideoWriter(frames_out, fps, crf=26) as w:
        for k, (res, lit) in enumerate(zip(iter_video_frames(out / "reenact" / "result.mp4"),
                                           iter_video_frames(out / "reenact_orbit" / "result.mp4"))):
            if k >= T or (k >= keep_video and k > max(picks)):
                break
            row = side_by_side(drv[want[k]], tgt[index[k % len(index)]], res.image, lit.image, height=side)
            if k < keep_video:
                w.write(row)
            if k in picks:
                shown.append(row)
    jpg = out / "reenact_picture.jpg"
    write_image(jpg, np.concatenate(shown, 0))
    return [jpg, frames_out]


def table(res: dict) -> str:
    lines = [f"video renderer on {res['machine']}: {res['steps']} steps in {res['train_s']} s, "
             f"{res['frames_train']} train / {res['frames_heldout']} held-out frames ({res['metrics']})",
             "| measure | value |", "|---|---|"]
    for k, v in res["heldout_crop"].items():
        lines.append(f"| held-out crop {k} | {v} |")
    for k, v in res.get("heldout_crop_in_frame", {}).items():
        lines.append(f"| held-out crop inside the frame {k} | {v} |")
    for k, v in res["heldout_full_frame"].items():
        lines.append(f"| held-out full frame {k} | {v} |")
    for k, v in res.get("heldout_full_frame_person_paste", {}).items():
        lines.append(f"| held-out full frame, the person pasted {k} | {v} |")
    for size in ("fps_256", "fps_512"):
        for k, v in res.get(size, {}).items():
            lines.append(f"| {size[4:]}² {k} | {v} |")
    for name in ("reenact", "reenact_orbit", "relight_orbit"):
        if "frames" in res.get(name, {}):
            lines.append(f"| {name} {res[name]['frames']} frames (fits excluded) | {res[name]['seconds']} s |")
    return "\n".join(lines)


def end_to_end(model: Path, driver: Path, out: Path, workers: list[int], max_frames: int | None,
               device: str) -> dict:
    """The issue's end-to-end reenactment: a driver VIDEO (fitted in ``workers`` processes, MediaPipe
    on the CPU) through render, paste-back and H.264 with audio, timed as one call of
    :func:`portraitrig.apps.reenactjob.run_reenact` per worker count (the first run also loads
    the model and warms the GPU: it is run once more untimed first)."""
    from portraitrig.apps.reenactjob import ReenactConfig, run_reenact
    from portraitrig.io.video import video_info

    info = video_info(driver)
    res: dict = {"driver": str(driver), "driver_seconds": round(info.duration_s, 2), "driver_size": [info.width, info.height],
                 "driver_fps": info.fps, "runs": {}}
    run_reenact(model, driver, out / "e2e_warm", ReenactConfig(max_frames=8, device=device), progress=False, say=None)
    for w in workers:
        t = time.perf_counter()
        summary = run_reenact(model, driver, out / f"e2e_w{w}", ReenactConfig(workers=w, max_frames=max_frames,
                                                                              device=device), progress=False, say=None)
        res["runs"][str(w)] = {"seconds": round(time.perf_counter() - t, 2), "frames": summary.frames,
                               "driver_frames": summary.driver_frames, "held_frames": summary.held_frames}
    return res


def data_args(parser) -> None:
    """--dir (the clip's video data, from ``prepare``) and --out (a run's output folder)."""
    parser.add_argument("--dir", type=Path, default=Path(".devdata/video"))
    parser.add_argument("--out", type=Path, required=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--driver", type=Path)
    p.add_argument("--dir", type=Path, default=Path(".devdata/video"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--max-frames", type=int)
    q = sub.add_parser("run")
    q.add_argument("--dir", type=Path, default=Path(".devdata/video"))
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--minutes", type=float, default=5.0)
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    q.add_argument("--fps-frames", type=int, default=100, help="frames timed per speed measurement")
    q.add_argument("--reenact-frames", type=int, help="driver frames of the reenactment (default: all)")
    q.add_argument("--preset", help="video preset (default: the size's; tiny with --size 32 for a CPU check)")
    q.add_argument("--no-fps", action="store_true", help="leave out the speed figures (run `fps` later)")
    q.add_argument("--every", type=int, default=1,
                   help="bring back every k-th held-out render (the scores use them all; files back are limited)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the preset (train.lr=2e-4, light_augment=0.5, ...); "
                        "train.steps=N fixes the schedule's length (else sized to --minutes)")
    f = sub.add_parser("fps", help="render speed of OUT/run/model (after `run --no-fps`); adds to OUT/video.json")
    f.add_argument("--dir", type=Path, default=Path(".devdata/video"))
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--size", type=int, default=256)
    f.add_argument("--fps-frames", type=int, default=100)
    f.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    f.add_argument("--untrained", action="store_true",
                   help="time the preset's network with random weights, its inputs made from the clip's data "
                        "(no run needed; speed does not depend on the weights); creates OUT/video.json")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --untrained: override a setting of the preset (model.still_body=0, ...)")
    f.add_argument("--preset", help="with --untrained: the preset (default: the one named by --size)")
    e = sub.add_parser("e2e", help="a driver video reenacted end to end (fits in N processes) with OUT/run/model; "
                                   "adds to OUT/video.json (needs mediapipe and PyAV)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--driver", type=Path, required=True, help="a driver video (the issue: 10 s, 25 fps, 512²)")
    e.add_argument("--workers", default="1,8", help="fitting processes, comma-separated")
    e.add_argument("--max-frames", type=int)
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    c = sub.add_parser("score", help="CPU side: re-fits, identity, stability, relighting of a run's OUT")
    data_args(c)
    c.add_argument("--size", type=int, default=256)
    c.add_argument("--max-frames", type=int, default=150)
    g = sub.add_parser("picture", help="README picture and clip of a run's reenactments: driver | target | "
                                       "result | relit result (after untarring reenact.tar into OUT)")
    data_args(g)
    g.add_argument("--driver-video", type=Path, required=True, help="the driver video the run's driver was fitted on")
    g.add_argument("--rows", type=int, default=4)
    g.add_argument("--seconds", type=float, default=6.0)
    g.add_argument("--size", type=int, default=256)
    b = sub.add_parser("baseline", help="DiffusionRig with inversion on the same held-out frames")
    data_args(b)
    b.add_argument("--stage1-cache", type=Path, required=True, help="portraitrig prepare cache of the generic prior")
    b.add_argument("--minutes1", type=float, default=3.5)
    b.add_argument("--minutes2", type=float, default=2.0)
    b.add_argument("--size", type=int, default=256)
    b.add_argument("--steps", type=int, default=20, help="DDIM steps of inversion and decoding")
    b.add_argument("--every", type=int, default=1, help="invert every k-th held-out frame only")
    b.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                   help="the renderer's compiled bf16 path (default: on a GPU); --no-fast: plain fp32, "
                        "which skips ~2 min of compiling")
    b.add_argument("--preset1", help="diffusion preset of stage 1 (default stage1-SIZE)")
    b.add_argument("--preset2", help="diffusion preset of stage 2 (default stage2-SIZE)")
    b.add_argument("--batch-size", type=int, help="both stages' batch size (default: the presets')")
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.video, a.driver, a.dir, a.size, a.max_frames)
        return
    if a.cmd == "fps":
        from portraitrig.methods.video.data import VideoData

        data = VideoData.load(a.dir / f"target_{a.size}.safetensors")
        if a.untrained:
            preset = a.preset or str(a.size)
            size = int(preset) if preset.isdigit() else a.size          # the preset's image size
            res = {"machine": machine_name(), "untrained": True, "preset": preset, "overrides": a.set,
                   f"fps_{size}": untrained_fps(data, preset, a.device, dict(x.split("=", 1) for x in a.set),
                                                a.fps_frames)}
            write_json(a.out / "video.json", res)
            print(json.dumps(res))
            return
        res = json.loads((a.out / "video.json").read_text())
        res.update(speed(a.out / "run" / "model", data, a.device, a.fps_frames))
        write_json(a.out / "video.json", res)
        print(table(res))
        return
    if a.cmd == "e2e":
        path = a.out / "video.json"
        res = json.loads(path.read_text()) if path.is_file() else {}
        res["end_to_end"] = end_to_end(a.out / "run" / "model", a.driver, a.out, [int(w) for w in a.workers.split(",")],
                                       a.max_frames, a.device)
        write_json(path, res)
        print(json.dumps(res["end_to_end"], indent=1))
        return
    if a.cmd == "score":
        res = score(a.dir, a.out, a.size, a.max_frames)
        write_json(a.out / "score.json", res)
        print(json.dumps(res, indent=1))
        video = json.loads((a.out / "video.json").read_text()) if (a.out / "video.json").is_file() else None
        target_table(res, video).print()
        return
    if a.cmd == "picture":
        for path in picture(a.dir, a.out, a.driver_video, a.rows, a.seconds, size=a.size):
            print(path)
        return
    if a.cmd == "baseline":
        res = baseline(a.dir, a.out, a.stage1_cache, a.minutes1, a.minutes2, a.size, a.device, a.steps,
                       a.preset1, a.preset2, a.batch_size, every=a.every, fast=a.fast)
        write_json(a.out / "baseline.json", res)
        print(json.dumps(res))
        return
    res = run(a.dir, a.out, a.minutes, a.size, a.device, a.fps_frames, a.reenact_frames, a.preset, not a.no_fps,
              dict(x.split("=", 1) for x in a.set), a.every)
    write_json(a.out / "video.json", res)
    print(table(res))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
