"""Avatar benchmark: train on a clip's first 80 % (a prepared frames file), then on the held-out
20 %: PSNR / SSIM (whole crop and masked to the person), render speed at 256² and 512² (with and
without the occupancy grid), a turntable picture (+-30 deg yaw, +-15 deg pitch), and the spatial
prior's ablation (a second run without it): how much the background and the face change when
only the expression changes. Prints a table, writes ``avatar.json`` and pictures to --out.

    python bench/bench_avatar.py --frames .devdata/avatar_d10_256.safetensors --out OUT \
        --minutes 3.5 --ablation-minutes 3.5 --device cuda

Make the frames file where mediapipe is installed (fit + segmentation), e.g.
``load_frames(VIDEO, 256, stride=2, max_frames=200, cache=FILE)`` of
:mod:`portraitrig.methods.avatar.data`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from portraitrig.config import to_dict
from portraitrig.io.atomic import write_image, write_json
from portraitrig.methods.avatar.config import PRESETS
from portraitrig.methods.avatar.data import Frames
from portraitrig.methods.avatar.method import AvatarMethod
from portraitrig.methods.avatar.renderer import AvatarRenderer
from portraitrig.training.loop import train


def run(frames: Frames, out: Path, minutes: float, device, use_prior: bool, name: str,
        preset: str = "256") -> tuple[Path, dict]:
    cfg = PRESETS[preset]()
    cfg.model = dataclasses.replace(cfg.model, use_prior=use_prior)
    cfg.train = dataclasses.replace(cfg.train, steps=200_000, time_limit=minutes, schedule="constant",
                                    sample_every=1000, ckpt_every=100_000)
    cfg.anneal_steps = min(cfg.anneal_steps, 1500)
    t = time.time()
    m = AvatarMethod.create(cfg, frames, device)
    model = train(m, cfg.train, out / name, config=to_dict(cfg), progress=False)
    log = [json.loads(x) for x in (out / name / "log.jsonl").read_text().splitlines()]
    steps = max((r.get("step", 0) for r in log), default=0)
    last = [r for r in log if "photo" in r][-5:]
    return model, {"train_s": round(time.time() - t, 1), "steps": steps,
                   "final_train_psnr": round(float(np.mean([r["psnr"] for r in last])), 2) if last else None}


def u8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def heldout_metrics(r: AvatarRenderer, held: Frames, out: Path, n_max: int = 40) -> dict:
    try:
        from portraitrig.eval.image import image_metrics
    except ImportError as exc:  # scikit-image missing on the machine
        return {"error": f"portraitrig.eval.image unavailable: {exc}"}
    idx = np.linspace(0, len(held) - 1, min(n_max, len(held))).round().astype(int).tolist()
    rows, mets = [], []
    for k, i in enumerate(idx):
        gen = u8(r.render(held.params[i:i + 1])[0])
        ref = held.images[i].numpy()
        mask = held.masks[i].numpy().astype(np.float64) / 255
        mets.append(image_metrics(gen, ref, mask))
        if k < 4:
            rows.append(np.concatenate([gen, ref], 1))
    write_image(out / "heldout.png", np.concatenate(rows, 0))
    keys = mets[0].keys()
    return {"n": len(idx), **{k: round(float(np.mean([m[k] for m in mets])), 4) for k in keys}}


def fps(r: AvatarRenderer, params, size: int, occupancy: bool, n: int = 5) -> float:
    sync = torch.cuda.synchronize if r.device.type == "cuda" else (lambda: None)
    r.render(params, size=size, occupancy=occupancy)
    sync()
    t = time.perf_counter()
    for _ in range(n):
        r.render(params, size=size, occupancy=occupancy)
    sync()
    return round(n / (time.perf_counter() - t), 2)


def turntable(r: AvatarRenderer, params, out: Path) -> list:
    from portraitrig.apps.avatarjob import orbit_views

    views = [(0.0, 0.0), (-30.0, 0.0), (30.0, 0.0), (0.0, -15.0), (0.0, 15.0)] + orbit_views(8, 30, 15)[1:4]
    imgs, notes = r.render_views(params, views)
    write_image(out / "turntable.png", np.concatenate([u8(x) for x in imgs], 1))
    return notes


def expression_change(r: AvatarRenderer, params, out: Path, name: str) -> dict:
    """Mean absolute pixel change (0..255) outside / inside the face (its mesh mask dilated by
    5 % of the crop) when only the expression changes (smile 1, jaw open 0.6)."""
    from portraitrig.edits import set_expression
    from portraitrig.render.buffers import render_buffers

    fm = r.face_model
    p0 = params.to(r.device)
    p1 = set_expression(p0, model=fm, smile=1.0, jaw_open=0.6)
    a, b = r.render(p0)[0], r.render(p1)[0]
    S = r.size
    dilate = max(1, S // 20)
    m = torch.maximum(render_buffers(p0, fm, S, ("mask",))["mask"], render_buffers(p1, fm, S, ("mask",))["mask"])
    face = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)[0, 0] > 0
    diff = (a - b).abs().mean(0) * 255
    write_image(out / f"expression_{name}.png", np.concatenate([u8(a), u8(b), u8(diff[None].expand(3, -1, -1) / 64)], 1))
    return {"background_change": round(float(diff[~face].mean()), 3), "face_change": round(float(diff[face].mean()), 3),
            "background_pixels_changed_gt2": round(float((diff[~face] > 2).float().mean()), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=3.5)
    ap.add_argument("--ablation-minutes", type=float, default=3.5, help="0: no ablation run")
    ap.add_argument("--fps-sizes", default="256,512", help="render sizes timed (comma-separated)")
    ap.add_argument("--heldout-max", type=int, default=40, help="held-out frames evaluated")
    ap.add_argument("--preset", default="256", help="tiny: a smoke test of this script on the CPU")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    frames = Frames.load(a.frames)
    tr, held_idx = frames.split(0.2)
    held = frames.subset(held_idx)
    res = {"machine": platform.node(), "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
           "torch": torch.__version__, "frames": len(frames), "train_frames": len(tr), "held_out": len(held),
           "source": frames.source}
    model, res["train"] = run(frames, out / "runs", a.minutes, a.device, True, "prior", a.preset)
    r = AvatarRenderer.from_pretrained(model, device=a.device)
    res["trusted_view_deg"] = {"yaw": r.config.trusted_yaw, "pitch": r.config.trusted_pitch}
    res["occupied_share"] = round(float(r.model.occupancy.float().mean()), 4)
    res["heldout"] = heldout_metrics(r, held, out, a.heldout_max)
    p = held.params[0:1]
    sizes = [int(v) for v in a.fps_sizes.split(",")]
    res["fps"] = {str(s): fps(r, p, s, True) for s in sizes}
    res["fps"][f"{sizes[0]}_dense"] = fps(r, p, sizes[0], False, 2)
    fast, dense = r.render(p), r.render(p, occupancy=False)
    res["occupancy_vs_dense_mean_abs_255"] = round(float((fast - dense).abs().mean() * 255), 4)
    res["fps_note"] = "one 1-item render call per frame, batch 1, samples per ray: " + str(r.config.samples)
    res["turntable_notes"] = turntable(r, p, out)
    res["ablation"] = {"prior": expression_change(r, p, out, "prior")}
    if a.ablation_minutes > 0:
        model2, res["train_no_prior"] = run(frames, out / "runs", a.ablation_minutes, a.device, False, "no_prior", a.preset)
        r2 = AvatarRenderer.from_pretrained(model2, device=a.device)
        res["ablation"]["no_prior"] = expression_change(r2, p, out, "no_prior")
        res["heldout_no_prior"] = heldout_metrics(r2, held, out / "no_prior", a.heldout_max)
    write_json(out / "avatar.json", res)
    print(json.dumps(res, indent=1))
    for k in ("runs/prior/samples", "runs/no_prior/samples"):
        pics = sorted((out / k).glob("*.png")) if (out / k).is_dir() else []
        for q in pics[:-1]:
            q.unlink()  # keep the newest sample picture only


if __name__ == "__main__":
    main()
