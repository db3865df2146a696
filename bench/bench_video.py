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
then on the GPU machine (bench/device/video.sh)::

    python bench/bench_video.py run --dir .devdata/video --out OUT --minutes 5
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

from portraitrig.config import to_dict
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


def u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def metrics_fn():
    """(name, fn(generated, reference, mask) -> dict): scikit-image's (portraitrig.eval.image)
    where installed, else the same uniform-window SSIM in torch."""
    try:
        from portraitrig.eval.image import image_metrics

        return "portraitrig.eval.image", image_metrics
    except ImportError:
        from portraitrig.methods.video.method import ssim_torch

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


def render_fps(r, params, n: int = 100) -> dict:
    """Frames per second of rendering a sequence frame by frame (batch 1, r.stream: rig buffers,
    whole-portrait normals, network), fp32 and bf16 network; fits excluded. ``net_fps``: the
    network alone."""
    dev = r.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    for mode in ("fp32", "bf16") if dev.type == "cuda" else ("fp32",):
        if mode == "bf16":
            r.use_half()
        seq = params[:n].to(dev)
        stream = r.stream()
        for i in range(min(5, len(seq))):
            stream(seq[i:i + 1])
        sync()
        t = time.perf_counter()
        stream = r.stream()
        for i in range(len(seq)):
            stream(seq[i:i + 1])
        sync()
        out[f"fps_{mode}"] = round(len(seq) / (time.perf_counter() - t), 1)
        x = torch.zeros(1, r.config.in_channels, r.size, r.size, device=dev, dtype=r.dtype)
        for _ in range(5):
            r.net(x)
        sync()
        t = time.perf_counter()
        for _ in range(50):
            r.net(x)
        sync()
        out[f"net_fps_{mode}"] = round(50 / (time.perf_counter() - t), 1)
    return out


def run(d: Path, out: Path, minutes: float, size: int, device: str, fps_frames: int = 100,
        reenact_frames: int | None = None) -> dict:
    from portraitrig.apps.reenactjob import ReenactConfig, border_mask, paste_frame, run_reenact
    from portraitrig.io.video import iter_video_frames
    from portraitrig.light import sh
    from portraitrig.methods.video.config import PRESETS
    from portraitrig.methods.video.data import VideoData
    from portraitrig.methods.video.method import VideoMethod
    from portraitrig.methods.video.model import VideoNet
    from portraitrig.methods.video.renderer import VideoRenderer
    from portraitrig.render.buffers import render_buffers
    from portraitrig.training.loop import train

    out.mkdir(parents=True, exist_ok=True)
    data = VideoData.load(d / f"target_{size}.safetensors")
    video = d / "target.mp4"
    cfg = PRESETS[str(size)]()
    cfg.train.steps, cfg.train.time_limit, cfg.train.ckpt_every = 200_000, minutes, 100_000
    cfg.train.schedule, cfg.train.sample_every = "constant", 1000
    t = time.time()
    model = train(VideoMethod(cfg, data, device), cfg.train, out / "run", config=to_dict(cfg), progress=False)
    log = [json.loads(x) for x in (out / "run" / "log.jsonl").read_text().splitlines()]
    res = {"machine": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
           "train_s": round(time.time() - t, 1), "steps": max(rec.get("step", 0) for rec in log),
           "final_loss": log[-1].get("loss"), "frames_train": data.n_train, "frames_heldout": len(data) - data.n_train}
    r = VideoRenderer.from_pretrained(model, device=device)
    # ---------------------------------------------------- held-out self-reenactment
    n0 = data.n_train
    held = data.params[n0:]
    ctx = data.params[max(0, n0 - 2):n0]
    with torch.no_grad():
        pred = r.render(held, context=ctx).cpu()
        face = render_buffers(held.to(device), r.face_model, size=size, names=("mask",))["mask"].cpu()
    crops = data.crops()[n0:]
    name, metric = metrics_fn()
    per_crop, per_frame = [], []
    S = data.size
    mask = border_mask(S, 0.08)
    ring = ((mask > 0.02) & (mask < 0.6)).astype(np.float32)
    frames = {fr.index: fr.image for fr in iter_video_frames(video) if fr.index in set(data.frame_index[n0:].tolist())}
    for k in range(len(held)):
        g, ref = u8(pred[k]), crops[k].permute(1, 2, 0).numpy()
        per_crop.append(metric(g, ref, face[k, 0].numpy()))
        fi = int(data.frame_index[n0 + k])
        if fi in frames:
            full = paste_frame(frames[fi], g, data.crop, mask, ring)
            per_frame.append(metric(full, frames[fi]))
    mean = lambda rows, key: round(float(np.mean([x[key] for x in rows])), 3) if rows else None  # noqa: E731
    res["metrics"] = name
    res["heldout_crop"] = {k: mean(per_crop, k) for k in per_crop[0]}
    res["heldout_full_frame"] = {k: mean(per_frame, k) for k in (per_frame[0] if per_frame else {})}
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
    res["fps_256"] = render_fps(VideoRenderer.from_pretrained(model, device=device), data.params, fps_frames)
    if torch.cuda.is_available():
        big = PRESETS["512"]().model
        net = VideoNet(big)
        net.person_prior.copy_(torch.nn.functional.interpolate(r.net.person_prior.float().cpu(), size=(512, 512)))
        res["fps_512"] = render_fps(VideoRenderer(net, device=device), data.params, fps_frames)
    # ---------------------------------------------------- reenactment with a light orbit
    drv = d / "driver.safetensors"
    if drv.is_file():
        t = time.time()
        try:  # the reenactment writes H.264 through PyAV: the benchmark's other figures stand without it
            s = run_reenact(model, drv, out / "reenact", ReenactConfig(light="left", light_orbit=4.0, audio="target",
                                                                       target_video=str(video), device=device,
                                                                       max_frames=reenact_frames),
                            progress=False, say=None)
            res["reenact"] = {"frames": s.frames, "seconds": round(time.time() - t, 1), "background": s.background}
            (out / "reenact" / "compare.mp4").rename(out / "reenact_compare.mp4")
        except Exception as exc:  # noqa: BLE001
            res["reenact"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    return res


def table(res: dict) -> str:
    lines = [f"video renderer on {res['machine']}: {res['steps']} steps in {res['train_s']} s, "
             f"{res['frames_train']} train / {res['frames_heldout']} held-out frames ({res['metrics']})",
             "| measure | value |", "|---|---|"]
    for k, v in res["heldout_crop"].items():
        lines.append(f"| held-out crop {k} | {v} |")
    for k, v in res["heldout_full_frame"].items():
        lines.append(f"| held-out full frame {k} | {v} |")
    for size in ("fps_256", "fps_512"):
        for k, v in res.get(size, {}).items():
            lines.append(f"| {size[4:]}² {k} | {v} |")
    if "reenact" in res:
        lines.append(f"| reenact {res['reenact']['frames']} frames | {res['reenact']['seconds']} s |")
    return "\n".join(lines)


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
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.video, a.driver, a.dir, a.size, a.max_frames)
        return
    res = run(a.dir, a.out, a.minutes, a.size, a.device, a.fps_frames, a.reenact_frames)
    write_json(a.out / "video.json", res)
    print(table(res))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
