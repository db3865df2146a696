#!/usr/bin/env python
"""Peak memory of ``portraitrig fit`` on one long video, by video length.

A long video is made by looping a real clip (default: the first of --data/videos with a face
in every frame, iplap_129.mp4) into an MJPG .avi in --work (not kept by default). Then
``python -m portraitrig.cli fit VIDEO -o OUT --max-frames N -q`` runs in a fresh process per N
and its peak resident memory (the kernel's ru_maxrss of that child, from os.wait4) and wall
time are recorded. A video longer than ``chunk_frames`` (100) kept frames is fitted in chunks
with an identity from a sample of frames, so the peak should stay flat as N grows; before
chunking, one joint solve took about 7 MB per frame (1.19 GB at 100 frames, 3.94 GB at 500,
7.61 GB at 1008).

Usage: python bench/bench_fit_memory.py [--frames 100 500 1000 5000] [--budget-s 3600]
       [--clip PATH] [--out out/fit_memory.json]
Lengths whose run would not finish inside the remaining --budget-s (estimated from the
seconds per frame measured so far) are skipped and reported as such.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Table, default_data_dir, describe_machine, machine_info, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_long_video(clip: Path, n: int, path: Path) -> Path:
    """Loop ``clip`` forwards and backwards (no jump cuts) into ``n`` frames of MJPG at ``path``."""
    import cv2

    from portraitrig.io.video import iter_video_frames, video_info

    frames = [f.image for f in iter_video_frames(clip)]
    fps = video_info(clip).fps or 25.0
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    for i in range(n):
        vw.write(cv2.cvtColor(frames[order[i % len(order)]], cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def run_fit(video: Path, out: Path, frames: int) -> dict:
    """One ``portraitrig fit`` in a fresh process: peak RSS (MB) and wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "portraitrig.cli", "fit", str(video), "-o", str(out), "--max-frames", str(frames), "-q"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    import json

    man = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
    return {"frames": frames, "exit_code": proc.returncode, "peak_rss_mb": usage.ru_maxrss / 1024,
            "wall_s": wall, "fitted": man.get("summary", {}).get("ok"), "output": output.strip()[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--clip", type=Path, default=None, help="clip to loop (default: videos/iplap_129.mp4)")
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 500, 1000, 5000])
    ap.add_argument("--budget-s", type=float, default=3600.0, help="stop starting runs past this")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_fit_memory"), help="scratch folder (deleted)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "fit_memory.json")
    args = ap.parse_args()

    clip = args.clip or args.data / "videos" / "iplap_129.mp4"
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    video = make_long_video(clip, max(args.frames), args.work / "long.avi")
    table = Table("frames", "peak RSS MB", "MB / frame", "wall s", "s / frame", "fitted",
                  title=f"portraitrig fit of one looped video ({clip.name}) - {describe_machine()}")
    rows, s_per_frame = [], None
    try:
        for n in sorted(args.frames):
            left = args.budget_s - (time.perf_counter() - t0)
            if s_per_frame is not None and s_per_frame * n > left:
                print(f"skipping {n} frames: about {s_per_frame * n:.0f} s needed, {left:.0f} s of the budget left")
                rows.append({"frames": n, "skipped": f"needs ~{s_per_frame * n:.0f} s, {left:.0f} s left"})
                continue
            r = run_fit(video, args.work / f"fit{n}", n)
            s_per_frame = r["wall_s"] / n
            rows.append(r)
            table.add(n, r["peak_rss_mb"], r["peak_rss_mb"] / n, r["wall_s"], s_per_frame, r["fitted"])
            print(f"{n} frames: peak {r['peak_rss_mb']:.0f} MB, {r['wall_s']:.0f} s, exit {r['exit_code']}", flush=True)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    table.print()
    write_json(args.out, {"machine": machine_info(), "clip": str(clip), "rows": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
