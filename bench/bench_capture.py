"""Capture-stage speed on real photos: decode, detection + landmarks, FFHQ alignment.

    python bench/bench_capture.py [PHOTOS_DIR] [--size 256] [--repeat 1] [--out out/capture.json]

Prints a table (per sub-folder and overall: images, faces found, median / mean / p90 ms per
stage) and writes JSON with the per-image timings and the machine description.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from portraitrig.capture.align import align_face
from portraitrig.capture.detector import MediaPipeFaceMesh
from portraitrig.errors import InputError
from portraitrig.io.atomic import write_json
from portraitrig.io.sources import expand_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

STAGES = ("decode", "detect", "align")


def machine() -> dict:
    """bench/common.py's machine description plus the capture libraries' versions."""
    info = machine_info()
    for mod in ("mediapipe", "cv2", "PIL", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:  # not installed: leave it out
            pass
    return info


def _ms(f, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, (time.perf_counter() - t) * 1000)
    return out, best


def run(photos: Path, size: int, repeat: int) -> dict:
    sources = [s for s in expand_inputs([photos], recursive=True) if s.kind == "image"]
    det = MediaPipeFaceMesh()
    t = time.perf_counter()
    det.detect(np.zeros((64, 64, 3), np.uint8))  # creates the graphs
    startup_ms = (time.perf_counter() - t) * 1000
    rows = []
    for src in sources:
        (item,) = list(src.iter_items())
        row = {"path": str(src.path), "group": src.path.parent.name}
        try:
            img, row["decode"] = _ms(item.load, repeat)
            row["width"], row["height"] = int(img.shape[1]), int(img.shape[0])
            faces, row["detect"] = _ms(lambda: det.detect(img), repeat)
            row["faces"] = len(faces)
            if faces:
                _, row["align"] = _ms(lambda: align_face(img, faces[0], size), repeat)
                row["score"] = round(faces[0].score, 3)
        except InputError as err:
            row["error"] = str(err)
        rows.append(row)
    return {"machine": machine(), "photos": str(photos), "size": size, "repeat": repeat,
            "startup_ms": round(startup_ms, 1), "images": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    groups["ALL"] = rows
    out = {}
    for g, rs in groups.items():
        s = {"images": len(rs), "with_face": sum(r.get("faces", 0) > 0 for r in rs),
             "errors": sum("error" in r for r in rs)}
        for st in STAGES:
            v = [r[st] for r in rs if st in r]
            if v:
                s[st] = {"median_ms": round(statistics.median(v), 2), "mean_ms": round(statistics.fmean(v), 2),
                         "p90_ms": round(float(np.percentile(v, 90)), 2)}
        out[g] = s
    return out


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"machine: {m.get('cpu')} ({m.get('cpu_cores')} cores), mediapipe {m.get('mediapipe')}, "
          f"torch {m.get('torch')}; crop {res['size']}px; graph start-up {res['startup_ms']} ms")
    head = f"{'group':<12}{'images':>7}{'faces':>7}{'err':>5}" + "".join(
        f"{st + ' med/mean/p90 ms':>30}" for st in STAGES)
    print(head)
    print("-" * len(head))
    for g, s in res["summary"].items():
        cells = "".join(
            f"{'%.1f / %.1f / %.1f' % (s[st]['median_ms'], s[st]['mean_ms'], s[st]['p90_ms']) if st in s else '-':>30}"
            for st in STAGES)
        print(f"{g:<12}{s['images']:>7}{s['with_face']:>7}{s['errors']:>5}{cells}")
    missed = [r["path"] for r in res["images"] if r.get("faces", 1) == 0 or "error" in r]
    if missed:
        print("no face / error:", *missed, sep="\n  ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/faces/photos"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1, help="time each stage this many times, keep the best")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "out" / "capture.json"))
    a = ap.parse_args(argv)
    res = run(Path(a.photos), a.size, a.repeat)
    print_table(res)
    write_json(a.out, res)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
