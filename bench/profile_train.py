"""Where a DiffusionRig training step spends its GPU time: throughput of several training
variants in one process, and a kernel breakdown (convolutions, matmuls, fused Triton
reductions / pointwise, optimizer, copies) of the first one, with the GPU's idle share.

    python bench/profile_train.py --variants fast-b32,fast-b32-nchw,fast-b64 --out prof.json
    python bench/profile_train.py --device cpu --config tiny --variants fast-b2 --steps 2   # checks the script

A variant is ``NAME-bN[-flag...]``: NAME in eager16 (fp16 autocast + GradScaler, eager, NCHW,
unfused AdamW: the plain reference recipe) or fast (bf16, compile, channels_last, fused AdamW);
flags: nchw (contiguous), ca (compile mode max-autotune-no-cudagraphs), cdt (Inductor
coordinate-descent tuning), gc (gradient checkpointing), natgn (PyTorch's own GroupNorm
instead of the model's per-channel-statistics form under compile). Time per step is the median of
``--steps`` CUDA-event-timed steps after three warm-up steps.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Table, describe_machine, fast_cuda_settings, fixed_batch_trainer, machine_info, write_json  # noqa: E402

from portraitrig.methods.diffusionrig.config import preset  # noqa: E402
from portraitrig.accel.norms import ChannelStatsGroupNorm  # noqa: E402
from portraitrig.training.config import TrainConfig  # noqa: E402

CATEGORIES = (  # first match wins; kernel names lower-cased (Triton first: its fused kernels
    # are named after the ops they fuse, e.g. triton_poi_fused_convolution_... is a bias add)
    ("triton reduction", ("triton_red", "triton_per")),
    ("triton pointwise", ("triton_poi",)),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    # cuDNN's Hopper convolutions are sm90_xmma_{fprop,dgrad,wgrad}_implicit_gemm...; cuBLAS's
    # sm90_xmma_gemm... are matmuls
    ("conv", ("conv", "cudnn", "implicit", "dgrad", "wgrad", "fprop", "nhwc", "nchw")),
    ("matmul", ("gemm", "cutlass", "nvjet", "sm90_", "cublas")),
    ("optimizer/EMA", ("multi_tensor", "foreach", "adam", "lerp")),
    ("norm (eager)", ("group_norm", "groupnorm", "batch_norm", "bn_", "welford")),
    ("copy/layout", ("copy", "memcpy", "memset", "transpose", "cat", "index")),
)


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


TRAIN_FLAGS = {"nchw", "ca", "cdt", "gc", "natgn"}


def parse_variant(spec: str, dev) -> tuple[int, TrainConfig, dict]:
    parts = spec.split("-")
    if len(parts) < 2 or not parts[1].lstrip("b").isdigit():
        raise ValueError(f"variant {spec!r}: want NAME-bN[-flag...], e.g. fast-b32-nchw")
    kind, batch, flags = parts[0], int(parts[1].lstrip("b")), set(parts[2:])
    if flags - TRAIN_FLAGS:
        raise ValueError(f"variant {spec!r}: unknown flags {sorted(flags - TRAIN_FLAGS)} (know {sorted(TRAIN_FLAGS)})")
    cuda = dev.type == "cuda"
    if kind == "eager16":
        tc = TrainConfig(batch_size=batch, precision="fp16" if cuda else "fp32", compile=False,
                         channels_last=False, fused_adam=False)
    elif kind == "fast":
        tc = TrainConfig(batch_size=batch, precision="bf16" if cuda else "fp32", compile=cuda,
                         channels_last="nchw" not in flags, fused_adam=True)
        if "ca" in flags:
            tc.compile_mode = "max-autotune-no-cudagraphs"
    else:
        raise ValueError(f"unknown variant {spec!r}")
    inductor = {"coordinate_descent_tuning": True} if "cdt" in flags else {}
    return batch, tc, inductor


def kernel_breakdown(prof, steps: int) -> dict:
    """Per-category and top-kernel GPU time per step (ms) and the GPU's busy share."""
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not kernels:
        return {}
    by_name: dict = defaultdict(lambda: [0.0, 0])
    spans = []
    for e in kernels:
        d = e.time_range.end - e.time_range.start
        by_name[e.name][0] += d / 1e3
        by_name[e.name][1] += 1
        spans.append((e.time_range.start, e.time_range.end))
    spans.sort()
    busy, cur_s, cur_e = 0.0, *spans[0]
    for s, t in spans[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            cur_s, cur_e = s, t
        else:
            cur_e = max(cur_e, t)
    busy += cur_e - cur_s
    wall = spans[-1][1] - spans[0][0]
    cats: dict = defaultdict(float)
    for name, (ms, _) in by_name.items():
        cats[category(name)] += ms / steps
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:30]
    return {"busy_share": busy / wall, "kernel_ms_per_step": sum(v[0] for v in by_name.values()) / steps,
            "categories_ms_per_step": dict(sorted(cats.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"name": n[:160], "ms_per_step": ms / steps, "calls_per_step": c / steps,
                             "category": category(n)} for n, (ms, c) in top]}


def run_variant(spec, cfg, dev, steps, profile, results, table):
    import torch._dynamo
    import torch._inductor.config as ic

    batch, tc, inductor = parse_variant(spec, dev)
    saved = {k: getattr(ic, k) for k in inductor}
    for k, v in inductor.items():
        setattr(ic, k, v)
    ChannelStatsGroupNorm.by_channels = "natgn" not in spec.split("-")[2:]
    S = cfg.image_size
    g = torch.Generator(device=dev).manual_seed(0)
    x0 = torch.rand(batch, 3, S, S, device=dev, generator=g) * 2 - 1
    buf = torch.rand(batch, cfg.buffer_channels, S, S, device=dev, generator=g) * 2 - 1
    tr = None
    try:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        tr = fixed_batch_trainer(cfg, tc, dev, x0, buf, grad_checkpointing="gc" in spec.split("-")[2:])
        for k in range(3):
            tr.step(k)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        warm = time.perf_counter() - t0
        times = []
        for k in range(steps):
            if dev.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                loss, _ = tr.step(3 + k)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t1 = time.perf_counter()
                loss, _ = tr.step(3 + k)
                times.append(time.perf_counter() - t1)
        # back-to-back steps (no sync between them): what a training loop sees
        t1 = time.perf_counter()
        for k in range(steps):
            loss, _ = tr.step(3 + steps + k)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt_loop = (time.perf_counter() - t1) / steps
        dt = float(np.median(times))
        rec = {"batch": batch, "s_per_step": dt, "images_per_s": batch / dt, "loop_images_per_s": batch / dt_loop,
               "warmup_s": warm, "finite_loss": bool(torch.isfinite(loss)),
               "peak_mem_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None}
        if profile:
            from torch.profiler import ProfilerActivity, profile as tprof

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with tprof(activities=acts) as prof:
                for k in range(3):
                    tr.step(100 + k)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
            rec["profile"] = kernel_breakdown(prof, 3)
        results[spec] = rec
        table.add(spec, batch, dt * 1e3, batch / dt, batch / dt_loop, warm, rec["peak_mem_gb"] or 0.0)
        print(f"{spec}: {batch / dt:.1f} img/s (loop {batch / dt_loop:.1f}), warm-up {warm:.0f} s", flush=True)
    except Exception as exc:
        traceback.print_exc()
        results[spec] = {"error": repr(exc)}
    finally:
        for k, v in saved.items():
            setattr(ic, k, v)
        ChannelStatsGroupNorm.by_channels = True
        tr = None
        gc.collect()
        torch._dynamo.reset()
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def print_profile(spec, prof, cfg_flops_per_image, batch, unit: str = "step"):
    """Print a kernel_breakdown; ``unit`` names what one profiled "step" was (a training step,
    one UNet forward); ``cfg_flops_per_image`` is that unit's FLOPs per image."""
    if not prof:
        return
    print(f"\n{spec}: GPU busy {prof['busy_share']:.1%} of the profiled span; kernels {prof['kernel_ms_per_step']:.1f} "
          f"ms/{unit}")
    for cat, ms in prof["categories_ms_per_step"].items():
        print(f"  {cat:18s} {ms:8.2f} ms/{unit}")
    conv = prof["categories_ms_per_step"].get("conv", 0) + prof["categories_ms_per_step"].get("matmul", 0)
    if conv and cfg_flops_per_image:
        print(f"  conv+matmul rate if they did all the FLOPs: {cfg_flops_per_image * batch / (conv / 1e3) / 1e12:.0f} "
              f"TFLOP/s")
    for k in prof["top_kernels"][:20]:
        print(f"  {k['ms_per_step']:7.2f} ms  x{k['calls_per_step']:<5.0f} {k['category']:16s} {k['name'][:90]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default="256")
    ap.add_argument("--variants", default="eager16-b16,fast-b32,fast-b32-nchw,fast-b64")
    ap.add_argument("--profile", default=None, help="comma list of variants to profile (default: the first fast one)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="out/profile_train.json")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    fast_cuda_settings(dev)
    cfg = preset(args.config)
    info = machine_info()
    print(describe_machine(info), flush=True)
    variants = [v for v in args.variants.split(",") if v]
    prof_set = set(args.profile.split(",")) if args.profile else {next((v for v in variants if v.startswith("fast")),
                                                                       variants[0])}
    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        from portraitrig.methods.diffusionrig.model import DiffusionRigModel

        with torch.device("meta"):
            m = DiffusionRigModel(cfg)
            S = cfg.image_size
            x = torch.randn(1, 3, S, S)
            with FlopCounterMode(display=False) as fc:
                m(x, torch.tensor([500]), torch.randn(1, cfg.buffer_channels, S, S), x).sum().backward()
            flops = fc.get_total_flops()
    except Exception:
        traceback.print_exc()
    results: dict = {"machine": info, "config": args.config, "train_gflop_per_image": flops and flops / 1e9}
    table = Table("variant", "batch", "ms/step", "img/s", "loop img/s", "warm-up s", "peak GB",
                  title=f"DiffusionRig {args.config} px training step on {dev}")
    for v in variants:
        run_variant(v, cfg, dev, args.steps, v in prof_set, results, table)
        write_json(args.out, results)
    for v in variants:
        if "profile" in results.get(v, {}):
            print_profile(v, results[v]["profile"], flops, results[v]["batch"])
    table.print()
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
