#!/usr/bin/env python
"""Wall time of fitting ONE video in 1, 2, ... processes (``fit_video_parallel``: the identity
from frames spread over the clip in this process, then chunks handed to spawned workers; one
worker = the serial ``Rigger.fit_video``). This is the fitting half of a reenactment's end-to-end
time (``portraitrig reenact --workers N``). Worker start-up (imports, model, MediaPipe graphs)
is included, as a user would see it. Runs alternate between the worker counts --repeat times;
the table shows the median.

Usage: python bench/bench_fit_video.py VIDEO [--workers 1 2] [--max-frames 250] [--repeat 1]
       [--out out/fit_video.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import describe_machine, load_average, machine_info, workers_table, write_json  # noqa: E402

from portraitrig.pipeline import Rigger, fit_video_parallel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-frames", type=int, default=250, help="fit at most this many frames (default 250: 10 s at 25 fps)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "fit_video.json")
    args = ap.parse_args()
    runs: dict[int, list[dict]] = {w: [] for w in args.workers}
    for rep in range(args.repeat):
        for w in args.workers:
            load = load_average()
            t = time.perf_counter()
            with Rigger() as rigger:
                if w == 1:
                    fits = rigger.fit_video(args.video, max_frames=args.max_frames)
                else:
                    fits, _ = fit_video_parallel(args.video, w, rigger, max_frames=args.max_frames)
            wall = time.perf_counter() - t
            runs[w].append({"wall_s": wall, "frames": len(fits), "load_before": load})
            print(f"workers={w} run {rep + 1}: {wall:.1f} s, {len(fits)} frames fitted", flush=True)
    table, rows = workers_table(runs, f"one video ({args.video.name}, <= {args.max_frames} frames) - "
                                      f"{describe_machine()}")
    table.print()
    write_json(args.out, {"machine": machine_info(), "video": args.video.name, "max_frames": args.max_frames,
                          "rows": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
