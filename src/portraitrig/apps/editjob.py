"""``portraitrig prepare | train | edit``: the DiffusionRig renderer's subcommands."""
from __future__ import annotations

import os
from pathlib import Path

CONTROLS = ("smile", "jaw_open", "brows_raised", "eye_closed_left", "eye_closed_right", "pucker", "frown")
ENV_SUFFIXES = (".hdr", ".exr", ".pic")


def register(sub) -> None:
    p = sub.add_parser("prepare", help="diffusion training cache from `portraitrig fit` folders or photos/videos")
    p.add_argument("inputs", nargs="+", help="`portraitrig fit --save-crops` folders, or images/folders/videos to fit")
    p.add_argument("-o", "--out", required=True, help="cache file (.safetensors)")
    p.add_argument("--size", type=int, default=256, help="training image size (default: %(default)s)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored crops")
    p.add_argument("--group-by", choices=("source", "folder"), default="source",
                   help="person label: video/photo stem, or the fit folder's name")
    p.add_argument("--stride", type=int, default=1, help="raw videos: use every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="raw videos: at most this many frames")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_prepare)

    t = sub.add_parser("train", help="train the diffusion renderer (stage 1 prior / stage 2 one person)")
    t.add_argument("cache", help="cache file from `portraitrig prepare`")
    t.add_argument("-o", "--out", required=True, help="run folder (checkpoints, log.jsonl, samples/, model/)")
    t.add_argument("--stage", type=int, choices=(1, 2), default=1)
    t.add_argument("--config", default="256", help="model preset: tiny, 64, 128, 256, 512 (default: %(default)s)")
    t.add_argument("--init", default=None, help="stage 2: stage-1 checkpoint or model folder (none: from scratch)")
    t.add_argument("--group", action="append", default=[], help="train only on this person/clip (repeatable)")
    t.add_argument("--exclude-group", action="append", default=[], help="leave this person/clip out (repeatable)")
    t.add_argument("--train-items", type=int, default=None,
                   help="with one --group: use N evenly spaced items of it (the rest stay held out)")
    t.add_argument("--steps", type=int, default=None, help="default: 20000 (stage 1), 2000 (stage 2)")
    t.add_argument("--batch-size", type=int, default=16, help="per GPU")
    t.add_argument("--lr", type=float, default=None, help="default: 1e-4 (stage 1 / from scratch), 2e-5 (stage 2)")
    t.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    t.add_argument("--compile", dest="compile", action="store_const", const="on", default="auto",
                   help="torch.compile the model (1.5-3.5 min once, then ~2x faster on a GPU); default: "
                        "on a GPU for runs of >= 25k images")
    t.add_argument("--no-compile", dest="compile", action="store_const", const="off", help="never compile")
    t.add_argument("--grad-checkpointing", action="store_true")
    t.add_argument("--no-channels-last", action="store_true")
    t.add_argument("--ema", type=float, default=0.9999, help="EMA decay")
    t.add_argument("--ckpt-every", type=int, default=1000)
    t.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    t.add_argument("--sample-every", type=int, default=1000)
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                   help="stop after this many minutes (checkpoint + model written)")
    t.add_argument("--warmup", type=int, default=100, help="LR warm-up steps")
    t.add_argument("--light-augment", type=float, default=0.0, metavar="P",
                   help="relight this share of training items each step with random lights (ratio images; "
                        "teaches a person model lit one way to follow new lights), 0..1 (default: %(default)s)")
    t.add_argument("--device", default=None)
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("edit", help="edit photos with a trained diffusion renderer (inversion + DDIM)")
    e.add_argument("model", help="model folder (`train` writes RUN/model)")
    e.add_argument("photos", nargs="+", help="photos, or `portraitrig fit` parameter files (.safetensors)")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("--light", default=None,
                   help="preset name, 'AZ,EL' degrees, an HDR env map (.hdr/.exr), or a photo to copy light from")
    e.add_argument("--light-env", default=None, help="environment map of any image type (.png/.jpg too)")
    e.add_argument("--light-sweep", type=int, default=0, help="also N light directions from left to right")
    e.add_argument("--absolute-light", action="store_true",
                   help="use the light as given; default: keep the photo's exposure (and, for white light, "
                        "its colour balance): relative relighting, only where the light comes from changes")
    e.add_argument("--light-strength", type=float, default=1.0,
                   help="blend from the photo's own light (0) to the new one (1, default)")
    e.add_argument("--expression-from", default=None, help="photo whose expression to copy")
    for c in CONTROLS:
        e.add_argument("--" + c.replace("_", "-"), type=float, default=None, help=f"expression control {c}")
    e.add_argument("--control", action="append", default=[], metavar="NAME=AMOUNT", help="any named control")
    e.add_argument("--yaw", type=float, default=0.0, help="head turn, degrees")
    e.add_argument("--pitch", type=float, default=0.0)
    e.add_argument("--roll", type=float, default=0.0)
    e.add_argument("--gaze-yaw", type=float, default=None, help="gaze, degrees (head space)")
    e.add_argument("--gaze-pitch", type=float, default=None)
    e.add_argument("--latent-from", default=None, help="photo whose appearance (hair, clothes, background) to use")
    e.add_argument("--steps", type=int, default=20, help="DDIM steps for inversion and for decoding")
    e.add_argument("--refine", type=int, default=0,
                   help="fixed-point refinements per inversion step (closer reconstruction, slower)")
    e.add_argument("--no-inversion", action="store_true", help="sample from noise (--seed) instead of inverting")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch", type=int, default=16, help="largest GPU batch")
    e.add_argument("--device", default=None)
    e.add_argument("--no-fast", action="store_true", help="plain fp32 loop even on CUDA")
    e.set_defaults(func=_cmd_edit)


def _cmd_prepare(args) -> int:
    from portraitrig.apps.preparejob import prepare

    cache = prepare(args.inputs, args.out, size=args.size, quality=args.quality, group_by=args.group_by,
                    device=args.device, stride=args.stride, max_frames=args.max_frames)
    print(f"{args.out}: {len(cache)} items, {len(cache.groups)} groups, "
          f"{cache.bytes_per_item() / 1024:.1f} kB per item ({args.size} px)")
    return 0


def _cmd_train(args) -> int:
    from portraitrig.methods.diffusionrig.config import preset
    from portraitrig.neural.cache import FaceCache
    from portraitrig.methods.diffusionrig.method import TrainConfig, train
    from portraitrig.errors import InputError

    cache = FaceCache.load(args.cache)
    if args.train_items is not None:
        if len(args.group) != 1:
            raise InputError(args.cache, "--train-items needs exactly one --group")
        idx, held = cache.split_group(args.group[0], args.train_items)
        print(f"group {args.group[0]}: {len(idx)} training items, {len(held)} held out")
    else:
        idx = cache.indices_of(args.group, args.exclude_group)
    stage2 = args.stage == 2
    lr = args.lr if args.lr is not None else (2e-5 if stage2 and args.init else 1e-4)
    steps = args.steps if args.steps is not None else (2000 if stage2 else 20000)
    cfg = TrainConfig(stage=args.stage, steps=steps, batch_size=args.batch_size, lr=lr, ema_decay=args.ema,
                      precision=args.precision, compile=_use_compile(args.compile, args.device, steps * args.batch_size),
                      grad_checkpointing=args.grad_checkpointing,
                      channels_last=not args.no_channels_last, seed=args.seed, ckpt_every=args.ckpt_every,
                      keep=args.keep, log_every=args.log_every, sample_every=args.sample_every,
                      warmup_steps=args.warmup, time_limit_s=None if args.time_limit is None else args.time_limit * 60,
                      light_augment=args.light_augment)
    out = train(cache, args.out, preset(args.config), cfg, indices=idx, init=args.init, device=args.device,
                progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes, and says so
        print(f"model written to {out}")
    return 0


def _use_compile(choice: str, device: str | None, images: int) -> bool:
    """--compile auto: on a CUDA device when the run is long enough to repay the compile
    (at ~65 vs ~150 img/s the 1.5-3.5 min compile pays back after ~20 k images)."""
    if choice != "auto":
        return choice == "on"
    import torch

    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    return cuda and images >= 25_000


def _light_fn(spec: str, renderer, **how):
    """--light value -> params -> params (``how``: relight's keep_exposure / strength)."""
    from portraitrig.edits import relight
    from portraitrig.light import sh

    if spec in sh.PRESETS:
        return lambda p: relight(p, spec, **how)
    parts = spec.split(",")
    if len(parts) == 2 and all(_is_float(v) for v in parts):
        az, el = float(parts[0]), float(parts[1])
        return lambda p: relight(p, (az, el), **how)
    if Path(spec).suffix.lower() in ENV_SUFFIXES:
        return lambda p: relight(p, spec, **how)
    src = renderer.subject(spec).params  # a photo (or fit) to copy the light from
    return lambda p: relight(p, src.light, **how)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def build_edits(args, renderer) -> list:
    """The Edit list of the command-line flags: the reconstruction, the combined edit, and a
    light sweep if asked (each sweep item carries the other edits too)."""
    from portraitrig.methods.diffusionrig.renderer import Edit
    from portraitrig.edits import light_sweep_directions, relight, rotate_head, set_expression, set_gaze
    from portraitrig.errors import InputError

    if (args.light_strength != 1.0 or args.absolute_light) and not (args.light or args.light_env or args.light_sweep):
        raise InputError(None, "--light-strength / --absolute-light need --light, --light-env or --light-sweep")
    how = {"keep_exposure": not args.absolute_light, "strength": args.light_strength}
    light = _light_fn(args.light, renderer, **how) if args.light else None
    if args.light_env:
        env = args.light_env
        light = lambda p: relight(p, env, **how)  # noqa: E731
    others = []
    if args.expression_from:
        ep = renderer.subject(args.expression_from).params
        others.append(lambda p: set_expression(p, from_params=ep))
    controls = {c: getattr(args, c) for c in CONTROLS if getattr(args, c) is not None}
    for kv in args.control:
        if "=" not in kv or not _is_float(kv.split("=", 1)[1]):
            raise InputError(None, f"--control wants NAME=AMOUNT, got {kv!r}")
        k, v = kv.split("=", 1)
        controls[k] = float(v)
    if controls:
        others.append(lambda p: set_expression(p, **controls))
    if args.yaw or args.pitch or args.roll:
        fm = renderer.face_model
        others.append(lambda p: rotate_head(p, args.yaw, args.pitch, args.roll, model=fm.to(p.device)))
    if args.gaze_yaw is not None or args.gaze_pitch is not None:
        others.append(lambda p: set_gaze(p, args.gaze_yaw or 0.0, args.gaze_pitch or 0.0))
    latent = renderer.latent([renderer.subject(args.latent_from).crop_image])[0] if args.latent_from else None

    def compose(fns):
        def f(p):
            for fn in fns:
                p = fn(p)
            return p
        return f

    edits = [Edit("reconstruction")]
    main = ([light] if light else []) + others
    if main or latent is not None:
        edits.append(Edit("edit", compose(main), latent))
    for k, (az, el) in enumerate(light_sweep_directions(args.light_sweep) if args.light_sweep else []):
        edits.append(Edit(f"light{k:02d}", compose([lambda p, az=az, el=el: relight(p, (az, el), **how)] + others),
                          latent))
    return edits


def _cmd_edit(args) -> int:
    import torch

    from portraitrig.methods.diffusionrig.renderer import DiffusionRenderer, side_by_side
    from portraitrig.io.atomic import write_image, write_json

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    renderer = DiffusionRenderer.from_pretrained(args.model, device=device, max_batch=args.batch,
                                                 fast=False if args.no_fast else None)
    from portraitrig.errors import InputError

    edits = build_edits(args, renderer)
    subjects, failed = [], []
    for photo in args.photos:  # a photo without a face is reported; the others are edited
        try:
            subjects.append(renderer.subject(photo))
        except InputError as err:
            failed.append({"source": str(photo), "status": "error", "message": str(err)})
            print(f"error: {err}")
    results = renderer.edit(subjects, edits, steps=args.steps, inversion=not args.no_inversion,
                            seed=args.seed, refine=args.refine) if subjects else []
    out = Path(args.out)
    photos, items, used = [], [], set()
    for res in results:
        stem = Path(res.source.split("#", 1)[0]).stem or "photo"
        while stem in used:
            stem += "_"
        used.add(stem)
        # the input crop and its own parameters: the reference and the floor for `portraitrig eval`
        ref = write_image(out / f"{stem}.input.png", res.input_crop).name if res.input_crop is not None else None
        ref_params = None
        files = {}
        for name, crop, full, params in zip(res.names, res.crops, res.pasted, res.params):
            files[name] = write_image(out / f"{stem}.{name}.png", crop).name
            if full is not None:
                write_image(out / f"{stem}.{name}.full.png", full)
            pfile = params.save(out / f"{stem}.{name}.safetensors").name
            if name == "reconstruction":
                ref_params = pfile
            items.append({"id": f"{stem}.{name}", "source": res.source, "edit": name, "generated": files[name],
                          "reference": ref, "requested_params": pfile})
        for it in items[len(items) - len(res.names):]:
            it["reference_params"] = ref_params
        write_image(out / f"{stem}.sheet.png", side_by_side(res))
        photos.append({"source": res.source, "stem": stem, "edits": files,
                       "pasted": all(f is not None for f in res.pasted)})
    # "items" follows portraitrig.eval's results layout: `portraitrig eval OUT --refit` scores it
    write_json(out / "manifest.json", {"model": str(args.model), "steps": args.steps,
                                       "inversion": not args.no_inversion, "photos": photos + failed,
                                       "items": items})
    print(f"{len(results)} photo(s) x {len(edits)} edit(s) written to {out}; {len(failed)} failed")
    return 1 if failed else 0
