"""``portraitrig render``: buffers and mesh overlays as PNGs, and a contact sheet.

Inputs are ``portraitrig fit`` output folders, single parameter files, or photos (fitted on the
fly). For every item it writes ``OUT/<id>/<buffer>.png``, ``OUT/<id>/overlay.png`` (the mesh on
the original photo) and ``OUT/<id>/overlay_crop.png``; then ``OUT/contact_sheet.png`` (and
``contact_sheet_2.png``... for long folders). Bad items are reported and skipped.

Names and paths read from files stay confined: ``<id>`` is made a safe file name inside OUT
(:func:`portraitrig.io.safepath.child`), a fit folder's manifest may only name files inside that
folder, and the original photos a parameter file records (its ``sources``) are read only as
images and listed in the summary. The job's own outputs in OUT are never taken as inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from portraitrig.errors import InputError, printable
from portraitrig.io.atomic import clean_orphans, write_image
from portraitrig.io.safepath import child, confined
from portraitrig.io.sources import load_source

SHEET_COLUMNS = ("photo", "overlay", "normal", "albedo", "shaded")
SHEET_ROWS_PER_PAGE = 40
MAX_SIZE = 4096  # px: the largest render (--size, or a parameter file's crop size)


@dataclass
class RenderJobConfig:
    size: int | None = None
    buffers: tuple[str, ...] = ("normal", "albedo", "shaded", "mask", "depth")
    sheet: bool = True
    thumb: int = 128
    device: str = "cpu"


@dataclass
class RenderJobSummary:
    out_dir: Path
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    sheets: list[Path] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)  # photos read because a parameter file names them

    @property
    def exit_code(self) -> int:
        return 0 if not self.failed else 1

    def text(self) -> str:
        lines = [f"{self.ok} rendered, {len(self.failed)} failed -> {self.out_dir}"]
        lines += [f"  contact sheet: {s}" for s in self.sheets]
        if self.originals:
            shown = ", ".join(printable(o) for o in self.originals[:3]) + (", ..." if len(self.originals) > 3 else "")
            lines.append(f"  read {len(self.originals)} original photo(s) named in parameter files: {shown}")
        lines += [f"  error: {m}" for m in self.failed[:20]]
        return "\n".join(lines)


@dataclass
class RenderItem:
    id: str
    params: object               # RigParams (B=1)
    crop_affine: np.ndarray | None
    source: str
    crop_image_path: Path | None = None
    fit: object | None = None    # a FitResult when fitted on the fly
    params_file: Path | None = None  # the parameter file it was read from


class SourceImages:
    """Original images of fits, by source: photos are read as asked; the frames of a video are
    read in one forward pass while they are asked for in order (as a fit folder lists them)."""

    def __init__(self):
        self._videos: dict[str, tuple[Iterator, int]] = {}

    def __call__(self, source: str) -> np.ndarray:
        from portraitrig.io.sources import split_frame_source
        from portraitrig.io.video import iter_video_frames

        frame = split_frame_source(source)
        if frame is None:
            return load_source(source)
        path, index = frame
        frames, last = self._videos.get(path, (None, -1))
        if frames is None or index <= last:  # new video, or asked backwards: start again
            frames = iter_video_frames(path)
        for fr in frames:
            if fr.index == index:
                self._videos[path] = (frames, index)
                return fr.image
        self._videos.pop(path, None)
        raise InputError(path, f"frame {index} not found")


def _iter_items(inputs: Sequence[str], rigger: Callable, model=None,
                own_output: Callable[[Path], bool] | None = None) -> Iterator[RenderItem | InputError]:
    """Render items of every input; a bad one is yielded as its InputError (never raised).
    ``model``: parameter files made for another face model are refused; ``own_output(path)``:
    files of a folder or pattern it accepts are left out."""
    from portraitrig.io.fitfolder import MANIFEST
    from portraitrig.face.params import RigParams
    from portraitrig.io.sources import expand_inputs

    def from_file(pfile: Path, item_id: str, crop_png: Path | None = None):
        params, extras, _ = RigParams.load(pfile, with_extras=True, model=model)
        aff = extras.get("crop_affine")
        src = params.sources[0] if params.sources and params.sources[0] else str(pfile)
        return RenderItem(item_id, params, None if aff is None else aff.double().numpy(), src, crop_png,
                          params_file=pfile)

    photos = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir() and (p / MANIFEST).exists():
            for it in _manifest_items(p / MANIFEST):
                if isinstance(it, InputError):
                    yield it
                    continue
                try:
                    pfile = confined(it.get("params"), p, p / MANIFEST)
                    crop = confined(it["crop"], p, p / MANIFEST) if it.get("crop") else None
                    yield from_file(pfile, it.get("id") or pfile.stem, crop if crop and crop.is_file() else None)
                except InputError as err:
                    yield err
        elif p.suffix in (".safetensors", ".npz"):
            try:
                yield from_file(p, p.stem)
            except InputError as err:
                yield err
        else:
            photos.append(inp)
    if not photos:
        return
    try:
        sources = expand_inputs(photos, exclude=own_output)
    except InputError as err:
        yield err
        return
    for src in sources:
        try:
            for item in src.iter_items():
                try:
                    fit = rigger().fit_image(item.load(), item.source)
                except Exception as err:  # no face, degenerate landmarks, decoder crash
                    yield err if isinstance(err, InputError) else InputError(item.source, f"{err.__class__.__name__}: {err}")
                    continue
                yield RenderItem(item.id, fit.params, fit.crop.affine, item.source, None, fit)
        except InputError as err:
            yield err


def _manifest_items(path: Path) -> Iterator[dict | InputError]:
    """The ``status: ok`` items of a fit folder's manifest; an unreadable manifest or a
    malformed item is yielded as an InputError naming the manifest."""
    import json

    try:
        items = json.loads(path.read_text(encoding="utf-8")).get("items", [])
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        yield InputError(path, f"unreadable manifest ({exc.__class__.__name__}: {exc})")
        return
    if not isinstance(items, list):
        yield InputError(path, "'items' must be a list")
        return
    for k, it in enumerate(items):
        if not isinstance(it, dict):
            yield InputError(path, f"item {k} is not an object")
        elif it.get("status") == "ok":
            yield it


def _own_output(out: Path, buffers: Sequence[str]) -> Callable[[Path], bool]:
    """Is ``path`` a file this job writes into ``out`` (a contact sheet, or an item's buffer /
    overlay PNG)? Used so that ``render DIR -o DIR`` never renders its own outputs."""
    import re

    root = out.resolve()
    sheet = re.compile(r"contact_sheet(_\d+)?\.png")
    names = {f"{b}.png" for b in buffers} | {"overlay.png", "overlay_crop.png"}

    def own(path: Path) -> bool:
        parent = path.resolve().parent
        return ((parent == root and sheet.fullmatch(path.name) is not None)
                or (parent.parent == root and path.name in names))
    return own


def _item_dir(out: Path, item_id: str, used: set[str]) -> Path:
    """``OUT/<safe id>/``, a new one for each item (ids equal up to case get ``_2``, ...)."""
    d = child(out, item_id)
    name, n = d.name, 1
    while name.lower() in used:
        n += 1
        name = f"{d.name}_{n}"
    used.add(name.lower())
    return child(out, name)


def run_render(inputs: Sequence[str], out_dir: str | Path, config: RenderJobConfig | None = None,
               progress: bool = True) -> RenderJobSummary:
    import torch
    from tqdm.auto import tqdm

    import cv2

    from portraitrig.capture.align import paste_back, warp_affine
    from portraitrig.capture.types import Crop
    from portraitrig.face.model import load_default_model
    from portraitrig.render.buffers import buffers_to_images, overlay_mesh, render_buffers

    from portraitrig.render.buffers import ALL_NAMES

    cfg = config or RenderJobConfig()
    unknown = [b for b in cfg.buffers if b not in ALL_NAMES]
    if unknown or not cfg.buffers:
        raise InputError(None, f"--buffers: unknown buffer(s) {', '.join(map(repr, unknown)) or 'none given'}; "
                               f"choose from {', '.join(ALL_NAMES)}")
    if cfg.size is not None and not 8 <= cfg.size <= MAX_SIZE:
        raise InputError(None, f"--size {cfg.size} is outside 8..{MAX_SIZE} pixels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_orphans(out, recursive=True)
    summary = RenderJobSummary(out)
    model = load_default_model().to(cfg.device)

    riggers = []

    def rigger():
        if not riggers:
            from portraitrig.pipeline import Rigger

            riggers.append(Rigger(crop_size=cfg.size or 256, device=cfg.device, model=model))
        return riggers[0]

    originals = SourceImages()

    names = tuple(dict.fromkeys(cfg.buffers + ("normal", "albedo", "shaded", "mask")))
    rows: list[list[np.ndarray]] = []
    used: set[str] = set()
    items = _iter_items(list(map(str, inputs)), rigger, model, _own_output(out, cfg.buffers))
    for item in tqdm(items, desc="render", unit="item", disable=not progress):
        if isinstance(item, InputError):
            summary.failed.append(str(item))
            continue
        try:
            size = cfg.size or int(item.params.crop_size)
            if size > MAX_SIZE:
                raise InputError(item.params_file or item.source,
                                 f"crop size {size} is over {MAX_SIZE} px: render it with --size")
            with torch.no_grad():
                bufs = render_buffers(item.params.to(cfg.device), model, size=size, names=names)
            imgs = buffers_to_images({k: v[:1].cpu() for k, v in bufs.items()})
            d = _item_dir(out, item.id, used)
            for name in cfg.buffers:
                write_image(d / f"{name}.png", imgs[name])
            if item.fit is not None and item.fit.image is not None:
                photo = item.fit.image
            else:
                photo = originals(item.source)
                if item.source not in summary.originals:
                    summary.originals.append(item.source)
            if item.crop_affine is None:
                raise InputError(item.source, "parameter file has no crop transform (crop_affine)")
            # the transform maps into the fit's crop; rendering at another size scales it
            affine = np.asarray(item.crop_affine, dtype=np.float64) * (size / int(item.params.crop_size))
            crop = Crop(affine, size, (photo.shape[1], photo.shape[0]))
            if item.crop_image_path is None:
                crop_img = warp_affine(photo, crop.affine, (size, size), border=cv2.BORDER_REFLECT_101)
            else:
                crop_img = _read_crop(item.crop_image_path, size)
            over_crop = overlay_mesh(crop_img, item.params, model, size)
            mask = bufs["mask"][0, 0].cpu().numpy()
            over = paste_back(photo, over_crop, crop, mask=_grow(mask, size // 32), feather=0.02)
            write_image(d / "overlay_crop.png", over_crop)
            write_image(d / "overlay.png", over)
            if cfg.sheet:
                cells = {"photo": crop_img, "overlay": over_crop, **imgs}
                rows.append([_thumb(cells[c], cfg.thumb) for c in SHEET_COLUMNS])
            summary.ok += 1
        except InputError as err:
            summary.failed.append(str(err))
        except Exception as err:  # noqa: BLE001 — one bad item never stops the batch
            summary.failed.append(printable(f"{item.source}: {err.__class__.__name__}: {err}"))
    for r in riggers:
        r.close()
    if cfg.sheet and rows:
        for page, start in enumerate(range(0, len(rows), SHEET_ROWS_PER_PAGE), 1):
            name = "contact_sheet.png" if page == 1 else f"contact_sheet_{page}.png"
            summary.sheets.append(write_image(out / name, contact_sheet(rows[start:start + SHEET_ROWS_PER_PAGE],
                                                                        SHEET_COLUMNS)))
    return summary


def _read_crop(path: Path, size: int) -> np.ndarray:
    from portraitrig.io.images import read_image

    img = read_image(path)
    if img.shape[0] != size:
        import cv2

        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    k = max(1, px) * 2 + 1
    return cv2.dilate((mask > 0.5).astype(np.float32), np.ones((k, k), np.uint8))


def _thumb(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    return cv2.resize(img[..., :3], (size, size), interpolation=cv2.INTER_AREA)


def contact_sheet(rows: list[list[np.ndarray]], header: Sequence[str] | None = None, pad: int = 4) -> np.ndarray:
    """Grid of equally sized uint8 thumbnails with an optional text header row."""
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    top = 18 if header else 0
    sheet = np.full((top + len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, cell in enumerate(r):
            y, x = top + pad + i * (h + pad), pad + j * (w + pad)
            sheet[y:y + h, x:x + w] = cell[..., :3]
    if header:
        im = Image.fromarray(sheet)
        draw = ImageDraw.Draw(im)
        for j, name in enumerate(header):
            draw.text((pad + j * (w + pad) + 4, 3), name, fill=(0, 0, 0))
        sheet = np.asarray(im)
    return sheet


__all__ = ["RenderJobConfig", "RenderJobSummary", "run_render", "contact_sheet"]
