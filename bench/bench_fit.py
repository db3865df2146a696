#!/usr/bin/env python
"""Benchmark of the geometry fit (landmarks -> RigParams).

(1) Speed on one CPU core (torch.set_num_threads(1)): fit_landmarks per image at batch 1 and
    batched, excluding decoding and MediaPipe; MediaPipe Face Mesh time per image separately.
(2) Accuracy on real data: MediaPipe landmarks of photos and video frames (every --stride-th),
    FFHQ-aligned crop, fit, and the fitted model's projected landmarks vs MediaPipe's: mean 2D
    error in % of the inter-ocular distance (iris centres), per set, for people held out from
    the basis learning and for all; success = face found and fit error <= 3%. The worst cases
    are drawn (green: MediaPipe, red: fit) into --out.

Usage: python bench/bench_fit.py [--data ../shared/data/faces] [--stride 5] [--out runs/bench_fit]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from portraitrig.capture.align import align_face
from portraitrig.capture.detector import MediaPipeFaceMesh
from portraitrig.errors import InputError
from portraitrig.face.model import DEFAULT_PATH, load_default_model
from portraitrig.fit.geometry import fit_landmarks, landmark_error, landmarks_ndc
from portraitrig.io.atomic import write_image, write_json
from portraitrig.io.images import read_image
from portraitrig.io.video import iter_video_frames

ROOT = Path(__file__).resolve().parents[1]
CROP = 256
SUCCESS_PCT = 3.0


def crop_ndc(aligned) -> np.ndarray:
    p = aligned.landmarks.points.astype(np.float64)
    return np.concatenate([p[:, :2] * (2 / CROP) - 1, p[:, 2:] * (2 / CROP)], 1)


def collect(data: Path, stride: int, max_frames: int | None):
    """Yield (set, source, aligned face or None, MediaPipe seconds) for photos and frames."""
    det = MediaPipeFaceMesh()
    for photo in sorted(p for p in (data / "photos").glob("*/*") if p.suffix.lower() in (".jpg", ".png")):
        img = read_image(photo)
        t = time.perf_counter()
        found = det.detect(img)
        dt = time.perf_counter() - t
        yield f"photos/{photo.parent.name}", f"photos/{photo.parent.name}/{photo.name}", \
            (align_face(img, found[0], CROP) if found else None), dt
    for clip in sorted((data / "videos").glob("*.mp4")):
        vdet = MediaPipeFaceMesh(video=True)
        for fr in iter_video_frames(clip, stride=stride, max_frames=max_frames):
            t = time.perf_counter()
            found = vdet.detect(fr.image)
            dt = time.perf_counter() - t
            yield f"videos/{clip.name}", f"videos/{clip.name}#frame={fr.index}", \
                (align_face(fr.image, found[0], CROP) if found else None), dt
        vdet.close()


def speed(model, pts: torch.Tensor, reps: int) -> dict:
    torch.set_num_threads(1)
    one = pts[:1]
    fit_landmarks(one, model)                      # warm-up (builds the cached solver)
    t = time.perf_counter()
    for _ in range(reps):
        fit_landmarks(one, model)
    b1 = (time.perf_counter() - t) / reps
    batch = pts[torch.arange(64) % len(pts)]
    t = time.perf_counter()
    for _ in range(max(1, reps // 20)):
        fit_landmarks(batch, model)
    b64 = (time.perf_counter() - t) / max(1, reps // 20) / 64
    t = time.perf_counter()
    for _ in range(max(1, reps // 20)):
        fit_landmarks(batch, model, shared_identity=True)
    sh = (time.perf_counter() - t) / max(1, reps // 20) / 64
    return {"fit_ms_per_image_batch1": 1000 * b1, "fit_ms_per_image_batch64": 1000 * b64,
            "fit_ms_per_image_batch64_shared_identity": 1000 * sh}


def overlay(aligned, pred_ndc: np.ndarray) -> np.ndarray:
    import cv2

    img = cv2.resize(aligned.image, (CROP * 2, CROP * 2), interpolation=cv2.INTER_CUBIC)
    for pts, col in ((aligned.landmarks.points[:, :2], (0, 255, 0)), ((pred_ndc[:, :2] + 1) * CROP / 2, (255, 0, 0))):
        for x, y in pts * 2:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, col, -1, lineType=cv2.LINE_AA)
    return img


def summarise(rows: list[dict]) -> dict:
    found = [r for r in rows if r["error"] is not None]
    err = np.array([r["error"] for r in found]) if found else np.zeros(0)
    ok = err <= SUCCESS_PCT
    return {"items": len(rows), "faces": len(found), "success_rate": float(ok.sum() / max(len(rows), 1)),
            "mean_error_pct_iod": float(err.mean()) if len(err) else None,
            "median_error_pct_iod": float(np.median(err)) if len(err) else None,
            "p95_error_pct_iod": float(np.percentile(err, 95)) if len(err) else None,
            "max_error_pct_iod": float(err.max()) if len(err) else None,
            "faces_over_3pct": int((~ok).sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/faces")
    ap.add_argument("--stride", type=int, default=5, help="video frame stride")
    ap.add_argument("--max-frames", type=int, default=None, help="per clip, after the stride")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench_fit")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        raise InputError(args.data, "data folder not found")
    model = load_default_model()
    prov = json.loads(DEFAULT_PATH.with_suffix(".json").read_text())
    held = {h["source"] for h in prov["held_out"]}

    rows, keep, mp_time = [], [], {"photos": [], "videos": []}
    for set_name, source, aligned, dt in collect(args.data, args.stride, args.max_frames):
        mp_time[set_name.split("/")[0]].append(dt)
        base = source.split("#")[0]
        row = {"set": set_name, "source": source, "held_out": base in held, "error": None}
        if aligned is not None:
            row["ndc"] = crop_ndc(aligned)
            keep.append(aligned)
            row["k"] = len(keep) - 1
        rows.append(row)
    found = [r for r in rows if "ndc" in r]
    pts = torch.from_numpy(np.stack([r["ndc"] for r in found]))
    params = fit_landmarks(pts, model)
    err = landmark_error(params, model, pts).numpy()
    pred = landmarks_ndc(params, model).detach().numpy()
    for i, r in enumerate(found):
        r["error"], r["i"] = float(err[i]), i
    # one identity per clip (how the pipeline fits a video)
    shared = {}
    for clip in sorted({r["set"] for r in found if r["set"].startswith("videos/")}):
        idx = [i for i, r in enumerate(found) if r["set"] == clip]
        p = fit_landmarks(pts[idx], model, shared_identity=True)
        e = landmark_error(p, model, pts[idx]).numpy()
        shared[clip] = {"mean_error_pct_iod": float(e.mean()), "max_error_pct_iod": float(e.max())}

    report = {"machine": "CPU, torch.set_num_threads(1) for speed", "model": model.id,
              "n_id": model.n_id, "n_expr": model.n_expr, "video_stride": args.stride}
    report["speed"] = speed(model, pts, args.reps)
    report["speed"].update({f"mediapipe_ms_per_{k}": 1000 * float(np.mean(v)) for k, v in mp_time.items() if v})
    report["all"] = summarise(rows)
    report["held_out_people"] = summarise([r for r in rows if r["held_out"]])
    report["training_people"] = summarise([r for r in rows if not r["held_out"]])
    report["per_set"] = {s: summarise([r for r in rows if r["set"] == s]) for s in sorted({r["set"] for r in rows})}
    report["per_clip_shared_identity"] = shared
    frontal = [i for i, r in enumerate(found) if r["set"].startswith("photos/celebahq")]
    if frontal:
        report["ffhq_placement"] = {
            "model_default_scale": model.default_scale, "model_default_translation": list(model.default_translation),
            "median_fitted_scale_celebahq": float(params.scale[frontal].median()),
            "median_fitted_translation_celebahq": params.translation[frontal].median(0).values.tolist()}
    worst = sorted(found, key=lambda r: -r["error"])[:6]
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("worst_*.png"):       # pictures of an earlier run
        old.unlink()
    report["worst"] = []
    for n, r in enumerate(worst):
        name = f"worst_{n}_{r['source'].replace('/', '_').replace('#', '_')}.png"
        write_image(args.out / name, overlay(keep[r["k"]], pred[r["i"]]))
        report["worst"].append({"source": r["source"], "error_pct_iod": r["error"], "image": name})
    write_json(args.out / "bench_fit.json", report)

    print(f"speed (1 CPU thread): fit {report['speed']['fit_ms_per_image_batch1']:.2f} ms/image at batch 1, "
          f"{report['speed']['fit_ms_per_image_batch64']:.3f} ms/image at batch 64; MediaPipe "
          + ", ".join(f"{k} {v:.1f}" for k, v in report["speed"].items() if k.startswith("mediapipe")))
    print(f"{'set':34s} {'items':>6s} {'faces':>6s} {'success':>8s} {'mean%':>7s} {'p95%':>7s} {'max%':>7s}")
    for label, s in [("ALL", report["all"]), ("held-out people", report["held_out_people"]),
                     ("training people", report["training_people"])] + list(report["per_set"].items()):
        print(f"{label:34s} {s['items']:6d} {s['faces']:6d} {100 * s['success_rate']:7.1f}% "
              f"{s['mean_error_pct_iod'] or 0:7.3f} {s['p95_error_pct_iod'] or 0:7.3f} {s['max_error_pct_iod'] or 0:7.3f}")
    print("shared identity per clip:", {k: round(v["mean_error_pct_iod"], 3) for k, v in shared.items()})
    print("worst:", [(w["source"], round(w["error_pct_iod"], 2)) for w in report["worst"]])
    print(f"wrote {args.out / 'bench_fit.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
