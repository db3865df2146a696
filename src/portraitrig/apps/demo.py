"""``portraitrig demo``: fit the rig to one photo and show what it can do.

With no argument it uses scikit-image's ``astronaut`` (a real portrait that ships with a
dependency, so the demo needs no download). Writes ``sheet.png`` (photo, mesh overlay, buffers,
relit / re-expressed / re-posed previews) and ``index.html`` into the output folder.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from portraitrig.errors import InputError, printable
from portraitrig.io.atomic import clean_orphans, write_image, write_json, write_text

MIN_SIZE, MAX_SIZE = 32, 2048  # crop size in pixels


@dataclass
class DemoResult:
    out_dir: Path
    sheet: Path
    html: Path
    fit: object


def sky_environment(width: int = 128) -> np.ndarray:
    """A small synthetic HDR sky (equirectangular, linear): a warm sun high on the subject's
    right, blue sky above, dark ground. Stands in for a user's .hdr file in the demo."""
    from portraitrig.light.sh import equirect_directions

    h = width // 2
    d = equirect_directions(h, width).numpy()              # (h, w, 3) unit directions, camera axes
    up = -d[..., 1]                                  # y is down in camera axes
    sky = np.where(up[..., None] > 0, np.array([0.35, 0.5, 0.9]) * (0.4 + 0.6 * up[..., None]),
                   np.array([0.12, 0.1, 0.08]))
    sun_dir = np.array([-0.6, -0.6, -0.5])
    sun_dir /= np.linalg.norm(sun_dir)
    sun = np.clip(d @ sun_dir, 0, 1) ** 64 * 40.0
    return (sky + sun[..., None] * np.array([1.0, 0.85, 0.6])).astype(np.float32)


# the demo's previews as edit specs (portraitrig.editspec: the parser the CLI and the web app use)
PREVIEWS = {
    "relight": [("as fitted", ""), ("preset: left", "light=left absolute=1"), ("preset: rim", "light=rim absolute=1"),
                ("preset: top", "light=top absolute=1")],
    "expression": [("smile", "smile=1"), ("jaw open", "jaw_open=1"), ("brows raised", "brows_raised=1"),
                   ("left eye closed", "eye_closed_left=1"),
                   ("both eyes closed", "eye_closed_left=1 eye_closed_right=1")],
    "pose and gaze": [("yaw -25°", "yaw=-25"), ("yaw +25°", "yaw=25"), ("pitch +15°", "pitch=15"),
                      ("roll +15°", "roll=15"), ("gaze left", "gaze=-25,0"), ("gaze up", "gaze=0,-20")],
}


def _previews(params, model):
    """(label, edited params) pairs shown in the demo: the spec previews, a warm directional light
    and a synthetic HDR sky."""
    from portraitrig import edits
    from portraitrig.editspec import parse
    from portraitrig.light.sh import sh_from_equirect

    out = {}
    for title, items in PREVIEWS.items():
        out[title] = []
        for label, text in items:
            fn = parse(text).params_fn(model)
            out[title].append((label, fn(params) if fn is not None else params))
    env_light = torch.as_tensor(sh_from_equirect(sky_environment()), dtype=params.light.dtype)
    out["relight"] += [("direction 60°/10° warm", edits.relight(params, {"direction": (60, 10),
                                                                         "colour": (1.0, 0.8, 0.6), "intensity": 1.2})),
                       ("HDR sky map", edits.relight(params, env_light))]
    return out


def _labelled_grid(sections: list[tuple[str, list[tuple[str, np.ndarray]]]], cell: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    pad, cap, head = 6, 14, 18
    ncol = max(len(cells) for _, cells in sections)
    H = sum(head + cell + cap + pad for _ in sections) + pad
    W = ncol * (cell + pad) + pad
    im = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    y = pad
    for title, cells in sections:
        draw.text((pad, y + 2), title, fill=(20, 20, 120))
        y += head
        for j, (label, img) in enumerate(cells):
            x = pad + j * (cell + pad)
            tile = Image.fromarray(np.asarray(img)[..., :3]).resize((cell, cell), Image.LANCZOS)
            im.paste(tile, (x, y))
            draw.text((x + 2, y + cell + 1), label[:26], fill=(0, 0, 0))
        y += cell + cap + pad
    return np.asarray(im)


def run_demo(photo: str | None = None, out_dir: str | Path = "portraitrig-demo", size: int = 256,
             device: str = "cpu") -> DemoResult:
    from portraitrig.capture.align import paste_back
    from portraitrig.pipeline import Rigger
    from portraitrig.io.sources import load_source
    from portraitrig.render.buffers import buffers_to_images, overlay_mesh, render_buffers

    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(None, f"--size {size} is outside {MIN_SIZE}..{MAX_SIZE} pixels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_orphans(out)
    if photo is None:
        from skimage import data

        image, source = np.ascontiguousarray(data.astronaut()), "scikit-image: data.astronaut()"
    else:
        image, source = load_source(photo), str(photo)

    with Rigger(crop_size=size, device=device) as rigger:
        fit = rigger.fit_image(image, source)
    model = rigger.model
    params = fit.params.to(device)

    with torch.no_grad():
        bufs = render_buffers(params, model, size=size)
    imgs = buffers_to_images({k: v.cpu() for k, v in bufs.items()})
    over_crop = overlay_mesh(fit.crop_image, fit.params, model, size)
    mask = bufs["mask"][0, 0].cpu().numpy()
    over_photo = paste_back(image, over_crop, fit.crop, mask=mask, feather=0.02)

    files = {"photo_overlay.png": over_photo, "crop.png": fit.crop_image, "crop_overlay.png": over_crop}
    files.update({f"buffer_{k}.png": v for k, v in imgs.items() if k in ("normal", "albedo", "shading", "shaded", "mask", "depth")})
    sections = [("fit: photo with mesh | crop | overlay | buffers (normal, albedo, shading, shaded)",
                 [("photo + mesh", over_photo), ("aligned crop", fit.crop_image), ("mesh overlay", over_crop)]
                 + [(k, imgs[k]) for k in ("normal", "albedo", "shading", "shaded") if k in imgs])]
    previews = _previews(params, model)
    for title, items in previews.items():
        batch = type(params).cat([p for _, p in items])
        with torch.no_grad():
            pb = render_buffers(batch, model, size=size, names=("shaded", "normal", "mask"))
        shaded = pb["shaded"].cpu()
        cells = []
        for i, (label, _) in enumerate(items):
            cells.append((label, buffers_to_images({"shaded": shaded}, index=i)["shaded"]))
            files[f"{title.split()[0]}_{i}.png"] = cells[-1][1]
        sections.append((f"{title} (re-rendered 'shaded' buffer)", cells))
    sheet = _labelled_grid(sections, cell=min(size, 192))

    for name, img in files.items():
        write_image(out / name, img)
    sheet_path = write_image(out / "sheet.png", sheet)
    p0 = fit.params
    summary = {
        "source": source,
        "image_size": list(fit.crop.image_size),
        "faces_found": fit.n_faces,
        "landmark_error_iod_pct": round(fit.landmark_error, 4),
        "pose_yaw_pitch_roll_deg": [round(float(x), 2) for x in p0.euler_degrees()[0]],
        "scale": float(p0.scale[0, 0]),
        "light_sh_rgb": p0.light[0].tolist(),
        "model": p0.model,
    }
    write_json(out / "fit.json", summary)
    p0.save(out / "params.safetensors", extras=fit.extras(model))
    # printable: a photo's file name may not be UTF-8
    html_path = write_text(out / "index.html", printable(_html(summary, sections_files=files)))
    return DemoResult(out, sheet_path, html_path, fit)


def _html(summary: dict, sections_files: dict) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(json.dumps(v) if not isinstance(v, str) else v)}</code></td></tr>"
                   for k, v in summary.items() if k != "light_sh_rgb")
    figs = "".join(f'<figure><img src="{esc(n)}" width="192"><figcaption>{esc(n[:-4])}</figcaption></figure>'
                   for n in sections_files)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>portraitrig demo</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto}} figure{{display:inline-block;margin:4px}}
figcaption{{font-size:12px;text-align:center}} th{{text-align:left;padding-right:1em}}</style></head><body>
<h1>portraitrig demo</h1>
<p>The rig fitted to <b>{esc(summary['source'])}</b>: MediaPipe landmarks → FFHQ-aligned crop → our
parametric face model (pose, identity, expression, gaze) → spherical-harmonics light and albedo →
rasterized buffers. Each preview is a rig-level edit, re-rendered.</p>
<p><img src="sheet.png" style="max-width:100%"></p>
<h2>Fit</h2><table>{rows}</table>
<h2>All images</h2>{figs}
<p>Parameters: <a href="params.safetensors">params.safetensors</a>, summary: <a href="fit.json">fit.json</a>.</p>
</body></html>
"""
