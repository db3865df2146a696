"""DiffusionRig speed: training throughput and edit latency, plain eager fp16 vs our fast path.

    python bench/bench_diffusion.py --device cuda --out out/diffusion.json
    python bench/bench_diffusion.py --device cpu --config tiny --quick   # checks the script

Training (same model, same batch): "eager-fp16" = fp32 weights, autocast fp16 + GradScaler,
non-fused AdamW, eager, NCHW; "fast" = bf16 autocast, torch.compile, fused AdamW, channels_last,
SDPA attention (both through portraitrig.methods.diffusionrig.method.Trainer, EMA and clipping included).
Editing (one photo, 20 inversion + 20 decoding steps): eager fp32, eager bf16, compiled bf16,
and compiled bf16 with the whole DDIM loop in one CUDA graph; then batched edits (16 edits of
one photo sharing one inversion; 16 photos x 1 edit). Also: FLOPs per UNet forward and the
measured bf16 matmul / copy ceilings, to place the figures against a floor.
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
from common import Table, describe_machine, fast_cuda_settings, fixed_batch_trainer, machine_info, write_json  # noqa: E402

from portraitrig.methods.diffusionrig.config import preset  # noqa: E402
from portraitrig.methods.diffusionrig.engine import DDIMEngine  # noqa: E402
from portraitrig.methods.diffusionrig.model import DiffusionRigModel  # noqa: E402
from portraitrig.training.config import TrainConfig  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync(dev)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def ceilings(dev) -> dict:
    if dev.type != "cuda":
        return {}
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    t = timed(lambda: a @ b, dev, 10, 3)
    x = torch.randn(2 ** 30 // 4, device=dev)  # 1 GiB
    y = torch.empty_like(x)
    tc = timed(lambda: y.copy_(x), dev, 10, 3)
    return {"bf16_matmul_tflops": 2 * 8192 ** 3 / t / 1e12, "copy_tb_s": 2 * x.numel() * 4 / tc / 1e12}


def flops(cfg) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    S = cfg.image_size
    with torch.device("meta"):
        m = DiffusionRigModel(cfg)
        x, b = torch.randn(1, 3, S, S), torch.randn(1, cfg.buffer_channels, S, S)
        t, c = torch.tensor([500]), torch.randn(1, 4 * cfg.unet.base_channels)
        with FlopCounterMode(display=False) as fc:
            m.denoise(x, t, b, c)
        fwd = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            m(x, t, b, x).sum().backward()
        train = fc.get_total_flops()
    return {"unet_forward_gflop": fwd / 1e9, "train_step_gflop_per_image": train / 1e9,
            "params": DiffusionRigModel(cfg).num_parameters()}


def bench_training(cfg, dev, batch: int, steps: int, variants, table: Table, results: dict):
    S = cfg.image_size
    g = torch.Generator(device=dev).manual_seed(0)
    x0 = torch.rand(batch, 3, S, S, device=dev, generator=g) * 2 - 1
    buf = torch.rand(batch, cfg.buffer_channels, S, S, device=dev, generator=g) * 2 - 1
    for name, tc in variants:
        if dev.type == "cuda":  # the peak of this variant only
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            t0 = time.perf_counter()
            tr = fixed_batch_trainer(cfg, tc, dev, x0, buf)
            for k in range(3):  # warm-up (compilation)
                tr.step(k)
            sync(dev)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            for k in range(steps):
                loss, _ = tr.step(3 + k)
            sync(dev)
            dt = (time.perf_counter() - t0) / steps
            ok = bool(torch.isfinite(loss))
            table.add(f"train {name}", batch, dt * 1e3, batch / dt, warm, "ok" if ok else "NaN")
            results[f"train_{name}"] = {"batch": batch, "s_per_step": dt, "images_per_s": batch / dt,
                                        "warmup_s": warm, "finite_loss": ok,
                                        "peak_mem_gb": torch.cuda.max_memory_allocated(dev) / 1e9
                                        if dev.type == "cuda" else None}
        except Exception as exc:  # keep benchmarking the other variants
            traceback.print_exc()
            results[f"train_{name}"] = {"error": repr(exc)}
        finally:
            tr = None
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)


EDIT_CASES = ("eager", "batch1", "one-photo", "photos", "api")


def bench_edits(cfg, dev, steps: int, repeat: int, big: int, table: Table, results: dict, cases=EDIT_CASES):
    from portraitrig.methods.diffusionrig.renderer import DiffusionRenderer
    from portraitrig.neural.contract import Edit, Subject
    from portraitrig.edits import light_sweep_directions, relight
    from portraitrig.face.model import load_default_model
    from portraitrig.face.params import RigParams

    S = cfg.image_size
    torch.manual_seed(0)
    model = DiffusionRigModel(cfg).to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(1)
    x1 = torch.rand(1, 3, S, S, device=dev, generator=g) * 2 - 1
    b1 = torch.rand(1, cfg.buffer_channels, S, S, device=dev, generator=g) * 2 - 1
    xB = torch.rand(big, 3, S, S, device=dev, generator=g) * 2 - 1
    bB = torch.rand(big, cfg.buffer_channels, S, S, device=dev, generator=g) * 2 - 1
    with torch.no_grad():
        c1 = model.condition(model.encode(x1))
        cB = c1.expand(big, -1).contiguous()

    def row(name, B, edits, sec):
        table.add(name, B, sec * 1e3, edits / sec, None, "")
        results[name.replace(" ", "_")] = {"batch": B, "s": sec, "edits_per_s": edits / sec}

    ref = None
    if "eager" in cases:  # eager fp32 reference (also the accuracy reference)
        eng = DDIMEngine(model, steps, fast=False)
        with torch.no_grad():
            ref = eng("sample", eng("invert", x1, b1, c1), b1, c1)
        row("edit eager-fp32", 1, 1, timed(lambda: eng("sample", eng("invert", x1, b1, c1), b1, c1), dev, repeat))
    fast_model = DiffusionRigModel(cfg).to(dev).eval()
    fast_model.load_state_dict(model.state_dict())
    eng = None
    if dev.type == "cuda" and "eager" in cases:
        eager16 = DDIMEngine(fast_model, steps, fast=True, compile=False, cuda_graph=False)
        with torch.no_grad():
            row("edit eager-bf16", 1, 1, timed(lambda: eager16._loop("sample", eager16._loop("invert", x1, b1, c1),
                                                                      b1, c1), dev, repeat))
    if dev.type == "cuda":
        eng = DDIMEngine(fast_model, steps, fast=True, compile=True, cuda_graph=True)
    if dev.type == "cuda" and "batch1" in cases:
        bb, cc = b1.to(torch.bfloat16).contiguous(memory_format=torch.channels_last), c1.to(torch.bfloat16)
        t0 = time.perf_counter()
        with torch.no_grad():
            eng._loop("invert", x1, bb, cc)
        sync(dev)
        results["compile_s"] = time.perf_counter() - t0
        with torch.no_grad():
            row("edit compiled-bf16", 1, 1, timed(lambda: eng._loop("sample", eng._loop("invert", x1, bb, cc), bb, cc),
                                                  dev, repeat))
        t0 = time.perf_counter()
        out = eng("sample", eng("invert", x1, b1, c1), b1, c1)
        sync(dev)
        results["graph_capture_s"] = time.perf_counter() - t0
        row("edit compiled-bf16+graph", 1, 1, timed(lambda: eng("sample", eng("invert", x1, b1, c1), b1, c1), dev,
                                                    repeat))
        if ref is not None:  # accuracy of the fast path: one UNet call, and the whole edit loop
            t = torch.full((1,), 500, device=dev)
            with torch.no_grad():
                e32 = model.denoise(x1, t, b1, c1)
                e16 = eng._denoise(x1.to(torch.bfloat16).contiguous(memory_format=torch.channels_last), t, bb, cc)
            rel1 = float((e16.float() - e32).norm() / e32.norm())
            rel = float((out - ref).norm() / ref.norm())
            results["fast_vs_fp32_rel_error_forward"] = rel1
            results["fast_vs_fp32_rel_error_edit_loop"] = rel
            print(f"fast path vs eager fp32, same weights and input: one UNet forward {rel1:.2e}, "
                  f"whole invert+decode loop {rel:.2e} (random weights: the 20-step loop amplifies)")
    if dev.type == "cuda" and "one-photo" in cases:  # batched: one inversion, `big` edits of one photo
        row(f"edit x{big} one photo", big, big,
            timed(lambda: eng("sample", eng("invert", x1, b1, c1).expand(big, -1, -1, -1), bB, cB), dev, repeat))
    if dev.type == "cuda" and "photos" in cases:  # `big` photos, each its own inversion and decoding
        t0 = time.perf_counter()
        eng("sample", eng("invert", xB, bB, cB), bB, cB)
        sync(dev)
        results.setdefault(f"compile_and_capture_x{big}_s", time.perf_counter() - t0)
        row(f"edit x{big} photos", big, big, timed(lambda: eng("sample", eng("invert", xB, bB, cB), bB, cB), dev,
                                                   repeat))
    if "api" not in cases:
        return
    # the full API (buffers rendered from the rig, encoder, uint8 out), batch 1 and a sweep
    try:
        fm = load_default_model()
        r = DiffusionRenderer(fast_model if dev.type == "cuda" else model, device=dev, face_model=fm, max_batch=big)
        if eng is not None:
            r._engines[steps, 0, False] = eng
        img = (torch.rand(S, S, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()
        subj = Subject("bench", img, RigParams.neutral(fm))
        one = [Edit("light", lambda p: relight(p, "left"))]
        row("api edit 1 photo x1", 1, 1, timed(lambda: r.edit(subj, one, steps=steps, paste=False), dev, repeat))
        sweep = [Edit(f"l{k}", lambda p, d=d: relight(p, d)) for k, d in enumerate(light_sweep_directions(big))]
        row(f"api edit 1 photo x{big} sweep", big, big,
            timed(lambda: r.edit(subj, sweep, steps=steps, paste=False), dev, repeat))
    except Exception as exc:
        traceback.print_exc()
        results["api_error"] = repr(exc)


def bench_render(cfg, dev, batch: int, repeat: int, table: Table, results: dict):
    from portraitrig.render.spec import BufferStack as RigBuffers
    from portraitrig.face.params import RigParams

    rb = RigBuffers(cfg.buffers, cfg.image_size, dev)
    p = RigParams.neutral(rb.renderer.model, batch=batch, device=dev)
    sec = timed(lambda: rb(p), dev, repeat)
    table.add("render buffers", batch, sec * 1e3, batch / sec, None, "")
    results["render_buffers"] = {"batch": batch, "s": sec, "images_per_s": batch / sec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default="256")
    ap.add_argument("--batch", type=int, default=16, help="training batch")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (inversion and decoding each)")
    ap.add_argument("--big", type=int, default=16, help="batched-edit size")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma list of: train,edit,render")
    ap.add_argument("--edit-cases", default=",".join(EDIT_CASES),
                    help=f"comma list of the edit cases to run (default: all of {','.join(EDIT_CASES)})")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks the script on a CPU)")
    ap.add_argument("--out", default="out/diffusion.json")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    fast_cuda_settings(dev)
    if args.quick:
        args.batch, args.train_steps, args.steps, args.big, args.repeat = 2, 2, 2, 2, 1
    cfg = preset(args.config)
    skip = set(filter(None, args.skip.split(",")))
    info = machine_info()
    print(describe_machine(info), flush=True)
    results: dict = {"machine": info, "config": args.config, "args": vars(args)}
    results["ceilings"] = ceilings(dev)
    results["flops"] = flops(cfg)
    print({**results["ceilings"], **{k: v for k, v in results["flops"].items()}}, flush=True)
    table = Table("case", "batch", "ms", "items/s", "warm-up s", "note", title=f"DiffusionRig {args.config} px on {dev}")
    if "render" not in skip:
        bench_render(cfg, dev, args.batch, args.repeat, table, results)
    if "train" not in skip:
        fast = dev.type == "cuda"
        variants = [("eager-fp16", TrainConfig(batch_size=args.batch, precision="fp16" if fast else "fp32",
                                               compile=False, channels_last=False, fused_adam=False)),
                    ("fast", TrainConfig(batch_size=args.batch, precision="bf16" if fast else "fp32", compile=fast,
                                         channels_last=True, fused_adam=True))]
        bench_training(cfg, dev, args.batch, args.train_steps, variants, table, results)
        a, b = results.get("train_eager-fp16", {}), results.get("train_fast", {})
        if "images_per_s" in a and "images_per_s" in b:
            results["train_speedup"] = b["images_per_s"] / a["images_per_s"]
        table.print()
    if "edit" not in skip:
        cases = set(filter(None, args.edit_cases.split(",")))
        if cases - set(EDIT_CASES):
            ap.error(f"unknown edit cases {sorted(cases - set(EDIT_CASES))}; known: {','.join(EDIT_CASES)}")
        bench_edits(cfg, dev, args.steps, args.repeat, args.big, table, results, cases=cases)
    table.print()
    if "train_speedup" in results:
        print(f"training speed-up fast / eager-fp16: {results['train_speedup']:.2f}x")
    e = results.get("edit_eager-fp32", {}).get("s")
    f = results.get("edit_compiled-bf16+graph", {}).get("s")
    if e and f:
        results["edit_speedup"] = e / f
        print(f"edit speed-up graph / eager fp32: {e / f:.2f}x")
    if "flops" in results and dev.type == "cuda" and results["ceilings"]:
        fl = results["flops"]["unet_forward_gflop"] * 1e9
        peak = results["ceilings"]["bf16_matmul_tflops"] * 1e12
        floor1 = 2 * args.steps * fl / peak
        print(f"floor at the measured matmul rate: batch-1 edit {floor1 * 1e3:.1f} ms "
              f"({2 * args.steps} UNet forwards x {fl / 1e9:.0f} GFLOP); training "
              f"{peak / (results['flops']['train_step_gflop_per_image'] * 1e9):.0f} img/s")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
