"""Cost of decoding + face search on huge images, and recall on normal ones.

    python bench/bench_detect_large.py [--side 11000] [--photos N] [--out out/detect_large.json]

Cases (each in a fresh process so peak memory is its own):
- ``noface <side>``: a smooth-noise PNG of side x side px with no face (small file, huge image);
- ``small face 6000x4000``: scikit-image's astronaut at 400 px (face ~100 px wide) in a
  6000 x 4000 grey canvas;
- N real photos from the shared data (``photos/inthewild``): must still find their face.
Prints a table (decode s, detect s, faces, peak RSS MB, message) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Table, default_data_dir, machine_info, write_json  # noqa: E402


def _one(path: str) -> dict:
    """Decode + detect one file in this process; timings, faces and peak RSS."""
    from portraitrig.capture.detector import MediaPipeFaceMesh
    from portraitrig.errors import InputError
    from portraitrig.io.images import read_image

    out: dict = {"decode_s": None, "detect_s": None, "faces": None, "message": ""}
    t0 = time.perf_counter()
    try:
        image = read_image(path)
    except InputError as err:
        out["message"] = str(err)
    else:
        out["decode_s"] = time.perf_counter() - t0
        out["size"] = f"{image.shape[1]}x{image.shape[0]}"
        with MediaPipeFaceMesh() as det:
            t0 = time.perf_counter()
            faces = det.detect(image)
            out["detect_s"] = time.perf_counter() - t0
        out["faces"] = len(faces)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory, MB (VmHWM: unlike ru_maxrss it does not carry
    the parent's peak over fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _noface_png(folder: Path, side: int) -> Path:
    """A smooth colour-noise PNG (no face), side x side px."""
    import cv2

    path = folder / f"noface_{side}.png"
    if not path.exists():
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        big = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(path), big, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    return path


def _small_face_png(folder: Path) -> Path:
    import cv2
    from skimage import data

    path = folder / "small_face_6000x4000.png"
    if not path.exists():  # the face is about 100 px wide
        canvas = np.full((4000, 6000, 3), 128, np.uint8)
        canvas[2500:2900, 4000:4400] = cv2.resize(data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path), canvas[..., ::-1])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=11000, help="side of the no-face PNG, px")
    ap.add_argument("--photos", type=int, default=3, help="real photos to check (0: none)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "portraitrig_bench",
                    help="folder for the generated images")
    ap.add_argument("--out", type=Path, default=Path("out/detect_large.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    cases = [(f"noface {args.side}", _noface_png(args.work, args.side), 0),
             ("small face 6000x4000", _small_face_png(args.work), 1)]
    photos = sorted((default_data_dir() / "photos" / "inthewild").glob("*.jpg"))[: args.photos]
    cases += [(f"photo {p.name}", p, 1) for p in photos]
    t = Table("case", "file kB", "decode s", "detect s", "faces", "expected", "peak RSS MB", "message")
    for name, path, expected in cases:
        res = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{name}: worker failed\n{res.stderr}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        t.add(name, path.stat().st_size / 1024, r["decode_s"], r["detect_s"], r["faces"], expected,
              r["peak_rss_mb"], r["message"])
        print(t.rows[-1], flush=True)
    t.print()
    write_json(args.out, {"machine": machine_info(), "rows": t.records()})


if __name__ == "__main__":
    main()
