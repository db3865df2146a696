"""The person-specific renderers on the same held-out frames of one clip, in the same pixels.

The video renderer (and its DiffusionRig baseline) render the clip's held-out frames in the
video's fixed crop at 256²; the Gaussian avatar renders them in its own per-frame crop at 512².
This script takes what their benchmarks brought back (``bench_video.py run`` / ``baseline``
with ``--every``, ``bench_avatar.py --method splat``), finds the source frames all of them
rendered, maps each avatar render into the video's crop (the 2D similarity between the two fits'
projected face meshes: the same face in both crops) and scores every renderer against the real
video crop on the same pixels: the person (the video data's person mask) where the avatar's crop
reaches, and inside the face mesh. Prints a table and writes ``same_frames.json`` to --out.

    python bench/bench_same_frames.py --video-dir .devdata/v6 --video-out V --splat-out S \\
        --frames .devdata/avatar_d6s3_512q.safetensors --out OUT   # [--baseline V/baseline]

V: the files of ``bench_video.py run`` (video.json, heldout_pred.npy); S: those of
``bench_avatar.py`` (renders.tar or its unpacked heldout/ folder, avatar.json).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch


def source_frame(src: str) -> int:
    return int(src.rsplit("#frame=", 1)[1])


def mesh_px(params, fm, size: int) -> np.ndarray:
    """(N, V, 2) the neutral-expression face mesh's vertices in crop pixels."""
    from portraitrig.face.base import posed_vertices, ndc_to_pixels

    p = params.to("cpu", torch.float32)
    p = p.replace(expression=torch.zeros_like(p.expression), gaze=torch.zeros_like(p.gaze))
    with torch.no_grad():
        return ndc_to_pixels(posed_vertices(fm, p)[..., :2], size).numpy().astype(np.float64)


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """The 2x3 similarity taking points src (V, 2) to dst (V, 2) in least squares
    (:func:`portraitrig.fit.geometry.similarity_transform` in the plane), and the RMS residual
    (pixels of dst)."""
    from portraitrig.fit.geometry import similarity_transform

    pad = lambda a: torch.from_numpy(np.pad(a, ((0, 0), (0, 1))))[None]  # noqa: E731  (z = 0)
    s, R, t = similarity_transform(pad(src), pad(dst))
    A = np.concatenate([float(s[0]) * R[0, :2, :2].numpy(), t[0, :2].numpy()[:, None]], 1)
    res = np.sqrt(np.mean(np.sum((src @ A[:, :2].T + A[:, 2] - dst) ** 2, 1)))
    return A, float(res)


def splat_renders(d: Path) -> list[np.ndarray]:
    """The avatar benchmark's held-out renders, in order (renders.tar or heldout/*.jpg)."""
    from PIL import Image

    if (d / "heldout").is_dir():
        return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((d / "heldout").glob("*.jpg"))]
    with tarfile.open(d / "renders.tar") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.name.startswith("heldout/") and m.name.endswith(".jpg"))
        return [np.asarray(Image.open(io.BytesIO(tar.extractfile(n).read())).convert("RGB")) for n in names]


def score(pred: np.ndarray, real: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of uint8 images on a boolean mask, pooled over the frames given."""
    d = (pred.astype(np.float64) - real.astype(np.float64)) / 255
    return float(10 * np.log10(1 / max(np.mean((d ** 2)[mask]), 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video-dir", type=Path, required=True, help="the clip's video data (bench_video.py prepare)")
    ap.add_argument("--video-out", type=Path, required=True, help="bench_video.py run's files")
    ap.add_argument("--baseline", type=Path, help="bench_video.py baseline's files (optional)")
    ap.add_argument("--splat-out", type=Path, required=True, help="bench_avatar.py's files (splat)")
    ap.add_argument("--frames", type=Path, required=True, help="the avatar frames file the splat trained on")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_avatar import heldout_idx
    from common import write_json
    from portraitrig.capture.align import warp_affine
    from portraitrig.face.model import load_default_model
    from portraitrig.methods.video.data import VideoData
    from portraitrig.neural.frames import Frames
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    vd = VideoData.load(a.video_dir / f"target_{a.size}.safetensors")
    n0, S = vd.n_train, vd.size
    preds = {}
    vjson = json.loads((a.video_out / "video.json").read_text())
    vk = vjson.get("heldout_saved_index", list(range(len(vd) - n0)))
    preds["video"] = dict(zip(vk, np.load(a.video_out / "heldout_pred.npy")))
    if a.baseline is not None:
        bk = json.loads((a.baseline / "baseline.json").read_text()).get("heldout_index", list(range(len(vd) - n0)))
        preds["diffusion"] = dict(zip(bk, np.load(a.baseline / "baseline_pred.npy")))
    # the avatar's held-out renders and their source frames
    fr = Frames.load(a.frames)
    _, held = fr.split(0.2)
    hsub = fr.subset(held)
    idx = heldout_idx(len(hsub))
    renders = splat_renders(a.splat_out)
    if len(renders) != len(idx):
        raise SystemExit(f"{len(renders)} avatar renders, but {len(idx)} held-out frames expected")
    by_frame = {source_frame(hsub.params.sources[i]): (j, i) for j, i in enumerate(idx)}
    # video held-out k -> source frame
    vframe = {int(vd.frame_index[n0 + k]): k for k in preds["video"]}
    common = sorted(f for f in vframe if f in by_frame and all(vframe[f] in p for p in preds.values()))
    if not common:
        raise SystemExit("no held-out frame was rendered by every renderer")
    real = vd.crops()
    rows = {name: [] for name in list(preds) + ["splat"]}
    reals, person, face, residuals = [], [], [], []
    for f in common:
        k = vframe[f]
        j, i = by_frame[f]
        A, res = similarity(mesh_px(hsub.params[i:i + 1], fm, fr.size)[0], mesh_px(vd.params[n0 + k:n0 + k + 1], fm, S)[0])
        residuals.append(res)
        warped = warp_affine(renders[j], A, (S, S))
        inside = warp_affine(np.full(renders[j].shape[:2], 255, np.uint8), A, (S, S)) > 250
        rows["splat"].append(warped)
        for name, p in preds.items():
            rows[name].append(p[k])
        reals.append(real[n0 + k].permute(1, 2, 0).numpy())
        person.append((vd.masks[n0 + k, 0].numpy() > 127) & inside)
        with torch.no_grad():
            m = render_buffers(vd.params[n0 + k:n0 + k + 1], fm, size=S, names=("mask",))["mask"][0, 0].numpy() > 0.5
        face.append(m & inside)
    R, P, Fm = np.stack(reals), np.stack(person), np.stack(face)
    out = {"frames": len(common), "source_frames": common, "crop": f"the video's fixed crop at {S}²",
           "splat_to_video_crop_residual_px": round(float(np.mean(residuals)), 2),
           "pixels": {"person_share": round(float(P.mean()), 3), "face_share": round(float(Fm.mean()), 3)}}
    for name, imgs in rows.items():
        X = np.stack(imgs)
        out[name] = {"psnr_person": round(score(X, R, P), 2), "psnr_face_mesh": round(score(X, R, Fm), 2),
                     "psnr_person_outside_face": round(score(X, R, P & ~Fm), 2)}
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "same_frames.json", out)
    print(f"{len(common)} common held-out frames ({S}² video crop; avatar renders mapped in with "
          f"{out['splat_to_video_crop_residual_px']} px RMS mesh residual)")
    print("| renderer | person | face mesh | person outside the face mesh |\n|---|---|---|---|")
    for name in rows:
        r = out[name]
        print(f"| {name} | {r['psnr_person']} dB | {r['psnr_face_mesh']} dB | {r['psnr_person_outside_face']} dB |")


if __name__ == "__main__":
    main()
