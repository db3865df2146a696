"""Avatar benchmark (``--method avatar``: the radiance field; ``splat``: the Gaussians): train on
a clip's first 80 % (a prepared frames file), then on the held-out 20 %: PSNR / SSIM (the crop's
part inside the video frame, masked to the person there, and the person alone over black, the
anchors' protocol), the opacity against the person mask, render speed at 256² and 512², a turntable picture (+-30 deg yaw,
+-15 deg pitch), and the spatial prior's ablation (a second run without it): how much the
background and the face change when only the expression changes. Prints a table, writes
``avatar.json``, pictures and ``renders.tar`` (held-out renders, turntable views and, with
``--driver PARAMS``, frames driven by another clip's fitted rig, each with its requested rig) to
--out. ``--score OUT`` then re-fits those renders where mediapipe and dlib are installed (head
pose of the views against the requested and against the same re-fit of the rig's own mesh turned
the same way (``views_floor``, ``views_vs_floor_deg``), expression of the driven frames against the
real-frame floor, identity against the same-person level), breaks the held-out error down (inside the face
mesh / the person mask's outline band / the rest of the person; how much a global misplacement
explains), scores the oracle of replaying the best training frame for each held-out frame
(``heldout_replay_oracle``, :func:`common.replay_oracle`) and adds ``score.json``.

    python bench/bench_avatar.py --frames .devdata/avatar_d10_256.safetensors --out OUT \
        --minutes 3.5 --ablation-minutes 3.5 --device cuda
    python bench/bench_avatar.py --method splat --frames FRAMES --driver DRIVER_PARAMS --out OUT --minutes 5
    python bench/bench_avatar.py --score OUT --frames FRAMES
    python bench/bench_avatar.py --oracle --frames FRAMES   # no model: how far replaying the clip goes

Make the frames file where mediapipe is installed (fit + segmentation), e.g.
``load_frames(VIDEO, 256, stride=2, max_frames=200, cache=FILE)`` of
:mod:`portraitrig.neural.frames`.
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

from portraitrig.config import set_from_text, to_dict
from portraitrig.face.params import RigParams
from portraitrig.io.atomic import write_image, write_json
from portraitrig.methods import METHODS, load_renderer
from portraitrig.neural.frames import Frames
from portraitrig.training.loop import train

from common import (EDGE_BAND_PX, budget_schedule, by_condition_range, face_masks, mask_edge_band, replay_oracle,
                    steps_per_second, vertex_colours)


def run(frames: Frames, out: Path, minutes: float, device, use_prior: bool, name: str,
        preset: str = "256", method: str = "avatar", overrides: dict | None = None) -> tuple[Path, dict]:
    mod = METHODS[method].module()
    try:
        cfg = set_from_text(mod.PRESETS[preset](), overrides or {})
    except ValueError as exc:
        raise SystemExit(f"bench_avatar: --set: {exc}") from None
    cfg.model = dataclasses.replace(cfg.model, use_prior=use_prior)
    t = time.time()
    extra = {}
    if method == "splat":  # a cosine schedule sized to the time budget (Gaussians need the decay)
        m = mod.Method.create(cfg, frames, device)
        rate = steps_per_second(m, cfg)
        steps, limit = budget_schedule(rate, minutes)
        if "train.steps" in (overrides or {}):   # a fixed schedule (runs sharing a GPU compared step for step)
            steps = cfg.train.steps
        cfg.train = dataclasses.replace(cfg.train, steps=steps, time_limit=limit, sample_every=2000,
                                        ckpt_every=100_000)
        extra = {"steps_per_s": round(rate, 1), "schedule_steps": steps}
    else:
        cfg.train = dataclasses.replace(cfg.train, steps=200_000, time_limit=minutes, schedule="constant",
                                        sample_every=1000, ckpt_every=100_000)
        cfg.anneal_steps = min(cfg.anneal_steps, 1500)
        m = mod.Method.create(cfg, frames, device)
    model = train(m, cfg.train, out / name, config=to_dict(cfg), progress=False)
    log = [json.loads(x) for x in (out / name / "log.jsonl").read_text().splitlines()]
    steps = max((r.get("step", 0) for r in log), default=0)
    last = [r for r in log if "psnr" in r][-5:]
    return model, {**extra, "train_s": round(time.time() - t, 1), "steps": steps,
                   "final_train_psnr": round(float(np.mean([r["psnr"] for r in last])), 2) if last else None}


def u8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def heldout_metrics(r, held: Frames, out: Path, n_max: int = 40, keep: list | None = None) -> dict:
    """Held-out PSNR / SSIM of the crop's part inside the video frame (``psnr``; the crop's mirrored
    padding past the frame's edge is no one's image: ``psnr_with_padding`` counts it as the
    figures before 2026-12-01 did), masked to the person there (``psnr_masked``), of the person
    alone over black (:func:`black_background_metrics`), and the opacity against the person mask."""
    try:
        from portraitrig.eval.image import image_metrics
    except ImportError as exc:  # scikit-image missing on the machine
        return {"error": f"portraitrig.eval.image unavailable: {exc}"}
    idx = heldout_idx(len(held), n_max)
    rows, mets = [], []
    in_frame = held.in_frame()
    for k, i in enumerate(idx):
        gen = u8(r.render(held.params[i:i + 1])[0])
        if keep is not None:
            keep.append(gen)
        ref = held.images[i].numpy()
        v = in_frame[i].numpy().astype(np.float64)
        mask = held.masks[i].numpy().astype(np.float64) / 255 * v
        rgba = r.render(held.params[i:i + 1], background="none", rgba=True)[0]     # straight colour + opacity
        alpha = rgba[3].cpu().numpy().astype(np.float64)
        inter, union = ((alpha > 0.5) & (mask > 0.5)).sum(), (((alpha > 0.5) | (mask > 0.5)) & (v > 0)).sum()
        crop, person = image_metrics(gen, ref, v), image_metrics(gen, ref, mask)
        mets.append({"psnr": crop["psnr_masked"], "ssim": crop["ssim_masked"],
                     "psnr_masked": person["psnr_masked"], "ssim_masked": person["ssim_masked"],
                     "psnr_with_padding": crop["psnr"], "in_frame_share": float(v.mean()),
                     **black_background_metrics(u8(rgba[:3] * rgba[3:]), ref, mask, v),
                     "alpha_vs_mask_mae": float((np.abs(alpha - mask) * v).sum() / max(1.0, v.sum())),
                     "alpha_iou": float(inter / max(1, union))})
        if k < 4:
            rows.append(np.concatenate([gen, ref], 1))
    write_image(out / "heldout.png", np.concatenate(rows, 0))
    keys = mets[0].keys()
    return {"n": len(idx), **{k: round(float(np.mean([m[k] for m in mets])), 4) for k in keys}}


def black_background_metrics(gen_black: np.ndarray, ref: np.ndarray, mask: np.ndarray,
                             valid: np.ndarray | None = None) -> dict:
    """The protocol of the anchors' dataset (INSTA's, on which the issue's 27-30.6 dB were
    reported): the real frame's background removed with its person mask (``ref`` x ``mask``), the
    avatar rendered over black (``gen_black``: no learned background), PSNR / SSIM over the whole
    image (``valid``: over those pixels only, e.g. the crop's part inside the video frame). Pixels
    that both leave black count as exact, so the figure sits above the PSNR masked to the person
    (whose mean is over the person's pixels alone) by about 10 log10(1 / the person's share of
    the image) when the render's outline matches the mask's."""
    from portraitrig.eval.image import psnr, ssim

    real = (ref.astype(np.float64) * mask[..., None] + 0.5).astype(np.uint8)
    if valid is None:
        return {"psnr_black_bg": psnr(gen_black, real), "ssim_black_bg": ssim(gen_black, real),
                "person_share": float(mask.mean())}
    return {"psnr_black_bg": psnr(gen_black, real, valid), "ssim_black_bg": ssim(gen_black, real, valid),
            "person_share": float((mask * valid).sum() / max(1.0, valid.sum()))}


def fps(r, params, size: int, n: int = 5, **options) -> float:
    sync = torch.cuda.synchronize if r.device.type == "cuda" else (lambda: None)
    for _ in range(3):
        r.render(params, size=size, **options)
    sync()
    t = time.perf_counter()
    for _ in range(n):
        r.render(params, size=size, **options)
    sync()
    return round(n / (time.perf_counter() - t), 2)


VIEWS = [(0.0, 0.0), (-30.0, 0.0), (30.0, 0.0), (0.0, -15.0), (0.0, 15.0), (-30.0, -15.0), (30.0, 15.0),
         (-15.0, 0.0), (15.0, 0.0)]


def turntable(r, params, out: Path, renders: dict | None = None) -> list:
    imgs, notes = r.render_views(params, VIEWS)
    write_image(out / "turntable.png", np.concatenate([u8(x) for x in imgs[:7]], 1))
    if renders is not None:
        renders["views"] = ([u8(x) for x in imgs], RigParams.cat([r.view_params(params, y, p)[0] for y, p in VIEWS]))
    return notes


def mesh_views(params, image: np.ndarray, face_model, views, size: int) -> tuple[list[np.ndarray], "RigParams"]:
    """The floor of the novel-view pose measure: the rig's own mesh under ``params`` (one item),
    coloured per vertex from the real frame ``image`` (S, S, 3) uint8 where the frame shows the
    vertex (the z-buffer decides; hidden vertices take their seen neighbours' colours), turned by
    each (yaw, pitch) of ``views`` (:func:`portraitrig.edits.rotate_head`) and rendered over the
    frame's median colour. Its geometry is exactly the requested one, so the pose a re-fit misses
    on these renders is the re-fit's own error at that view. Returns (images, requested rigs)."""
    from portraitrig.edits import rotate_head
    from portraitrig.render.buffers import render_buffers

    p = params.to("cpu", torch.float32)
    img = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255
    p = p.replace(albedo=vertex_colours(p, image, face_model)[None])
    back = img[0].reshape(3, -1).median(1).values.view(1, 3, 1, 1)
    out, requested = [], []
    for yaw, pitch in views:
        q = rotate_head(p, yaw, pitch, model=face_model) if (yaw, pitch) != (0, 0) else p
        b = render_buffers(q, face_model, size=size, names=("albedo", "mask"))
        out.append(u8((b["mask"] * b["albedo"] + (1 - b["mask"]) * back)[0]))
        requested.append(q)
    return out, RigParams.cat(requested)


def driven(r, driver_params, out: Path, renders: dict, n_max: int = 100) -> dict:
    """Frames driven by another clip's fitted rig (relative to its first frame, from the
    avatar's reference rig), kept for the re-fit scores."""
    from portraitrig.apps.avatarjob import drive

    drv = RigParams.load(driver_params)[:n_max].to(r.device)
    req = drive(r.reference, drv, relative=True)
    imgs = torch.cat([r.render(req[a:a + 8]) for a in range(0, len(req), 8)])
    renders["driven"] = ([u8(x) for x in imgs], req.to("cpu"))
    write_image(out / "driven.png", np.concatenate([u8(x) for x in imgs[:6]], 1))
    return {"frames": len(req)}


def write_renders(out: Path, renders: dict) -> None:
    """renders.tar: NAME/NNNNNN.jpg (quality 95) and NAME/params.safetensors per group."""
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(out / "renders.tar", "w") as tar:
        for name, (imgs, params) in renders.items():
            for i, im in enumerate(imgs):
                buf = io.BytesIO()
                Image.fromarray(im).save(buf, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"{name}/{i:06d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
            if params is not None:
                params.save(out / f"_{name}.safetensors")
                tar.add(out / f"_{name}.safetensors", f"{name}/params.safetensors")
                (out / f"_{name}.safetensors").unlink()


def expression_change(r, params, out: Path, name: str) -> dict:
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


def heldout_idx(n: int, n_max: int = 40) -> list[int]:
    """The held-out frames ``heldout_metrics`` renders (evenly spread, at most ``n_max``)."""
    return np.linspace(0, n - 1, min(n_max, n)).round().astype(int).tolist()


def heldout_breakdown(gen: list[np.ndarray], held: Frames, idx: list[int], face_model, face=None,
                      similarity: bool = True) -> dict:
    """Where the held-out error is: PSNR (pooled over the frames) inside the face mesh and on the
    rest of the person, and how much of it a global misplacement explains: the masked PSNR after
    the best similarity transform (scale 0.96..1.04, shifts up to 8 px, per frame) of each render,
    with the mean scale and shift it took. A large gain means the rig's camera (pose, scale) of
    those frames and the real head disagree, not the renderer's appearance. The rest of the person
    is also split into the band within ``EDGE_BAND_PX`` of the person mask's edge (the hair's and
    shoulders' outline) and the inside, with each part's share of the squared error, and the band's
    PSNR after the per-frame whole-pixel shift that fits it best. ``face``: the frames' face-mesh
    masks when the caller has them (:func:`common.face_masks`). ``similarity=False`` leaves out the
    similarity search (729 warps of each render: most of ``--score``'s time on a CPU) and its keys."""
    S = held.size
    if face is None:
        face = face_masks(held.params[idx], face_model, S)
    se_face = se_rest = n_face = n_rest = se_band = n_band = se_band_shift = 0.0
    base, best, scales, shifts = [], [], [], []
    in_frame = held.in_frame()
    for k, i in enumerate(idx):
        g = torch.from_numpy(np.array(gen[k])).float().permute(2, 0, 1)[None] / 255
        ref = held.images[i].float().permute(2, 0, 1)[None] / 255
        m = held.masks[i].float()[None, None] / 255 * in_frame[i].float()   # not the mirrored padding
        err = ((g - ref) ** 2).mean(1)[0].numpy()
        mk = m[0, 0].numpy()
        se_face += float((err * mk * face[k]).sum())
        n_face += float((mk * face[k]).sum())
        se_rest += float((err * mk * ~face[k]).sum())
        n_rest += float((mk * ~face[k]).sum())
        band = mask_edge_band(mk > 0.5, EDGE_BAND_PX) & ~face[k]
        se_band += float((err * mk * band).sum())
        n_band += float((mk * band).sum())
        # the band's error with the render shifted by the whole-pixel shift (up to EDGE_BAND_PX
        # each way) that fits the band best: how much of it a misplaced outline explains
        ys, xs = np.nonzero(band)
        wb, gb = mk[ys, xs], g[0].permute(1, 2, 0).numpy()
        rb = ref[0].permute(1, 2, 0).numpy()[ys, xs]
        se_band_shift += min(float((((gb[(ys - dy) % S, (xs - dx) % S] - rb) ** 2).mean(-1) * wb).sum())
                             for dy in range(-EDGE_BAND_PX, EDGE_BAND_PX + 1)
                             for dx in range(-EDGE_BAND_PX, EDGE_BAND_PX + 1))

        def psnr(x):
            return -10 * np.log10(max(float((((x - ref) ** 2).mean(1, keepdim=True) * m).sum() / m.sum()), 1e-10))

        b, arg = psnr(g), (1.0, 0, 0)
        top = b
        for sc in np.linspace(0.96, 1.04, 9) if similarity else ():
            for dx in range(-8, 9, 2):
                for dy in range(-8, 9, 2):
                    th = torch.tensor([[[1 / sc, 0, -2 * dx / S], [0, 1 / sc, -2 * dy / S]]], dtype=torch.float32)
                    warped = F.grid_sample(g, F.affine_grid(th, list(g.shape), align_corners=False),
                                           padding_mode="border", align_corners=False)
                    v = psnr(warped)
                    if v > top:
                        top, arg = v, (float(sc), dx, dy)
        base.append(b)
        best.append(top)
        scales.append(arg[0])
        shifts.append(float(np.hypot(arg[1], arg[2])))
    def db(se, n):
        return round(float(-10 * np.log10(max(se, 1e-12) / max(n, 1))), 2)

    se_all = max(se_face + se_rest, 1e-12)
    found = {"psnr_masked_best_similarity": round(float(np.mean(best)), 2),
             "best_similarity_mean_scale": round(float(np.mean(scales)), 3),
             "best_similarity_mean_shift_px": round(float(np.mean(shifts)), 2)} if similarity else {}
    return {"psnr_face_mesh": db(se_face, n_face),
            "psnr_person_outside_face_mesh": db(se_rest, n_rest),
            "person_share_in_face_mesh": round(n_face / max(n_face + n_rest, 1), 3),
            f"psnr_person_edge_band_{EDGE_BAND_PX}px": db(se_band, n_band),
            "psnr_person_inside_edge_band": db(se_rest - se_band, n_rest - n_band),
            "psnr_person_edge_band_best_shift": db(se_band_shift, n_band),
            "person_share_in_edge_band": round(n_band / max(n_face + n_rest, 1), 3),
            "error_share": {"face_mesh": round(se_face / se_all, 3), "edge_band": round(se_band / se_all, 3),
                            "rest_inside": round((se_rest - se_band) / se_all, 3)},
            "psnr_masked": round(float(np.mean(base)), 2), **found}


def clip_oracle(frames: Frames, holdout: float = 0.2) -> dict:
    """How far a held-out figure can go on this clip by replaying it: each held-out frame
    (the last ``holdout`` share) against the training frame that scores best on it, masked to the
    person where the crop shows the video frame (``psnr_masked``, the avatar's headline measure)
    and on the whole crop (``psnr``), with the person's and the frame's share of the held-out
    crops. A clip whose last frames repeat its first (a news anchor) lets a replay score high;
    one whose last frames are new poses, expressions and hair does not. No model is needed."""
    tr, held_idx = frames.split(holdout)
    if not held_idx:
        raise SystemExit(f"bench_avatar: {frames.source or 'the frames'}: too few frames to hold any out")
    held = frames.subset(held_idx)
    inside = held.in_frame().float()
    masks = held.masks.float() / 255 * inside
    return {"source": frames.source, **replay_oracle(frames.images[tr], held.images, masks),
            "person_share": round(float(masks.mean()), 3),
            "in_frame_share": round(float(inside.mean()), 3)}


def relative_pose(fits, reference_fits) -> list:
    """Per view, degrees between the head rotations re-fitted on two sets of renders of the same
    requested views (None where either fit failed): the avatar's views against the rig mesh's
    (:func:`mesh_views`), the pose error with the re-fit's own bias at that view taken out."""
    from portraitrig.eval.rig import pose_error

    out = []
    for a, b in zip(fits, reference_fits):
        out.append(None if a is None or b is None else round(float(pose_error(a.params, b.params)[0]), 2))
    return out


def score(out: Path, frames: Frames, size: int, similarity: bool = True) -> dict:
    """Re-fit what ``renders.tar`` holds (needs mediapipe and dlib): see the module docstring."""
    import io
    import tarfile

    from PIL import Image

    from common import embed_crops, fit_crops
    from portraitrig.eval.identity import IdentityEncoder, identity_distance
    from portraitrig.eval.rig import expression_error, pose_error, summarize
    from portraitrig.pipeline import Rigger

    groups: dict = {}
    with tarfile.open(out / "renders.tar") as tar:
        for m in tar.getmembers():
            name, leaf = m.name.split("/", 1)
            data = tar.extractfile(m).read()
            g = groups.setdefault(name, {"images": {}, "params": None})
            if leaf.endswith(".jpg"):
                g["images"][leaf] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            else:
                (out / "_p.safetensors").write_bytes(data)
                g["params"] = RigParams.load(out / "_p.safetensors")
                (out / "_p.safetensors").unlink()
    rigger = Rigger(crop_size=size)
    enc = IdentityEncoder(fallback="aligned")

    def fit_all(images):
        return fit_crops(rigger, images, "render")

    def embed(images):
        return embed_crops(enc, images)

    def refit(requested: RigParams, fits) -> dict:
        ok = [i for i, f in enumerate(fits) if f is not None]
        if not ok:
            return {"fit_failures": len(fits)}
        got = RigParams.cat([fits[i].params for i in ok])
        e = expression_error(requested[ok], got, rigger.model)
        return {"fit_failures": len(fits) - len(ok), **{k: round(float(v["mean"]), 4) for k, v in summarize(e).items()},
                "pose_error_deg": [round(float(x), 2) for x in pose_error(requested[ok], got)]}

    tr_idx, held_idx = frames.split(0.2)
    held = frames.subset(held_idx)
    real_held = held.images.numpy()
    e_held = embed(real_held[::2])
    e_train = embed(frames.subset(tr_idx).images.numpy()[::max(1, len(tr_idx) // 16)])
    res: dict = {"identity_same_person": round(float(np.mean(identity_distance(e_held[:, None], e_train[None]))), 4)}
    floor = refit(held.params, fit_all(real_held))
    floor.pop("pose_error_deg")
    res["floor"] = floor
    fitted = {}
    for name, g in groups.items():
        imgs = [g["images"][k] for k in sorted(g["images"])]
        r: dict = {"n": len(imgs)}
        if g["params"] is not None:
            fitted[name] = fit_all(imgs)
            r.update(refit(g["params"][:len(imgs)], fitted[name]))
        r["identity_distance"] = round(float(np.mean(identity_distance(embed(imgs)[:, None], e_train[None]))), 4)
        res[name] = r
    if "views" in res and "pose_error_deg" in res["views"]:
        res["views"]["requested"] = VIEWS
        # the re-fit's own error at each view: the rig's mesh (exact geometry) turned the same way
        imgs, requested = mesh_views(held.params[0:1], real_held[0], rigger.model, VIEWS, size)
        write_image(out / "views_floor.png", np.concatenate(imgs[:7], 1))
        floor_fits = fit_all(imgs)
        res["views_floor"] = refit(requested, floor_fits)
        res["views_vs_floor_deg"] = relative_pose(fitted["views"], floor_fits)
    if "heldout" in groups:
        imgs = [groups["heldout"]["images"][k] for k in sorted(groups["heldout"]["images"])]
        idx = heldout_idx(len(held))[:len(imgs)]
        face = face_masks(held.params[idx], rigger.model, held.size)   # shared by the breakdowns below
        res["heldout_breakdown"] = heldout_breakdown(imgs, held, idx, rigger.model, face, similarity)
        rows = [held_idx[i] for i in idx]

        def by_range(gen):
            return by_condition_range(gen, frames.images[rows].numpy(), frames.params[rows], frames.params[tr_idx],
                                      rigger.model, face)

        res["heldout_by_condition_range"] = by_range(imgs)
        res["heldout_replay_oracle"] = replay_oracle(frames.images[tr_idx], frames.images[rows],
                                                     frames.masks[rows].float() / 255 * frames.in_frame()[rows])
        if "heldout_toggled" in groups:
            other = [groups["heldout_toggled"]["images"][k] for k in sorted(groups["heldout_toggled"]["images"])]
            res["heldout_toggled_breakdown"] = heldout_breakdown(other, held, idx, rigger.model, face, similarity)
            res["heldout_toggled_by_condition_range"] = by_range(other)
    write_json(out / "score.json", res)
    print(json.dumps(res, indent=1))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--score", default=None, metavar="OUT", help="re-fit the renders a device run wrote to OUT")
    ap.add_argument("--no-similarity", action="store_true",
                    help="--score: leave out the held-out breakdown's similarity search (most of its time on a CPU)")
    ap.add_argument("--oracle", action="store_true",
                    help="no model: what replaying the clip's training frames scores on its held-out frames "
                         "(clip_oracle; prints JSON, writes --out/oracle.json when --out is given)")
    ap.add_argument("--method", default="avatar", choices=("avatar", "splat"))
    ap.add_argument("--driver", default=None, help="fitted rig (.safetensors) of another clip to drive the avatar")
    ap.add_argument("--minutes", type=float, default=3.5)
    ap.add_argument("--ablation-minutes", type=float, default=3.5, help="0: no ablation run")
    ap.add_argument("--fps-sizes", default="256,512", help="render sizes timed (comma-separated)")
    ap.add_argument("--heldout-max", type=int, default=40, help="held-out frames evaluated")
    ap.add_argument("--preset", default=None, help="default: the frames' size (256 or 512); tiny: a smoke test")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the preset (model.body=20000, train.lr=5e-3, ssim_weight=0.3, ...); "
                         "splat: train.steps=N fixes the schedule's length (else sized to --minutes)")
    a = ap.parse_args()
    torch.manual_seed(0)
    frames = Frames.load(a.frames)
    if a.score:
        score(Path(a.score), frames, frames.size, similarity=not a.no_similarity)
        return
    if a.oracle:
        res = clip_oracle(frames)
        if a.out:
            write_json(Path(a.out) / "oracle.json", res)
        print(json.dumps(res))
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = a.preset or ("512" if frames.size >= 512 else "256")
    tr, held_idx = frames.split(0.2)
    held = frames.subset(held_idx)
    res = {"machine": platform.node(), "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
           "torch": torch.__version__, "method": a.method, "preset": preset, "frames": len(frames),
           "train_frames": len(tr), "held_out": len(held), "source": frames.source, "size": frames.size}
    sets = dict(x.split("=", 1) for x in a.set)
    res["overrides"] = sets
    model, res["train"] = run(frames, out / "runs", a.minutes, a.device, True, "prior", preset, a.method, sets)
    r = load_renderer(model, device=a.device)
    res["trusted_view_deg"] = {"yaw": r.config.trusted_yaw, "pitch": r.config.trusted_pitch}
    renders: dict = {}
    kept: list = []
    res["heldout"] = heldout_metrics(r, held, out, a.heldout_max, keep=kept)
    renders["heldout"] = (kept, None)
    if a.method == "splat" and r.config.cond_low:
        # the same model with the expression MLP's condition clamped the other way (see SplatConfig)
        clamp = r.config.clamp_condition
        r.model.cfg = r.config = dataclasses.replace(r.config, clamp_condition=not clamp)
        kept_other: list = []
        res["heldout_clamp_toggled"] = {"clamp_condition": not clamp,
                                        **heldout_metrics(r, held, out / "toggled", a.heldout_max, keep=kept_other)}
        renders["heldout_toggled"] = (kept_other, None)
        r.model.cfg = r.config = dataclasses.replace(r.config, clamp_condition=clamp)
    p = held.params[0:1]
    sizes = [int(v) for v in a.fps_sizes.split(",")]
    if a.method == "avatar":
        res["occupied_share"] = round(float(r.model.occupancy.float().mean()), 4)
        res["fps"] = {str(s): fps(r, p, s, occupancy=True) for s in sizes}
        res["fps"][f"{sizes[0]}_dense"] = fps(r, p, sizes[0], 2, occupancy=False)
        fast, dense = r.render(p), r.render(p, occupancy=False)
        res["occupancy_vs_dense_mean_abs_255"] = round(float((fast - dense).abs().mean() * 255), 4)
        res["fps_note"] = "one 1-item render call per frame, batch 1, samples per ray: " + str(r.config.samples)
    else:
        res["gaussians"] = {"mesh": r.model.n_mesh, "free": r.model.n_free, "body": r.model.n_body,
                            "model_mb": round(sum(t.numel() * t.element_size() for t in r.model.state_dict().values())
                                              / 2 ** 20, 1)}
        res["fps"] = {str(s): fps(r, p, s, 100) for s in sizes}
        res["fps_batch8_512"] = round(8 * fps(r, held.params[:8], 512, 20), 1)
        if a.device == "cuda":   # steadier: five runs of 200 renders, eager and with the pose compiled
            res["fps_512_runs"] = [fps(r, p, 512, 200) for _ in range(5)]
            rc = load_renderer(model, device=a.device, compile=True)
            t = time.perf_counter()
            rc.render(p, size=512)
            res["compile_seconds_512"] = round(time.perf_counter() - t, 1)
            res["fps_compiled_512_runs"] = [fps(rc, p, 512, 200) for _ in range(5)]
            res["fps_compiled_batch8_512"] = round(8 * fps(rc, held.params[:8], 512, 20), 1)
            res["compiled_vs_eager_max_abs_255"] = round(float((rc.render(held.params[:8], size=512)
                                                                 - r.render(held.params[:8], size=512)).abs().max() * 255), 4)
            del rc
            torch.cuda.reset_peak_memory_stats()
            r.render(p, size=512)
            res["render_peak_mem_mb_512"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
            r.backend = "torch"
            ref = r.render(p, size=128)
            r.backend = "auto"
            res["gsplat_vs_reference_mean_abs_255_at_128"] = round(float((r.render(p, size=128) - ref).abs().mean() * 255), 4)
        res["fps_note"] = "one render call per frame (pose the Gaussians + rasterize + composite), batch 1"
    res["turntable_notes"] = turntable(r, p, out, renders)
    if a.driver:
        res["driven"] = driven(r, a.driver, out, renders)
    res["ablation"] = {"prior": expression_change(r, p, out, "prior")}
    if a.ablation_minutes > 0:
        model2, res["train_no_prior"] = run(frames, out / "runs", a.ablation_minutes, a.device, False, "no_prior",
                                            preset, a.method, sets)
        r2 = load_renderer(model2, device=a.device)
        res["ablation"]["no_prior"] = expression_change(r2, p, out, "no_prior")
        res["heldout_no_prior"] = heldout_metrics(r2, held, out / "no_prior", a.heldout_max)
    write_renders(out, renders)
    write_json(out / "avatar.json", res)
    print(json.dumps(res, indent=1))
    for k in ("runs/prior/samples", "runs/no_prior/samples"):
        pics = sorted((out / k).glob("*.png")) if (out / k).is_dir() else []
        for q in pics[:-1]:
            q.unlink()  # keep the newest sample picture only


if __name__ == "__main__":
    main()
