"""portraitrig: rig portraits with a 3D face model and re-render them; one subcommand per job.

    portraitrig demo [PHOTO]                    fit, overlay, buffers, relit / re-expressed previews
    portraitrig fit INPUT... -o OUT             rig parameters for every image / video frame
    portraitrig render INPUT... -o OUT          buffers, mesh overlays and a contact sheet
    portraitrig prepare INPUT... -o CACHE       a neural renderers' training cache
    portraitrig train METHOD DATA -o RUN        train a neural renderer (methods: see `train -h`)
    portraitrig edit MODEL PHOTO... -o OUT      edit photos with a trained renderer
    portraitrig reenact MODEL DRIVER -o OUT     a video portrait performs a driver, relit
    portraitrig avatar MODEL -o OUT             free-viewpoint renders of an animated head
    portraitrig serve                           a local web app (rig, edit, video, avatar tabs)
    portraitrig eval RESULTS -o OUT             metrics and an HTML report
    portraitrig heldout generate|score|sheet    a renderer on one person's held-out frames
"""
from __future__ import annotations

import argparse
import os
import sys


def _int_at_least(low: int):
    """argparse type: an integer >= low (bad values are usage errors, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


# ---------------------------------------------------------------------------- commands
def _cmd_fit(args) -> int:
    from portraitrig.apps.fitjob import FitJobConfig, run_fit

    cfg = FitJobConfig(crop_size=args.size, format=args.format, stride=args.stride, max_frames=args.max_frames,
                       album=args.album, smooth_sigma=args.smooth, save_crops=args.save_crops,
                       photometric=not args.no_photometric, device=args.device, workers=args.workers,
                       shard=args.shard, chunk_frames=args.chunk_frames)
    summary = run_fit(args.inputs, args.out, cfg, progress=not args.quiet)
    print(summary.text())
    return summary.exit_code


def _cmd_render(args) -> int:
    from portraitrig.apps.renderjob import RenderJobConfig, run_render

    cfg = RenderJobConfig(size=args.size, buffers=tuple(args.buffers.split(",")), sheet=not args.no_sheet,
                          device=args.device)
    summary = run_render(args.inputs, args.out, cfg, progress=not args.quiet)
    print(summary.text())
    return summary.exit_code


def _cmd_demo(args) -> int:
    from portraitrig.apps.demo import run_demo

    result = run_demo(args.photo, args.out, size=args.size, device=args.device)
    print(f"demo written to {result.out_dir}:")
    print(f"  sheet: {result.sheet}")
    print(f"  page:  {result.html}")
    return 0


def _cmd_prepare(args) -> int:
    from portraitrig.apps.preparejob import prepare

    cache = prepare(args.inputs, args.out, size=args.size, quality=args.quality, group_by=args.group_by,
                    device=args.device, stride=args.stride, max_frames=args.max_frames, workers=args.workers,
                    shard=args.shard, progress=not args.quiet)
    print(f"{args.out}: {len(cache)} items, {len(cache.groups)} groups, "
          f"{cache.bytes_per_item() / 1024:.1f} kB per item ({args.size} px)")
    return 0


def _cmd_train(args) -> int:
    from portraitrig.apps.trainjob import method_config, run_train
    from portraitrig.config import apply_arguments, given_arguments
    from portraitrig.training.loop import default_device, dist_info

    cfg = method_config(args.method, args.preset, args.config)
    try:
        cfg = apply_arguments(cfg, args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if cfg.train.compile and default_device(args.device).type != "cuda" and "train.compile" not in given_arguments(args):
        from dataclasses import replace

        cfg = replace(cfg, train=replace(cfg.train, compile=False))  # the preset's compile is for GPUs
    out = run_train(args.method, args.data, args.out, cfg, init=args.init, device=args.device,
                    progress=not args.quiet)
    if dist_info()[1] == 0:  # under torchrun only rank 0 writes, and says so
        print(f"model written to {out}")
    return 0


def _cmd_edit(args) -> int:
    from portraitrig.apps.editjob import EditJobConfig, run_edit
    from portraitrig.config import apply_arguments
    from portraitrig.editspec import from_args

    try:
        cfg = apply_arguments(EditJobConfig(), args)
        spec = from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary = run_edit(args.model, args.photos, args.out, spec, cfg)
    print(summary.text())
    return summary.exit_code


def _cmd_reenact(args) -> int:
    from portraitrig.apps.reenactjob import ReenactConfig, run_reenact
    from portraitrig.config import apply_arguments

    try:
        cfg = apply_arguments(ReenactConfig(), args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.driver is None and not cfg.self_drive:
        raise UsageError("give a DRIVER (video, photo folder or photo), or --self-drive to relight the target alone")
    summary = run_reenact(args.model, args.driver, args.out, cfg, progress=not args.quiet)
    print(summary.text())
    return summary.exit_code


def _cmd_avatar(args) -> int:
    from portraitrig.apps.avatarjob import AvatarJobConfig, run_avatar
    from portraitrig.config import apply_arguments
    from portraitrig.editspec import from_args

    try:
        cfg = apply_arguments(AvatarJobConfig(), args)
        spec = from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary = run_avatar(args.model, args.out, cfg, driver=args.driver, spec=spec)
    print(summary.text())
    return summary.exit_code


def _cmd_serve(args) -> int:
    from portraitrig.apps.web import WebConfig, serve
    from portraitrig.config import apply_arguments

    try:
        cfg = apply_arguments(WebConfig(), args)
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"the web app needs gradio ({exc}): pip install -e .[web] (scripts/install.sh "
                         "installs it)") from None
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {cfg.host}: anyone who can reach this machine can use the app", file=sys.stderr)
    print(f"portraitrig web app on http://{cfg.host}:{cfg.port} (outputs in {cfg.out}); Ctrl+C stops it")
    serve(cfg)
    return 0


# ---------------------------------------------------------------------------- parser
class UsageError(Exception):
    """A bad option value found after parsing (exit code 2, like argparse's own)."""


def _shard(text: str) -> str:
    from portraitrig.apps.fitjob import parse_shard

    try:
        parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_scale_arguments(parser, fc) -> None:
    """--workers / --shard of fitting jobs (defaults and help from FitJobConfig)."""
    from dataclasses import fields

    help_of = {f.name: f.metadata.get("help", "") for f in fields(fc)}
    parser.add_argument("--workers", type=_int_at_least(1), default=fc.workers, help=help_of["workers"])
    parser.add_argument("--shard", type=_shard, default=fc.shard, metavar="I/N", help=help_of["shard"])


def _add_train(sub) -> None:
    from portraitrig.config import add_config_arguments
    from portraitrig.methods import METHODS

    t = sub.add_parser("train", help="train a neural renderer: " + ", ".join(METHODS),
                       description="Train (or resume) a neural renderer on the shared training loop.")
    methods = t.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, spec in METHODS.items():
        mod = spec.module()
        m = methods.add_parser(name, help=spec.summary, description=spec.summary)
        m.add_argument("data", help=mod.DATA)
        m.add_argument("-o", "--out", required=True, help="run folder (checkpoints, log.jsonl, samples/, model/)")
        m.add_argument("--preset", default=None, choices=list(mod.PRESETS),
                       help=f"named recipe (default: {mod.DEFAULT_PRESET}); flags below override it")
        m.add_argument("--config", default=None, metavar="JSON", help="a run's run.json (or a config object) "
                                                                      "instead of a preset")
        m.add_argument("--init", default=None, help="start from this model folder, run folder or checkpoint")
        m.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU if there is one)")
        m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        add_config_arguments(m, mod.Config, defaults=mod.PRESETS[mod.DEFAULT_PRESET](), title="settings")
        m.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    from portraitrig import __version__
    from portraitrig.apps.fitjob import FitJobConfig
    from portraitrig.config import finite_float

    p = argparse.ArgumentParser(prog="portraitrig", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--version", action="version", version=f"portraitrig {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="fit the rig to a photo and show what it can do (default: a built-in portrait)")
    d.add_argument("photo", nargs="?", help="a photo (default: scikit-image's astronaut portrait)")
    d.add_argument("-o", "--out", default="portraitrig-demo", help="output folder (default: %(default)s)")
    d.add_argument("--size", type=_int_at_least(32), default=256, help="crop size (default: %(default)s)")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_cmd_demo)

    fc = FitJobConfig()
    f = sub.add_parser("fit", help="fit the rig to every image / video frame")
    f.add_argument("inputs", nargs="+", help="images, folders, glob patterns or videos")
    f.add_argument("-o", "--out", required=True, help="output folder (manifest.json + one file per item)")
    f.add_argument("--size", type=_int_at_least(32), default=fc.crop_size,
                   help="aligned crop size: 256, 512, 1024 (default: %(default)s)")
    f.add_argument("--format", choices=("safetensors", "npz"), default=fc.format)
    f.add_argument("--stride", type=_int_at_least(1), default=fc.stride, help="use every N-th video frame")
    f.add_argument("--max-frames", type=_int_at_least(1), default=fc.max_frames,
                   help="at most this many frames per video")
    f.add_argument("--album", action="store_true", help="all photos show one person: share identity and albedo")
    f.add_argument("--smooth", type=finite_float, default=fc.smooth_sigma, help="video smoothing sigma in frames, 0 = off")
    f.add_argument("--save-crops", action="store_true", help="also write the aligned crops as PNG")
    f.add_argument("--no-photometric", action="store_true", help="skip the light / albedo estimate")
    f.add_argument("--device", default=fc.device)
    _add_scale_arguments(f, fc)
    f.add_argument("--chunk-frames", type=_int_at_least(1), default=fc.chunk_frames,
                   help="videos longer than this many kept frames are fitted in chunks of it, in bounded "
                        "memory, with one identity estimated from the whole video (default: %(default)s)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_cmd_fit)

    r = sub.add_parser("render", help="buffers, mesh overlays and a contact sheet from fits (or photos)")
    r.add_argument("inputs", nargs="+", help="`portraitrig fit` output folders, parameter files, or photos")
    r.add_argument("-o", "--out", required=True)
    r.add_argument("--size", type=_int_at_least(8), default=None, help="render size (default: each fit's crop size)")
    r.add_argument("--buffers", default="normal,albedo,shaded,mask,depth", help="comma-separated buffer names")
    r.add_argument("--no-sheet", action="store_true", help="skip the contact sheet")
    r.add_argument("--device", default="cpu")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=_cmd_render)

    q = sub.add_parser("prepare", help="a training cache from `portraitrig fit` folders or photos/videos")
    q.add_argument("inputs", nargs="+", help="`portraitrig fit --save-crops` folders, images/folders/videos to fit, "
                                             "or caches to merge (e.g. one per shard)")
    q.add_argument("-o", "--out", required=True, help="cache file (.safetensors)")
    q.add_argument("--size", type=_int_at_least(16), default=256, help="training image size (default: %(default)s)")
    q.add_argument("--quality", type=_int_at_least(1), default=95, help="JPEG quality of the stored crops")
    q.add_argument("--group-by", choices=("source", "folder"), default="source",
                   help="person label: video/photo stem, or the fit folder's name")
    q.add_argument("--stride", type=_int_at_least(1), default=1, help="raw videos: use every N-th frame")
    q.add_argument("--max-frames", type=_int_at_least(1), default=None, help="raw videos: at most this many frames")
    q.add_argument("--device", default="cpu")
    _add_scale_arguments(q, fc)
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_prepare)

    _add_train(sub)

    from portraitrig.config import add_config_arguments
    from portraitrig.editspec import add_edit_arguments
    from portraitrig.apps.editjob import EditJobConfig

    e = sub.add_parser("edit", help="edit photos with a trained renderer (relight, expression, pose, gaze)")
    e.add_argument("model", help="model folder (`train` writes RUN/model)")
    e.add_argument("photos", nargs="+", help="photos, or `portraitrig fit` parameter files (.safetensors)")
    e.add_argument("-o", "--out", required=True)
    add_edit_arguments(e)
    add_config_arguments(e, EditJobConfig, defaults=EditJobConfig(), title="rendering")
    e.set_defaults(func=_cmd_edit)

    from portraitrig.apps.avatarjob import AvatarJobConfig
    from portraitrig.apps.reenactjob import ReenactConfig

    v = sub.add_parser("reenact", help="a video renderer's target performs a driver's expressions, in any light")
    v.add_argument("model", help="model folder of `train video` (RUN/model)")
    v.add_argument("driver", nargs="?", default=None, help="driver video, folder of photos, or one photo")
    v.add_argument("-o", "--out", required=True, help="output folder (result.mp4, compare.mp4, params, manifest)")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_arguments(v, ReenactConfig, defaults=ReenactConfig(), title="reenactment")
    v.add_argument("--self", dest="cfg:self_drive", action="store_const", const=True, default=None,
                   help="the target drives itself (relighting alone; no DRIVER)")
    v.set_defaults(func=_cmd_reenact)

    a = sub.add_parser("avatar", help="render an avatar: new views, expressions, a driver's performance")
    a.add_argument("model", help="model folder of `train avatar` or `train splat` (RUN/model)")
    a.add_argument("-o", "--out", required=True, help="output folder (PNGs or an mp4, manifest)")
    a.add_argument("--driver", default=None, help="a video whose expressions (relative) drive the avatar")
    add_edit_arguments(a)
    add_config_arguments(a, AvatarJobConfig, defaults=AvatarJobConfig(), title="views",
                         skip=("yaw", "pitch", "roll"))
    a.set_defaults(func=_cmd_avatar)

    from portraitrig.apps.web import WebConfig

    w = sub.add_parser("serve", help="a local web app: rig, edit, video and avatar tabs in the browser")
    add_config_arguments(w, WebConfig, defaults=WebConfig(), title="server")
    w.set_defaults(func=_cmd_serve)

    from portraitrig.eval import heldout
    from portraitrig.eval.cli import register as register_eval

    register_eval(sub)
    heldout.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from portraitrig.errors import PortraitRigError

    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        parser.exit(2, f"portraitrig {args.command}: error: {err}\n")
    except PortraitRigError as err:
        print(f"portraitrig: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("portraitrig: interrupted (finished items are kept; re-run to resume)", file=sys.stderr)
        return 130
    except OSError as err:  # an output folder that cannot be made or written, a full disk
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"portraitrig: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 — one line for the user; the traceback on request
        if os.environ.get("PORTRAITRIG_DEBUG"):
            raise
        print(f"portraitrig: internal error: {err.__class__.__name__}: {err} (a bug: please report it; "
              "PORTRAITRIG_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
