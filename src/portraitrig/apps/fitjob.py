"""``portraitrig fit``: fit every image / video frame, one parameter file per item, a manifest.

A bad input never stops the batch: it is recorded in ``manifest.json`` with status ``error``
and a message naming the file and the problem. Re-running skips finished items (and finished
videos; a change of any output setting refits everything); every file is written atomically and
the manifest is rewritten every few seconds and at the end, so a killed run loses at most the
last few seconds' record (those items are fitted again). An album (``--album``) is one joint
fit: re-running it refits all its photos.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from portraitrig.errors import InputError
from portraitrig.io.atomic import write_image
from portraitrig.io.fitfolder import MANIFEST, Manifest


@dataclass
class FitJobConfig:
    crop_size: int = 256
    format: str = "safetensors"       # or "npz"
    stride: int = 1                   # video frame stride
    max_frames: int | None = None     # per video
    album: bool = False               # all photos show one person: shared identity + albedo
    smooth_sigma: float = 1.0         # video temporal smoothing, in (original) frames; 0 = off
    save_crops: bool = False          # also write <id>.crop.png
    photometric: bool = True
    device: str = "cpu"


# settings that change what is written: a re-run with other values refits everything
OUTPUT_SETTINGS = ("crop_size", "format", "stride", "max_frames", "album", "smooth_sigma", "photometric")


@dataclass
class FitJobSummary:
    out_dir: Path
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, message)

    @property
    def exit_code(self) -> int:
        return 0 if self.errors == 0 else 1

    def text(self) -> str:
        lines = [f"{self.ok} fitted, {self.skipped} already done, {self.errors} failed -> {self.out_dir / MANIFEST}"]
        for src, msg in self.failed[:20]:
            lines.append(f"  error: {msg}" if msg.startswith(src) else f"  error: {src}: {msg}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (see the manifest)")
        return "\n".join(lines)


def _error_item(item_id: str, source: str, err: Exception) -> dict:
    msg = str(err) if isinstance(err, InputError) else f"{source}: {err.__class__.__name__}: {err}"
    return {"id": item_id, "source": source, "status": "error", "message": msg}


def run_fit(inputs: Sequence[str | Path], out_dir: str | Path, config: FitJobConfig | None = None,
            progress: bool = True) -> FitJobSummary:
    """Fit all inputs (files, folders, globs, videos) into ``out_dir``. See the module doc."""
    from tqdm.auto import tqdm

    from portraitrig.io.sources import expand_inputs
    from portraitrig.pipeline import Rigger

    cfg = config or FitJobConfig()
    if cfg.format not in ("safetensors", "npz"):
        raise ValueError(f"format must be 'safetensors' or 'npz', not {cfg.format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / MANIFEST, asdict(cfg), OUTPUT_SETTINGS)
    summary = FitJobSummary(out)

    def record_error(item_id: str, source: str, err: Exception) -> None:
        manifest.items[item_id] = _error_item(item_id, source, err)
        summary.errors += 1
        summary.failed.append((source, manifest.items[item_id]["message"]))

    def write_group(group: list[tuple[str, object]], shared: bool, smooth: float) -> bool:
        """Fit (id, Capture) pairs together and write their files; False if the group failed."""
        if not group:
            return True
        try:
            results = rigger.fit_captures([c for _, c in group], shared=shared, smooth_sigma=smooth)
        except Exception as exc:  # a failed solve fails the group, not the batch
            for item_id, cap in group:
                record_error(item_id, cap.source, exc)
            return False
        ok = True
        for (item_id, cap), res in zip(group, results):
            pfile = f"{item_id}.{cfg.format}"
            try:
                res.params.save(out / pfile, extras=res.extras(rigger.model),
                                meta={"n_faces": res.n_faces, "landmark_error_iod_pct": res.landmark_error})
                entry = {"id": item_id, "source": cap.source, "status": "ok", "message": "", "params": pfile,
                         "n_faces": res.n_faces, "landmark_error_iod_pct": round(res.landmark_error, 4)}
                if res.n_faces > 1:
                    entry["message"] = f"{res.n_faces} faces found; fitted the largest"
                if cfg.save_crops:
                    entry["crop"] = f"{item_id}.crop.png"
                    write_image(out / entry["crop"], res.crop_image)
            except OSError as exc:  # disk full, permissions: recorded, the batch goes on
                record_error(item_id, cap.source, exc)
                ok = False
                continue
            manifest.items[item_id] = entry
            summary.ok += 1
        return ok

    inputs = [str(p) for p in inputs]
    try:  # expanded together, so that item ids are unique across inputs
        sources = expand_inputs(inputs, stride=cfg.stride)
    except InputError:  # an empty folder or a glob matching nothing: that input's error only
        good = []
        for inp in inputs:
            try:
                expand_inputs([inp], stride=cfg.stride)
                good.append(inp)
            except InputError as err:
                record_error(Path(inp).name or inp, inp, err)
        sources = expand_inputs(good, stride=cfg.stride) if good else []

    album: list[tuple[str, object]] = []
    rigger = Rigger(crop_size=cfg.crop_size, device=cfg.device, photometric=cfg.photometric)
    bar = tqdm(total=len(sources), unit="input", desc="fit", disable=not progress)
    try:
        for src in sources:
            if src.kind == "video" and manifest.source_done(str(src.path), out):
                summary.skipped += len(manifest.sources[str(src.path)].get("items", []))
                bar.update(1)
                continue
            group: list[tuple[str, object]] = []
            ids: list[str] = []
            broken = False
            try:
                for item in src.iter_items():
                    if src.kind == "video" and cfg.max_frames is not None and len(ids) >= cfg.max_frames:
                        break
                    ids.append(item.id)
                    # an album is one joint fit: any new photo refits all of it
                    if src.kind == "image" and not cfg.album and manifest.done(item.id, out):
                        summary.skipped += 1
                        continue
                    try:  # the original image is not kept: the fit needs the crop only
                        group.append((item.id, replace(rigger.capture(item.load(), item.source), image=None)))
                    except Exception as err:  # unreadable, no face, decoder crash: reported, batch goes on
                        record_error(item.id, item.source, err)
            except InputError as err:  # the source itself broke (unreadable / truncated video)
                broken = True
                record_error(ids[-1] + ".broken" if ids else Path(str(src.path)).name, str(src.path), err)
            if src.kind == "video":
                fitted = write_group(group, shared=True, smooth=cfg.smooth_sigma / max(cfg.stride, 1))
                # done when decoded to its end and fitted (frames without a face stay errors)
                manifest.sources[str(src.path)] = {"kind": "video", "status": "ok" if fitted and not broken else "error",
                                                   "items": ids}
            elif cfg.album:
                album.extend(group)
            else:
                for g in group:
                    write_group([g], shared=False, smooth=0.0)
            manifest.save(force=False)
            bar.update(1)
        if album:
            write_group(album, shared=True, smooth=0.0)
    finally:  # the record is saved however the loop ends (Ctrl-C included)
        bar.close()
        rigger.close()
        manifest.save()
    return summary


__all__ = ["FitJobConfig", "FitJobSummary", "run_fit"]
