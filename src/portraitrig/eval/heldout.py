"""Evaluate a trained DiffusionRig model on one person's held-out frames.

Two steps (generation runs where the GPU is, scoring where dlib and MediaPipe are):

    # on the device: held-out frames of the person (those not in the stage-2 training split)
    python -m portraitrig.cli heldout generate --model RUN/model --cache C.safetensors \
        --group NAME --train-items 20 --n 16 --out $OUT/eval.npz
    # here, on the CPU
    python -m portraitrig.cli heldout score eval.npz [more.npz] --out report.json
    python -m portraitrig.cli heldout sheet eval.npz [more parts] --out sheet.jpg --rows 6

generate writes uint8 images (targets, reconstructions with inversion, refined inversions,
edits, samples without inversion) and the requested rig parameters of every edit.
score measures PSNR/SSIM of the reconstructions (with inversion), dlib identity similarity of
samples without inversion (and of edits) to the real frame, and rig faithfulness: the rig is
re-fitted on each edited image and compared with the requested parameters, next to the floor
(the same re-fit on the real frames against their own fits).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from portraitrig.errors import InputError

# the evaluation's edits, as edit specs (portraitrig.editspec); light_* absolute, *_rel relative
EDITS = [("reconstruction", ""), ("light_left", "light=left absolute=1"), ("light_right", "light=right absolute=1"),
         ("light_left_rel", "light=left"), ("light_right_rel", "light=right"), ("smile", "smile=0.8"),
         ("jaw_open", "jaw_open=0.6"), ("yaw_left", "yaw=-15"), ("yaw_right", "yaw=15"), ("gaze_right", "gaze=15,0")]


def generate(args) -> int:
    from portraitrig.editspec import parse
    from portraitrig.face.params import TENSOR_FIELDS, RigParams
    from portraitrig.io.atomic import atomic_path
    from portraitrig.methods import load_renderer
    from portraitrig.neural.cache import FaceCache
    from portraitrig.neural.contract import Edit, Subject

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache = FaceCache.load(args.cache)
    train_idx, held = cache.split_group(args.group, args.train_items)
    pick = [held[int(k)] for k in np.linspace(0, len(held) - 1, min(args.n, len(held))).round().astype(int)]
    r = load_renderer(args.model, device=device, fast=False if args.no_fast else None, max_batch=args.batch)
    subjects = [Subject(cache.ids[i], cache.image(i), cache.params[i]) for i in pick]
    edits = [Edit(name, parse(spec).params_fn(r.face_model)) for name, spec in EDITS]
    t0 = time.perf_counter()
    res = r.edit(subjects, edits, steps=args.steps)
    t_edit = time.perf_counter() - t0
    refined = r.edit(subjects, [edits[0]], steps=args.steps, refine=args.refine)
    sampled = r.edit(subjects, [edits[0]], steps=args.steps, inversion=False, seed=args.seed)
    req = RigParams.cat([p for x in res for p in x.params])
    out = {"target": np.stack([s.crop_image for s in subjects]),
           "edits": np.stack([np.stack(x.crops) for x in res]),
           "recon_refined": np.stack([x.crops[0] for x in refined]),
           "sample": np.stack([x.crops[0] for x in sampled]),
           "edit_names": np.array([e.name for e in edits]),
           "ids": np.array([cache.ids[i] for i in pick]),
           "train_ids": np.array([cache.ids[i] for i in train_idx]),
           "meta": np.array(json.dumps({"model": str(args.model), "steps": args.steps, "refine": args.refine,
                                        "edit_seconds": t_edit, "device": device, "group": args.group,
                                        "edits": EDITS}))}
    for k in TENSOR_FIELDS:
        out[f"req_{k}"] = req.tensors()[k].cpu().numpy()
        out[f"src_{k}"] = torch.cat([s.params.tensors()[k] for s in subjects]).cpu().numpy()
    N, E = len(pick), len(edits)
    k = max(1, min(args.parts, N))
    bounds = np.linspace(0, N, k + 1).round().astype(int)
    base = Path(args.out)
    base = base.with_suffix("") if base.suffix == ".npz" else base
    paths = [f"{base}.npz"] if k == 1 else [f"{base}.part{j}.npz" for j in range(k)]
    meta = json.loads(str(out["meta"]))
    for j, path in enumerate(paths):  # parts: each under the device tool's 16 MiB per file
        a, b = bounds[j], bounds[j + 1]
        part = {key: (v[a * E:b * E] if key.startswith("req_") else v[a:b])
                if key not in ("edit_names", "train_ids", "meta") else v for key, v in out.items()}
        part["meta"] = np.array(json.dumps({**meta, "part": j, "parts": k}))
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, **part)
    print(f"{N} held-out frames x {E} edits in {t_edit:.1f} s -> {', '.join(paths)}")
    return 0


PER_FRAME = ("target", "edits", "recon_refined", "sample", "ids")


def _load_runs(paths) -> dict:
    """npz files -> {run name: arrays}. Parts written by one ``generate --parts K`` call
    (``NAME.partJ.npz``) are joined in part order; a missing, repeated or foreign part (another
    model, person, step count or training split) is an error, never a silent mix."""
    import re

    groups: dict = {}
    for path in paths:
        m = re.fullmatch(r"(.*)\.part(\d+)\.npz", str(path))
        name = m.group(1) if m else re.sub(r"\.npz$", "", str(path))
        groups.setdefault(name, []).append(path)
    runs: dict = {}
    for name, files in groups.items():
        zs = [dict(np.load(f, allow_pickle=False)) for f in files]
        metas = [json.loads(str(z["meta"])) for z in zs]
        # files written before parts were recorded: the part number of the file name
        for f, mt in zip(files, metas):
            if "part" not in mt:
                m = re.fullmatch(r".*\.part(\d+)\.npz", str(f))
                mt["part"], mt["parts"] = (int(m.group(1)), len(files)) if m else (0, 1)
        k = metas[0]["parts"]
        idx = [mt["part"] for mt in metas]
        if sorted(idx) != list(range(k)):
            raise InputError(name, f"parts {sorted(idx)} given, {k} expected (each once)")
        same = lambda mt: {a: b for a, b in mt.items() if a not in ("part", "edit_seconds")}  # noqa: E731
        for f, z, mt in zip(files, zs, metas):
            if same(mt) != same(metas[0]) or not all(np.array_equal(z[a], zs[0][a]) for a in ("edit_names",
                                                                                              "train_ids")):
                raise InputError(f, f"not a part of the same generation as {files[0]}")
        order = np.argsort(idx)
        r = zs[order[0]]
        for j in order[1:]:
            for key, v in zs[j].items():
                if key in PER_FRAME or key.startswith(("req_", "src_")):
                    r[key] = np.concatenate([r[key], v])
        runs[name] = r
    return runs


def _params(z, prefix):
    from portraitrig.face.params import TENSOR_FIELDS, RigParams

    return RigParams(**{k: torch.from_numpy(z[f"{prefix}_{k}"]) for k in TENSOR_FIELDS})


def _refit(images, rigger):
    """Rig fits of (N, S, S, 3) uint8 aligned crops (not re-aligned: the requested parameters
    live in the crop's frame); None where no face is found on a generated image."""
    from portraitrig.errors import InputError

    out = []
    for i, im in enumerate(images):
        try:
            out.append(rigger.fit_crop(np.ascontiguousarray(im), f"generated {i}").params)
        except InputError:
            out.append(None)
    return out


def score(args) -> int:
    from portraitrig.eval.identity import IdentityEncoder, identity_distance, identity_similarity
    from portraitrig.eval.image import image_metrics
    from portraitrig.eval.rig import rig_consistency, summarize
    from portraitrig.face.params import RigParams
    from portraitrig.pipeline import Rigger

    enc = IdentityEncoder(fallback="aligned")
    rigger = Rigger(crop_size=256)
    report = {}
    for name, z in _load_runs(args.npz).items():
        names = [str(n) for n in z["edit_names"]]
        tgt, ed = z["target"], z["edits"]
        N, E = ed.shape[:2]
        rep: dict = {"meta": json.loads(str(z["meta"])), "n": int(N)}
        im = [image_metrics(ed[i, 0], tgt[i]) for i in range(N)]
        imr = [image_metrics(z["recon_refined"][i], tgt[i]) for i in range(N)]
        rep["reconstruction"] = {k: float(np.mean([m[k] for m in im])) for k in im[0]}
        rep["reconstruction_refined"] = {k: float(np.mean([m[k] for m in imr])) for k in imr[0]}
        emb_t = np.stack([enc.embed(t) for t in tgt])
        emb_s = np.stack([enc.embed(s) for s in z["sample"]])
        rep["identity_sample_no_inversion"] = float(np.mean(identity_similarity(emb_s, emb_t)))
        rep["identity_distance_sample_no_inversion"] = float(np.mean(identity_distance(emb_s, emb_t)))
        # reference: other real frames of the person (target i vs target i+1)
        rep["identity_distance_real_pairs"] = float(np.mean(identity_distance(emb_t[1:], emb_t[:-1]))) if N > 1 else None
        rep["identity_edits"] = {names[e]: float(np.mean(identity_similarity(
            np.stack([enc.embed(ed[i, e]) for i in range(N)]), emb_t))) for e in range(E)}
        # rig faithfulness: re-fit on the edits vs requested, and the floor on the real frames
        req = _params(z, "req")
        src = _params(z, "src")
        fits_real = _refit(tgt, rigger)
        ok_r = [i for i, f in enumerate(fits_real) if f is not None]
        rep["rig_floor_real_frames"] = {"fit_failures": N - len(ok_r)}
        if ok_r:
            rep["rig_floor_real_frames"].update(summarize(rig_consistency(
                src[ok_r], RigParams.cat([fits_real[i] for i in ok_r]), rigger.model)))
        rep["rig_edits"] = {}
        for e, edit in enumerate(names):
            rows = [i * E + e for i in range(N)]
            fits = _refit(ed[:, e], rigger)
            ok = [k for k, f in enumerate(fits) if f is not None]
            if not ok:
                rep["rig_edits"][edit] = {"fit_failures": N}
                continue
            errs = summarize(rig_consistency(req[[rows[k] for k in ok]], RigParams.cat([fits[k] for k in ok]),
                                             rigger.model))
            rep["rig_edits"][edit] = {"fit_failures": N - len(ok), **errs}
        report[name] = rep
        print(json.dumps({k: rep[k] for k in ("reconstruction", "reconstruction_refined",
                                              "identity_sample_no_inversion",
                                              "identity_distance_sample_no_inversion", "identity_distance_real_pairs",
                                              "identity_edits")}, indent=1))
    from portraitrig.io.atomic import write_json

    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


def sheet(args) -> int:
    """A picture: one row per held-out frame: real | edits (reconstruction first) | sample."""
    from PIL import Image, ImageDraw

    runs = _load_runs(args.npz)
    if len(runs) != 1:
        raise InputError(None, f"sheet: give the parts of one model's generation, got {len(runs)} models")
    z = next(iter(runs.values()))
    N = z["target"].shape[0]
    rows = [int(i) for i in np.linspace(0, N - 1, min(args.rows, N)).round()]
    names = ["real"] + [str(n) for n in z["edit_names"]] + ["no inversion"]
    S = args.size
    im = Image.new("RGB", (S * len(names), S * len(rows) + 18), "white")
    d = ImageDraw.Draw(im)
    for c, n in enumerate(names):
        d.text((c * S + 4, 3), n.replace("reconstruction", "inverted"), fill="black")
    for r, i in enumerate(rows):
        tiles = [z["target"][i]] + list(z["edits"][i]) + [z["sample"][i]]
        for c, t in enumerate(tiles):
            im.paste(Image.fromarray(t).resize((S, S), Image.LANCZOS), (c * S, 18 + r * S))
    from portraitrig.io.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        im.save(tmp, format="JPEG", quality=args.quality)
    print(f"wrote {args.out} ({len(rows)} frames x {len(names)} columns)")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``heldout generate | score | sheet`` to an argparse subparsers object."""
    ap = subparsers.add_parser("heldout", help="a trained renderer on one person's held-out frames",
                               description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="heldout_cmd", required=True)
    g = sub.add_parser("generate", help="reconstructions and edits of held-out frames (.npz parts)")
    g.add_argument("--model", required=True)
    g.add_argument("--cache", required=True)
    g.add_argument("--group", required=True)
    g.add_argument("--train-items", type=int, default=20)
    g.add_argument("--n", type=int, default=16, help="held-out frames")
    g.add_argument("--steps", type=int, default=20)
    g.add_argument("--refine", type=int, default=2, help="refinements of the extra refined inversion")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--no-fast", action="store_true")
    g.add_argument("--device", default=None)
    g.add_argument("--parts", type=int, default=1, help="write the frames into this many .partK.npz files")
    g.add_argument("--out", required=True)
    g.set_defaults(func=generate)
    s = sub.add_parser("score", help="PSNR/SSIM, identity and rig faithfulness of generated parts")
    s.add_argument("npz", nargs="+")
    s.add_argument("--out", required=True)
    s.set_defaults(func=score)
    h = sub.add_parser("sheet", help="a picture: real | edits | sample per held-out frame")
    h.add_argument("npz", nargs="+")
    h.add_argument("--out", required=True)
    h.add_argument("--rows", type=int, default=6)
    h.add_argument("--size", type=int, default=160, help="tile size in pixels")
    h.add_argument("--quality", type=int, default=88)
    h.set_defaults(func=sheet)
    return ap


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="portraitrig")
    register(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
