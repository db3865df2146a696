"""Where a video-renderer training step spends its time: for each variant (the preset with some
settings changed), the first step's time (compilation included), training steps per second over
``--steps`` steps of the real loop's Trainer, host synchronisations per step (CUDA's sync debug
mode), and the GPU's busy share (kernel time over wall time, from the profiler, over 20 steps).
A rate far below what the GPU could do with a busy share well under 1 means the step is limited
by the host: Python and kernel launches, or a synchronisation that stops the host queueing ahead.

    python bench/profile_video_step.py --dir .devdata/v14 --variants "compiled=-;eager=train.compile=false"
    python bench/profile_video_step.py --dir DIR --size 32 --preset tiny --device cpu --steps 3   # checks the script

Variants are separated by ";"; each is NAME=SETS, SETS comma-separated KEY=VALUE settings of the preset (as
``bench_video.py run --set``), or NAME=- for the preset as it is. Writes --out (JSON) when given.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Table, describe_machine, machine_info, write_json  # noqa: E402

from portraitrig.config import set_from_text  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, sets = text.partition("=")
    if not name or not sets:
        raise SystemExit(f"variant {text!r}: NAME=SETS or NAME=-")
    if sets == "-":
        return name, {}
    out = {}
    for kv in sets.split(","):
        k, eq, v = kv.partition("=")
        if not eq:
            raise SystemExit(f"variant {name}: setting {kv!r} is not KEY=VALUE")
        out[k] = v
    return name, out


def gpu_busy_share(trainer, first: int, n: int) -> float | None:
    """Kernel time / wall time of ``n`` steps (None on a CPU)."""
    if trainer.dev.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for k in range(n):
            trainer.step(first + k)
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    busy = sum(e.device_time for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    return busy / wall


def syncs_per_step(trainer, first: int, n: int) -> float | None:
    if trainer.dev.type != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for k in range(n):
                trainer.step(first + k)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    hits = Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower())
    for where, k in hits.most_common():
        print(f"  sync: {where} ({k / n:g} per step)")
    return sum(hits.values()) / n


def measure(data, preset: str, sets: dict, device: str, steps: int) -> dict:
    from portraitrig.methods.video.config import PRESETS
    from portraitrig.methods.video.method import VideoMethod
    from portraitrig.training.loop import Trainer

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    cfg = set_from_text(PRESETS[preset](), sets)
    method = VideoMethod(cfg, data, device, say=None)
    tr = Trainer(method, cfg.train)
    t = time.perf_counter()
    tr.step(0)
    sync()
    first = time.perf_counter() - t
    for k in range(1, 11):
        tr.step(k)
    sync()
    t = time.perf_counter()
    for k in range(11, 11 + steps):
        tr.step(k)
    sync()
    rate = steps / (time.perf_counter() - t)
    k = 11 + steps
    n_sync = syncs_per_step(tr, k, 5)
    busy = gpu_busy_share(tr, k + 5, 20)
    return {"first_step_s": round(first, 2), "steps_per_s": round(rate, 2),
            "images_per_s": round(rate * cfg.train.batch_size, 1), "syncs_per_step": n_sync,
            "gpu_busy": None if busy is None else round(busy, 3), "batch": cfg.train.batch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="a clip's video data (bench_video.py prepare)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--preset", help="video preset (default: the size's)")
    ap.add_argument("--variants", default="eager=-", help="NAME=SETS;NAME=SETS... (';'-separated)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per variant")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from portraitrig.methods.video.data import VideoData

    data = VideoData.load(a.dir / f"target_{a.size}.safetensors")
    print(describe_machine())
    t = Table("variant", "first step s", "steps / s", "images / s", "syncs / step", "GPU busy")
    rows = {}
    for text in a.variants.split(";"):
        name, sets = parse_variant(text)
        r = measure(data, a.preset or str(a.size), sets, a.device, a.steps)
        rows[name] = {"settings": sets, **r}
        t.add(name, r["first_step_s"], r["steps_per_s"], r["images_per_s"], r["syncs_per_step"], r["gpu_busy"])
        print(name, r, flush=True)
    t.print()
    if a.out:
        write_json(a.out, {"machine": machine_info(), "frames": data.n_train, "variants": rows})


if __name__ == "__main__":
    main()
