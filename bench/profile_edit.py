"""Where a batched DiffusionRig edit spends its GPU time.

An edit of B different photos is 20 inversion + 20 decoding UNet forwards at batch B, so the
edit rate is set by one forward. This script times the whole edit loop (the DDIMEngine, one CUDA
graph per direction) under several compile variants, breaks one compiled forward down by kernel
category (cuDNN convolutions, fused Triton GroupNorm/SiLU/add kernels, copies, attention), and
measures the two ceilings that bound it on the machine: cuDNN's rate on the UNet's own 3x3
convolutions, level by level, and the bandwidth of a fused GroupNorm + scale-shift + SiLU pass.

    python bench/profile_edit.py --variants b16,b32,b16-cdt --out out/profile_edit.json
    python bench/profile_edit.py --device cpu --config tiny --variants b2 --steps 2   # checks the script

A variant is ``bN[-flag...]``; flags: cdt (Inductor coordinate-descent tuning of the Triton
kernels), ma (compile with max-autotune: Triton convolution/matmul templates benchmarked
against cuDNN, epilogue fusion), nobench (cuDNN autotuning off: cuDNN's heuristic choice),
nolayout (no forced channels-last layout in Inductor), natgn (PyTorch's own GroupNorm
decomposition under compile instead of the model's per-channel-statistics form), nounroll
(Inductor does not unroll small reductions, e.g. the 4 channel statistics of a group, into the
kernels that use them), noconvmm (1x1 convolutions stay convolutions instead of matmuls),
rrt1 (Inductor realizes every reused pointwise result where it is defined: realize_reads_threshold
1), nocat (without the post-grad pass that keeps the decoder's skip concatenations channels-last,
accel.inductor.channels_last_cat_pass: they are then realized NCHW; docs/diffusion_performance.md).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Table, describe_machine, machine_info, sync, timeit, write_json  # noqa: E402
from profile_train import kernel_breakdown, print_profile  # noqa: E402

from portraitrig.methods.diffusionrig.config import preset  # noqa: E402
from portraitrig.methods.diffusionrig.engine import DDIMEngine  # noqa: E402
from portraitrig.accel.inductor import inductor_options  # noqa: E402
from portraitrig.accel.norms import ChannelStatsGroupNorm, group_norm_by_channels, use_channel_stats_group_norm  # noqa: E402
from portraitrig.methods.diffusionrig.model import DiffusionRigModel  # noqa: E402

FLAGS = {"cdt", "ma", "nobench", "nolayout", "natgn", "nounroll", "noconvmm", "rrt1", "nocat"}


def parse_variant(spec: str) -> tuple[int, set]:
    parts = spec.split("-")
    if not parts[0].startswith("b") or not parts[0][1:].isdigit() or int(parts[0][1:]) < 1:
        raise ValueError(f"variant {spec!r}: want bN[-flag...], e.g. b16-cdt")
    flags = set(parts[1:])
    if flags - FLAGS:
        raise ValueError(f"variant {spec!r}: unknown flags {sorted(flags - FLAGS)} (know {sorted(FLAGS)})")
    return int(parts[0][1:]), flags


def gpu_time(fn, dev, repeat: int, warmup: int = 1) -> float:
    """Median seconds per call: CUDA events on a GPU (what the committed figures used), else
    common.timeit's wall clock."""
    if dev.type != "cuda":
        return timeit(fn, repeat=repeat, warmup=warmup)["median_s"]
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return float(np.median(ts))


def unet_flops(cfg) -> float:
    """FLOPs (2 per multiply-add) of one denoiser forward at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        m = DiffusionRigModel(cfg)
        S = cfg.image_size
        with FlopCounterMode(display=False) as fc:
            m.denoise(torch.randn(1, 3, S, S), torch.tensor([500]), torch.randn(1, cfg.buffer_channels, S, S),
                      torch.randn(1, m.latent_proj.out_features))
    return float(fc.get_total_flops())


def make_engine(model, steps: int, flags: set, dev) -> DDIMEngine:
    use_channel_stats_group_norm(model)  # what compile_module does, here with the variant's own options
    for m in model.modules():
        if isinstance(m, ChannelStatsGroupNorm):
            m.by_channels = "natgn" not in flags
    eng = DDIMEngine(model, steps, fast=dev.type == "cuda", compile=False, cuda_graph=dev.type == "cuda",
                     cudnn_benchmark="nobench" not in flags)
    if dev.type == "cuda":
        opts = inductor_options("nolayout" not in flags)
        if "ma" in flags:
            opts.update({"max_autotune": True, "epilogue_fusion": True})
        if "cdt" in flags:
            opts["coordinate_descent_tuning"] = True
        if "noconvmm" in flags:
            opts["conv_1x1_as_mm"] = False
        if "rrt1" in flags:
            opts["realize_reads_threshold"] = 1
        if "nocat" in flags:
            opts.pop("post_grad_custom_post_pass", None)
        if "nounroll" in flags:
            opts["unroll_reductions_threshold"] = 1
        eng._denoise = torch.compile(model.denoise, dynamic=False, options=opts)
    return eng


def run_variant(spec, model, cfg, dev, steps, repeat, profile, flops, results, table):
    import torch._dynamo

    B, flags = parse_variant(spec)
    S = cfg.image_size
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(B, 3, S, S, device=dev, generator=g) * 2 - 1
    buf = torch.rand(B, cfg.buffer_channels, S, S, device=dev, generator=g) * 2 - 1
    cond = torch.randn(B, model.latent_proj.out_features, device=dev, generator=g)
    try:
        t0 = time.perf_counter()
        eng = make_engine(model, steps, flags, dev)
        edit = lambda: eng("sample", eng("invert", x, buf, cond), buf, cond)  # noqa: E731
        edit()
        sync()
        warm = time.perf_counter() - t0
        sec = gpu_time(edit, dev, repeat)
        fwd = sec / (2 * steps)
        rec = {"batch": B, "flags": sorted(flags), "edit_s": sec, "edits_per_s": B / sec,
               "ms_per_forward": fwd * 1e3, "warmup_s": warm,
               "tflops": flops * B / fwd / 1e12 if flops else None}
        if profile:
            from torch.profiler import ProfilerActivity, profile as tprof

            bb = buf.to(eng.dtype)
            if dev.type == "cuda":
                bb = bb.contiguous(memory_format=torch.channels_last)
            cc = cond.to(eng.dtype)
            with torch.no_grad(), eng._backends():  # not graphed: the kernels one by one
                eng._loop("invert", x, bb, cc)
                sync()
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
                with tprof(activities=acts) as prof:
                    eng._loop("invert", x, bb, cc)
                    sync()
            rec["profile_per_forward"] = kernel_breakdown(prof, steps)
        results[spec] = rec
        table.add(spec, B, sec * 1e3, B / sec, fwd * 1e3, rec["tflops"] or 0.0, warm)
        print(f"{spec}: {B / sec:.2f} edits/s, {fwd * 1e3:.2f} ms per forward, warm-up {warm:.0f} s", flush=True)
    except Exception as exc:
        traceback.print_exc()
        results[spec] = {"error": repr(exc)}
    finally:
        eng = None
        gc.collect()
        torch._dynamo.reset()
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def conv_levels(cfg, dev, batch: int, repeat: int) -> list[dict]:
    """cuDNN on each level's 3x3 convolution (C -> C, bf16, channels_last, autotuned): TFLOP/s."""
    u = cfg.unet
    out = []
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    mf = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, benchmark=True):
        for i, m in enumerate(u.channel_mult):
            C, R = int(u.base_channels * m), cfg.image_size // 2 ** i
            conv = torch.nn.Conv2d(C, C, 3, padding=1).to(dev, dt, memory_format=mf)
            x = torch.randn(batch, C, R, R, device=dev, dtype=dt).contiguous(memory_format=mf)
            sec = gpu_time(lambda: conv(x), dev, repeat, warmup=3)
            fl = 2 * batch * R * R * C * C * 9
            out.append({"level": i, "channels": C, "res": R, "ms": sec * 1e3, "tflops": fl / sec / 1e12})
    return out


def norm_bandwidth(cfg, dev, batch: int, repeat: int) -> dict:
    """A compiled GroupNorm + scale-shift + SiLU at the top level, stock and per-channel-statistics
    forms: effective TB/s over the bytes it must move (read the map twice: statistics and apply;
    write once), beside a plain copy."""
    u = cfg.unet
    C, R = u.base_channels, cfg.image_size
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    mf = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    gn = torch.nn.GroupNorm(u.norm_groups, C).to(dev, dt)
    x = torch.randn(batch, C, R, R, device=dev, dtype=dt).contiguous(memory_format=mf)
    sc, sh = (torch.randn(batch, C, 1, 1, device=dev, dtype=dt) for _ in range(2))

    def stock(x, sc, sh):
        return torch.nn.functional.silu(gn(x) * (1 + sc) + sh)

    def by_channels(x, sc, sh):
        return torch.nn.functional.silu(group_norm_by_channels(x, gn.num_groups, gn.weight, gn.bias, gn.eps)
                                        * (1 + sc) + sh)

    nbytes = 3 * x.numel() * x.element_size()
    out = {"shape": [batch, C, R, R]}
    with torch.no_grad():
        for name, f in (("stock", stock), ("by_channels", by_channels)):
            fc = torch.compile(f, dynamic=False, options=inductor_options(True)) if dev.type == "cuda" else f
            sec = gpu_time(lambda: fc(x, sc, sh), dev, repeat, warmup=3)
            out[name] = {"ms": sec * 1e3, "tb_per_s": nbytes / sec / 1e12}
        y = torch.empty_like(x)
        copy = gpu_time(lambda: y.copy_(x), dev, repeat, warmup=3)
    out["copy"] = {"ms": copy * 1e3, "tb_per_s": 2 * x.numel() * x.element_size() / copy / 1e12}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default="256")
    ap.add_argument("--variants", default="b16,b32,b16-cdt,b16-nobench")
    ap.add_argument("--profile", default=None, help="comma list of variants to profile (default: the first)")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps each way")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-ceilings", action="store_true")
    ap.add_argument("--out", default="out/profile_edit.json")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        parse_variant(v)  # bad specs fail before any work
    dev = torch.device(args.device)
    cfg = preset(args.config)
    info = machine_info()
    print(describe_machine(info), flush=True)
    flops = unet_flops(cfg)
    results: dict = {"machine": info, "config": args.config, "steps": args.steps,
                     "unet_gflop_per_image": flops / 1e9}
    print(f"UNet forward: {flops / 1e9:.0f} GFLOP per image", flush=True)
    torch.manual_seed(0)
    model = DiffusionRigModel(cfg).to(dev).eval()
    prof_set = set(args.profile.split(",")) if args.profile else {variants[0]}
    table = Table("variant", "batch", "edit ms", "edits/s", "ms/forward", "TFLOP/s", "warm-up s",
                  title=f"DiffusionRig {args.config} px batched edit ({args.steps}+{args.steps} steps) on {dev}")
    for v in variants:
        run_variant(v, model, cfg, dev, args.steps, args.repeat, v in prof_set, flops, results, table)
        write_json(args.out, results)
    if not args.skip_ceilings:
        B = parse_variant(variants[0])[0]
        results["conv_levels"] = conv_levels(cfg, dev, B, args.repeat)
        results["groupnorm_silu"] = norm_bandwidth(cfg, dev, B, args.repeat)
        write_json(args.out, results)
    for v in variants:
        if "profile_per_forward" in results.get(v, {}):
            print_profile(v, results[v]["profile_per_forward"], flops, results[v]["batch"], unit="forward")
    if "conv_levels" in results:
        print("\ncuDNN 3x3 convolution, C -> C, per level:")
        for r in results["conv_levels"]:
            print(f"  level {r['level']} {r['res']:4d}^2 x {r['channels']:4d}: {r['ms']:.3f} ms, {r['tflops']:.0f} TFLOP/s")
        n = results["groupnorm_silu"]
        print(f"GroupNorm+scale-shift+SiLU {n['shape']} (3 passes): stock {n['stock']['ms']:.3f} ms = "
              f"{n['stock']['tb_per_s']:.2f} TB/s, by channels {n['by_channels']['ms']:.3f} ms = "
              f"{n['by_channels']['tb_per_s']:.2f} TB/s; plain copy {n['copy']['tb_per_s']:.2f} TB/s")
    table.print()
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
