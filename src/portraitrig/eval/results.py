"""Evaluate a folder of results (the Python API behind ``portraitrig eval``).

Results layout (written by the stages that generate images; paths are relative to RESULTS_DIR)::

    RESULTS_DIR/manifest.json
    {
      "items": [
        {"id": "0001",                          # unique name (default: the generated file's stem)
         "generated": "gen/0001.png",           # image, or video (.mp4 .mov .avi .mkv .webm ...)
         "reference": "real/0001.png",          # optional real image/video of the same person;
                                                #   pixel metrics need the same size
         "mask": "mask/0001.png",               # optional face mask (white = face), same size
         "box": [x0, y0, x1, y1],               # optional face box in the generated image (px)
         "requested_params": "p/0001.safetensors",  # optional RigParams used to generate it
         "fitted_params": "r/0001.safetensors",     # optional RigParams re-fitted on it
         "reference_params": "s/0001.safetensors",  # optional RigParams the reference was fitted to
         "landmarks": "lm/0001.npy",            # optional (T, N, 2|3) landmark track (videos)
         "error": "..."}                        # optional: the item failed upstream; skipped
      ],
      "floor": {"a": "floor/a.safetensors", "b": "floor/b.safetensors"}   # optional: params
    }                                           # fitted twice on the same real images

Paths in manifest.json must be relative and stay inside RESULTS_DIR (symlinks resolved): an
item naming another file is an error of that item, a ``floor`` doing so an error of the run.

Without manifest.json every image and video directly in RESULTS_DIR is a generated item. With
``real_dir``, items without a reference take the real file of the same stem, and all real
images there form the real set of the Fréchet identity distance.

Metric kinds, each computed where the fields allow:
identity (dlib embedding distance generated vs reference; HOG face, else ``box``, else the
aligned-crop box), image (PSNR, SSIM, masked variants), rig (requested vs fitted params, with
the floor), video (landmark jitter, flicker in background pixels; dlib 68 landmarks when no
track is given), distribution (Fréchet identity distance, real vs generated).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from portraitrig.errors import InputError, PortraitRigError
from portraitrig.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from portraitrig.io.safepath import confined

MEDIA_EXT = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
MIN_SIDE = 8  # px: smaller images cannot be evaluated
PATH_FIELDS = ("generated", "reference", "mask", "requested_params", "fitted_params", "reference_params", "landmarks")

KINDS = ("identity", "image", "rig", "video", "distribution")


def load_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB (portraitrig.io.images.read_image); InputError naming the file when
    a side is under ``MIN_SIDE`` pixels."""
    from portraitrig.io.images import read_image

    image = read_image(path)
    if min(image.shape[:2]) < MIN_SIDE:
        raise InputError(path, f"image is {image.shape[1]}x{image.shape[0]} px; at least {MIN_SIDE}x{MIN_SIDE} "
                               "is needed to evaluate it")
    return image


def load_mask(path: str | Path) -> np.ndarray:
    """(H, W) float weights in [0, 1] from a grayscale/RGB mask image (white = 1)."""
    return load_image(path).mean(-1) / 255.0


def iter_video(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of a video file, at most ``max_frames``."""
    from portraitrig.io.video import iter_video_frames

    for f in iter_video_frames(path, max_frames=max_frames):
        yield f.image


def is_video(path) -> bool:
    from portraitrig.io.images import is_video as _is_video

    return _is_video(path)


def read_items(results_dir: str | Path, real_dir: str | Path | None = None) -> tuple[list[dict], dict]:
    """Items (paths made absolute) and the manifest's other fields, per the layout above. An
    item whose paths lead outside RESULTS_DIR carries the problem in ``"invalid"``."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(root, "results folder does not exist")
    mpath = root / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text())
            raw = manifest["items"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(mpath, f"not a results manifest ({exc})") from exc
        if not isinstance(raw, list):
            raise InputError(mpath, "'items' must be a list")
    else:
        manifest = {}
        raw = [{"generated": p.name} for p in sorted(root.iterdir())
               if p.is_file() and p.suffix.lower() in MEDIA_EXT]
    reals = {}
    if real_dir is not None:
        rd = Path(real_dir)
        if not rd.is_dir():
            raise InputError(rd, "real folder does not exist")
        reals = {p.stem: p for p in sorted(rd.iterdir()) if p.suffix.lower() in MEDIA_EXT}
    items = []
    for k, r in enumerate(raw):
        if not isinstance(r, dict) or ("generated" not in r and "error" not in r):
            items.append({"id": f"item{k}", "invalid": str(InputError(mpath, f"item {k} has no 'generated' path"))})
            continue
        it = dict(r)
        try:
            for key in PATH_FIELDS:
                if it.get(key):
                    it[key] = str(confined(it[key], root, mpath))
        except InputError as exc:
            it["invalid"] = f"{exc} (item {k}, {key})"
            it = {k2: v for k2, v in it.items() if k2 not in PATH_FIELDS}
        if not isinstance(it.get("id"), (str, int)) or it.get("id") == "":
            it["id"] = Path(it["generated"]).stem if it.get("generated") else f"item{k}"
        it["id"] = str(it["id"])
        if not it.get("reference") and it.get("generated") and Path(it["generated"]).stem in reals:
            it["reference"] = str(reals[Path(it["generated"]).stem])
        items.append(it)
    extra = {k: v for k, v in manifest.items() if k != "items"}
    if isinstance(extra.get("floor"), dict):
        extra["floor"] = {k: str(confined(v, root, mpath)) for k, v in extra["floor"].items()}
    extra["real_files"] = [str(p) for p in reals.values() if p.suffix.lower() in IMAGE_EXTENSIONS]
    return items, extra


def _sample(frames: Iterable[np.ndarray], k: int) -> list[np.ndarray]:
    frames = list(frames)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(k, len(frames))).round().astype(int))
    return [frames[i] for i in idx]


class _Evaluator:
    def __init__(self, kinds, model, encoder, max_frames, refit=False):
        from portraitrig.eval.identity import IdentityEncoder

        self.kinds, self.model, self.max_frames, self.refit = set(kinds), model, max_frames, refit
        self._riggers: dict = {}
        self.floor_errors: dict[str, list] = {}
        self._floored: set[str] = set()
        self.encoder = encoder or IdentityEncoder(fallback="aligned")
        self.encoder68 = None
        self.gen_embeddings: list[np.ndarray] = []
        self.ref_embeddings: dict[str, np.ndarray] = {}
        self.ref_sources: dict[str, str] = {}

    def embed(self, image, box=None, key=None) -> tuple[np.ndarray, str]:
        """(embedding, face source); real images are cached under ``key`` (their path)."""
        if key is not None and key in self.ref_embeddings:
            return self.ref_embeddings[key], self.ref_sources[key]
        e = self.encoder.encode(image, box)
        if key is not None:
            self.ref_embeddings[key], self.ref_sources[key] = e.vector, e.source
        return e.vector, e.source

    def image_item(self, it: dict) -> dict:
        from portraitrig.eval.identity import identity_distance, identity_similarity
        from portraitrig.eval.image import image_metrics

        m, info = {}, {}
        gen = load_image(it["generated"])
        ref = None
        if it.get("reference"):
            ref = _load_any(it["reference"])
        need_gen_emb = "identity" in self.kinds and ref is not None or "distribution" in self.kinds
        if need_gen_emb:
            eg, info["face_generated"] = self.embed(gen, it.get("box"))
            self.gen_embeddings.append(eg)
            if "identity" in self.kinds and ref is not None:
                er, info["face_reference"] = self.embed(ref, key=it["reference"])
                m["identity_distance"] = float(identity_distance(eg, er))
                m["identity_similarity"] = float(identity_similarity(eg, er))
        if "image" in self.kinds and ref is not None:
            if ref.shape == gen.shape:
                mask = load_mask(it["mask"]) if it.get("mask") else None
                m.update(image_metrics(gen, ref, mask))
            else:
                info["image_metrics"] = f"skipped: reference size {ref.shape[:2]} != generated {gen.shape[:2]}"
        return {"metrics": m, "info": info}

    def video_item(self, it: dict) -> dict:
        from portraitrig.eval.identity import IdentityEncoder, identity_distance
        from portraitrig.eval.video import flicker, landmark_jitter, static_mask_from_boxes

        m, info = {}, {}
        frames = list(iter_video(it["generated"], self.max_frames))
        h, w = frames[0].shape[:2]
        if "video" in self.kinds:
            track, boxes = None, None
            if it.get("landmarks"):
                track = np.load(it["landmarks"], allow_pickle=False)
                p = np.asarray(track, np.float64)[..., :2]
                boxes = np.stack([p[..., 0].min(1), p[..., 1].min(1), p[..., 0].max(1), p[..., 1].max(1)], 1)
            else:
                if self.encoder68 is None:
                    self.encoder68 = IdentityEncoder(landmarks=68, upsample=self.encoder.upsample)
                pts, boxes, last = [], [], None
                for f in frames:
                    faces = self.encoder68.detect(f)
                    last = faces[0][0] if faces else last  # keep the last box through misses
                    if last is not None:
                        boxes.append(last)
                        pts.append(self.encoder68.shape68(f, last))
                info["landmarks"] = f"dlib 68 on {len(pts)}/{len(frames)} frames"
                track = np.array(pts) if len(pts) == len(frames) else None
            if track is not None and len(track) >= 3:
                m.update(landmark_jitter(track))
            if boxes is not None and len(boxes):
                mask = static_mask_from_boxes(boxes, (w, h))
                info["static_fraction"] = float(mask.mean())
                m["flicker"] = flicker(frames, mask)
        if ("identity" in self.kinds and it.get("reference")) or "distribution" in self.kinds:
            embs = []
            for f in _sample(frames, 8):
                try:
                    embs.append(self.embed(f)[0])
                except PortraitRigError:
                    pass
            info["identity_frames"] = len(embs)
            self.gen_embeddings.extend(embs)
            if embs and "identity" in self.kinds and it.get("reference"):
                er, info["face_reference"] = self.embed(_load_any(it["reference"]), key=it["reference"])
                m["identity_distance"] = float(np.mean(identity_distance(np.array(embs), er)))
        return {"metrics": m, "info": info}

    def rig_item(self, it: dict) -> dict[str, np.ndarray]:
        """Requested vs fitted params; with ``refit`` and no ``fitted_params`` the rig is
        fitted on the generated crop here, and the real reference crop is re-fitted the same
        way against its own ``reference_params`` (the floor: what re-fitting alone costs)."""
        from portraitrig.face.params import RigParams

        req = RigParams.load(it["requested_params"])
        if it.get("fitted_params"):
            fit = RigParams.load(it["fitted_params"])
        else:
            fit = self._refit(it["generated"], req.crop_size)
        ref, ref_params = it.get("reference"), it.get("reference_params")
        if self.refit and ref and ref_params and ref not in self._floored:
            self._floored.add(ref)
            src = RigParams.load(ref_params)
            for k, v in _rig(src, self._refit(ref, src.crop_size), self.model).items():
                self.floor_errors.setdefault(k, []).extend(np.asarray(v).ravel().tolist())
        return _rig(req, fit, self.model)

    def _refit(self, path: str, crop_size: int):
        from portraitrig.pipeline import Rigger

        if crop_size not in self._riggers:
            self._riggers[crop_size] = Rigger(crop_size=crop_size, model=self.model)
        return self._riggers[crop_size].fit_crop(load_image(path), str(path)).params


def _rig(a, b, model) -> dict[str, np.ndarray]:
    """Rig errors; without a model the shipped one is used when the params name it."""
    from portraitrig.eval import rig
    from portraitrig.face.model import MODEL_ID, load_default_model

    if model is None and a.model == MODEL_ID:
        try:
            model = load_default_model()
        except (InputError, OSError):  # no model file: coefficient errors only
            model = None
    return rig.rig_consistency(a, b, model)


def evaluate_folder(results_dir: str | Path, out_dir: str | Path | None = None,
                    real_dir: str | Path | None = None, kinds: Iterable[str] = KINDS, model=None,
                    encoder=None, max_frames: int = 300, refit: bool = False) -> dict:
    """Compute every metric the items allow and write OUT/metrics.json + OUT/report.html
    (OUT defaults to RESULTS_DIR/eval). model: FaceModel for mesh errors (optional).
    refit: fit the rig on generated crops that have requested but no fitted params.
    Returns the summary dict (also in metrics.json)."""
    from portraitrig.eval.distribution import frechet_identity_distance
    from portraitrig.eval.identity import SAME_PERSON_THRESHOLD
    from portraitrig.eval.image import PSNR_CAP
    from portraitrig.eval.report import write_report
    from portraitrig.eval.rig import summarize

    kinds = list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown metric kind(s) {bad}; choose from {KINDS}")
    items, extra = read_items(results_dir, real_dir)
    if not items:
        raise InputError(results_dir, "nothing to evaluate: no manifest.json items and no images or videos here")
    out_dir = Path(out_dir) if out_dir is not None else Path(results_dir) / "eval"
    ev = _Evaluator(kinds, model, encoder, max_frames, refit)
    records, rig_errors = [], {}
    for it in items:
        rec = {k: it[k] for k in ("id", "generated", "reference") if it.get(k)}
        if it.get("invalid"):
            rec["error"] = it["invalid"]
            records.append(rec)
            continue
        if it.get("error"):
            rec["error"] = f"upstream: {it['error']}"  # reported by the stage that made it
            records.append(rec)
            continue
        try:
            r = ev.video_item(it) if is_video(it["generated"]) else ev.image_item(it)
            if "rig" in kinds and it.get("requested_params") and (it.get("fitted_params") or refit):
                errs = ev.rig_item(it)
                for k, v in errs.items():
                    rig_errors.setdefault(k, []).extend(np.asarray(v).ravel().tolist())
                r["metrics"].update({k: float(np.mean(v)) for k, v in errs.items()})
            rec.update(r)
        except (PortraitRigError, ValueError, OSError) as exc:  # bad item data: record it and go on
            rec["error"] = str(exc) if isinstance(exc, PortraitRigError) else f"{it['generated']}: {exc}"
        records.append(rec)

    for rigger in ev._riggers.values():  # --refit's MediaPipe graphs
        rigger.close()
    summary: dict = {"n_items": len(records), "n_errors": sum(1 for r in records if r.get("error")),
                     "errors": [f"item {r.get('id')}: {r['error']}" for r in records
                                if r.get("error") and not r["error"].startswith("upstream: ")]}
    # an exact copy's PSNR is infinite: averaged at PSNR_CAP, not left out of the mean
    per_item = summarize({n: [min(r["metrics"][n], PSNR_CAP) if n.startswith("psnr") else r["metrics"][n]
                              for r in records if n in r.get("metrics", {})]
                          for n in sorted({n for r in records for n in r.get("metrics", {})})})
    summary["metrics"] = per_item
    dists = [r["metrics"]["identity_distance"] for r in records if "identity_distance" in r.get("metrics", {})]
    if dists:
        summary["identity_same_person_rate"] = float(np.mean(np.array(dists) < SAME_PERSON_THRESHOLD))
    if rig_errors:
        rig_summary = {"generated": summarize(rig_errors)}
        floor = extra.get("floor")
        if floor and floor.get("a") and floor.get("b"):
            from portraitrig.face.params import RigParams

            rig_summary["floor"] = summarize(_rig(RigParams.load(floor["a"]), RigParams.load(floor["b"]), model))
        elif ev.floor_errors:
            rig_summary["floor"] = summarize(ev.floor_errors)
        summary["rig"] = rig_summary
    if "distribution" in kinds:
        real = [ev.ref_embeddings[k] for k in sorted(ev.ref_embeddings)]
        seen = set(ev.ref_embeddings)
        for p in extra.get("real_files", []):
            if p not in seen:
                try:
                    real.append(ev.embed(load_image(p), key=p)[0])
                except PortraitRigError:
                    pass
        if len(real) >= 2 and len(ev.gen_embeddings) >= 2:
            summary["frechet_identity_distance"] = frechet_identity_distance(np.array(real), np.array(ev.gen_embeddings))
            summary["frechet_identity_n"] = {"real": len(real), "generated": len(ev.gen_embeddings)}
    write_report(out_dir, summary, records, load_image=_load_any,
                 title=f"portraitrig evaluation: {Path(results_dir).name}",
                 extra={"results_dir": str(results_dir), "kinds": kinds})
    return summary


def _load_any(path) -> np.ndarray:
    """An image, or the first frame of a video."""
    return next(iter_video(path, 1)) if is_video(path) else load_image(path)


__all__ = ["KINDS", "load_image", "load_mask", "iter_video", "is_video", "read_items", "evaluate_folder"]
