#!/usr/bin/env python
"""Wall time of ``portraitrig fit`` on a folder of videos with 1, 2, ... worker processes.

Fits every clip of --data/videos (at most --max-frames frames each) into a fresh folder per
run with ``run_fit(..., FitJobConfig(workers=N))`` and reports wall seconds, frames per second
and the speed-up over one worker (fitting in the job's own process). Each worker process has
its own rigger and MediaPipe graphs and one torch thread; its start-up (imports, model,
graphs: a few seconds) is included, as a user would see it. A video is one unit of work, so
one long clip bounds the speed-up (liveportrait_d6.mp4 holds 1008 of the 1249 frames). Runs alternate between the
worker counts --repeat times; the table shows the median.

Usage: python bench/bench_fit_jobs.py [--workers 1 2] [--max-frames N] [--repeat 1]
       [--out out/fit_jobs.json]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import default_data_dir, describe_machine, load_average, machine_info, workers_table, write_json  # noqa: E402

from portraitrig.apps.fitjob import FitJobConfig, run_fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-frames", type=int, default=None, help="at most this many frames per clip (default: all)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_fit_jobs"), help="scratch folder (deleted)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "fit_jobs.json")
    args = ap.parse_args()

    videos = sorted((args.data / "videos").glob("*.mp4"))
    runs: dict[int, list[dict]] = {w: [] for w in args.workers}
    try:
        for rep in range(args.repeat):
            for w in args.workers:
                out = args.work / f"w{w}_{rep}"
                shutil.rmtree(out, ignore_errors=True)
                load = load_average()
                t = time.perf_counter()
                s = run_fit([str(v) for v in videos], out, FitJobConfig(workers=w, max_frames=args.max_frames),
                            progress=False)
                wall = time.perf_counter() - t
                runs[w].append({"wall_s": wall, "frames": s.ok, "errors": s.errors, "load_before": load})
                print(f"workers={w} run {rep + 1}: {wall:.1f} s, {s.ok} frames fitted, {s.errors} failed", flush=True)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    table, rows = workers_table(runs, f"portraitrig fit, {len(videos)} clips, max_frames={args.max_frames} - "
                                      f"{describe_machine()}")
    table.print()
    write_json(args.out, {"machine": machine_info(), "videos": [v.name for v in videos],
                          "max_frames": args.max_frames, "rows": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
