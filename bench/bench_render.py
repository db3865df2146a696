"""Benchmark the rasterizer, the render buffers and the photometric fit.

Uses the shipped face model and synthetic parameters (neutral + random pose / expression /
light); needs only torch + numpy (no mediapipe, no data). Prints a table and writes JSON.

    python bench/bench_render.py                      # CPU, all threads and 1 thread
    python bench/bench_render.py --device cuda --compile
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from portraitrig.face.model import load_default_model  # noqa: E402
from portraitrig.face.params import RigParams  # noqa: E402
from portraitrig.face.base import posed_vertices  # noqa: E402
from portraitrig.fit.photometric import fit_appearance  # noqa: E402
from portraitrig.light.sh import PRESETS, preset  # noqa: E402
from portraitrig.render.buffers import render_buffers  # noqa: E402
from portraitrig.render.raster import rasterize  # noqa: E402

BUFFERS = ("normal", "albedo", "shading", "shaded", "mask", "depth", "region")


def synthetic_params(model, batch: int, device, seed: int = 0) -> RigParams:
    """Neutral params with random head pose (+-30 yaw, +-15 pitch/roll), expression, light."""
    g = torch.Generator().manual_seed(seed)
    p = RigParams.neutral(model, batch)
    ang = (torch.rand(batch, 3, generator=g) * 2 - 1) * torch.tensor([0.5, 0.25, 0.25])
    from portraitrig.face.params import euler_to_matrix, matrix_to_axis_angle

    p.rotation = matrix_to_axis_angle(euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2]))
    p.expression = torch.randn(batch, model.n_expr, generator=g) * 0.7
    p.identity = torch.randn(batch, model.n_id, generator=g) * 0.7
    names = sorted(PRESETS)
    p.light = torch.stack([preset(names[i % len(names)]) for i in range(batch)])
    return p.to(device)


def timeit(fn, device, repeat: int, warmup: int = 2) -> list[float]:
    """Wall times (s) of ``fn()``; CUDA: events around each call after synchronising."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def check_against_cpu(model, device) -> dict:
    """Max differences of the device's rasterizer and buffers from the CPU's (same inputs)."""
    p = synthetic_params(model, 8, "cpu")
    with torch.no_grad():
        v = posed_vertices(model, p)
        a, b = rasterize(v, model.faces, 256), rasterize(v.to(device), model.faces.to(device), 256)
        ba = render_buffers(p, model, 256, BUFFERS)
        bb = render_buffers(p.to(device), model.to(device), 256, BUFFERS)
    return {"tri_id_equal": bool(torch.equal(a.tri_id, b.tri_id.cpu())),
            "bary_max_diff": float((a.bary - b.bary.cpu()).abs().max()),
            **{f"{k}_max_diff": float((ba[k] - bb[k].cpu()).abs().max()) for k in BUFFERS}}


def machine_info(device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="CPU thread counts to run (default: all and 1)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd render_buffers (GPU)")
    ap.add_argument("--fit-batches", type=int, nargs="*", default=[1, 8], help="photometric fit batch sizes")
    ap.add_argument("--out", default="out/bench_render.json")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    model = load_default_model()
    check = check_against_cpu(model, device) if device.type != "cpu" else None
    if check:
        print("device vs CPU:", check)
    model = model.to(device)
    threads = args.threads if args.threads is not None else (
        sorted({torch.get_num_threads(), 1}, reverse=True) if device.type == "cpu" else [torch.get_num_threads()])
    rows = []
    print(f"model: V={model.n_vertices} F={int(model.faces.shape[0])}  device={device}  {machine_info(device).get('gpu', '')}")
    hdr = f"{'what':<22}{'size':>6}{'batch':>7}{'threads':>8}{'ms/batch':>11}{'ms/image':>10}{'covered':>9}"
    print(hdr)
    print("-" * len(hdr))

    def record(what, size, batch, nthreads, times, extra=None):
        med = statistics.median(times)
        row = dict(what=what, size=size, batch=batch, threads=nthreads, ms_per_batch=med * 1e3,
                   ms_per_image=med * 1e3 / batch, times_s=times, **(extra or {}))
        rows.append(row)
        cov = f"{extra['covered']:.2f}" if extra and "covered" in extra else ""
        print(f"{what:<22}{size:>6}{batch:>7}{nthreads:>8}{row['ms_per_batch']:>11.2f}{row['ms_per_image']:>10.3f}{cov:>9}",
              flush=True)

    for nt in threads:
        torch.set_num_threads(nt)
        for size in args.sizes:
            for batch in args.batches:
                if device.type == "cpu" and nt == 1 and batch * size * size > 8 * 512 * 512:
                    continue  # 1-thread CPU at 512 x 64 takes minutes
                p = synthetic_params(model, batch, device)
                verts = posed_vertices(model, p)
                faces = model.faces
                with torch.no_grad():
                    cov = float(rasterize(verts, faces, size).mask.float().mean())
                    rep = args.repeat if batch * size * size <= 8 * 512 * 512 or device.type == "cuda" else 2
                    record("rasterize", size, batch, nt, timeit(lambda: rasterize(verts, faces, size), device, rep),
                           {"covered": cov})
                    record("buffers(all)", size, batch, nt,
                           timeit(lambda: render_buffers(p, model, size, BUFFERS), device, rep), {"covered": cov})
                    if args.compile and device.type == "cuda":
                        try:
                            fn = torch.compile(lambda: render_buffers(p, model, size, BUFFERS), dynamic=False)
                            record("buffers(compiled)", size, batch, nt, timeit(fn, device, rep, warmup=3))
                        except Exception as exc:  # report, do not fail the benchmark
                            print(f"torch.compile failed: {exc.__class__.__name__}: {str(exc)[:200]}")
        for batch in args.fit_batches:
            p = synthetic_params(model, batch, device, seed=1)
            with torch.no_grad():
                imgs = render_buffers(p, model, 256, ("shaded",))["shaded"].clamp(0, 1)
            q = RigParams.neutral(model, batch).to(device)
            record("fit_appearance", 256, batch, nt, timeit(lambda: fit_appearance(imgs, q, model), device, 3, warmup=1))
            record("fit_appearance(shared)", 256, batch, nt,
                   timeit(lambda: fit_appearance(imgs, q, model, shared_albedo=True), device, 3, warmup=1))

    out = Path(args.out)
    result = {"machine": machine_info(device), "model": {"V": model.n_vertices, "F": int(model.faces.shape[0])},
              "buffers": BUFFERS, "device_vs_cpu": check, "rows": rows}
    try:
        from portraitrig.io.atomic import write_json

        write_json(out, result)
    except ImportError:  # pragma: no cover - minimal environments
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
