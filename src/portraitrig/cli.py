"""portraitrig: rig portraits with a 3D face model and re-render them; one subcommand per job.

    portraitrig demo [PHOTO]              fit, overlay, buffers, relit / re-expressed previews
    portraitrig fit INPUT... -o OUT       rig parameters for every image / video frame
    portraitrig render INPUT... -o OUT    buffers, mesh overlays and a contact sheet
    portraitrig prepare / train / edit    the diffusion renderer (DiffusionRig)
    portraitrig eval RESULTS -o OUT       metrics and an HTML report
"""
from __future__ import annotations

import argparse
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


def _cmd_fit(args) -> int:
    from portraitrig.apps.fitjob import FitJobConfig, run_fit

    cfg = FitJobConfig(crop_size=args.size, format=args.format, stride=args.stride, max_frames=args.max_frames,
                       album=args.album, smooth_sigma=args.smooth, save_crops=args.save_crops,
                       photometric=not args.no_photometric, device=args.device)
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


def build_parser() -> argparse.ArgumentParser:
    from portraitrig import __version__

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

    f = sub.add_parser("fit", help="fit the rig to every image / video frame")
    f.add_argument("inputs", nargs="+", help="images, folders, glob patterns or videos")
    f.add_argument("-o", "--out", required=True, help="output folder (manifest.json + one file per item)")
    f.add_argument("--size", type=_int_at_least(32), default=256,
                   help="aligned crop size: 256, 512, 1024 (default: %(default)s)")
    f.add_argument("--format", choices=("safetensors", "npz"), default="safetensors")
    f.add_argument("--stride", type=_int_at_least(1), default=1, help="use every N-th video frame")
    f.add_argument("--max-frames", type=_int_at_least(1), default=None, help="at most this many frames per video")
    f.add_argument("--album", action="store_true", help="all photos show one person: share identity and albedo")
    f.add_argument("--smooth", type=float, default=1.0, help="video smoothing sigma in frames, 0 = off")
    f.add_argument("--save-crops", action="store_true", help="also write the aligned crops as PNG")
    f.add_argument("--no-photometric", action="store_true", help="skip the light / albedo estimate")
    f.add_argument("--device", default="cpu")
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

    for mod in ("portraitrig.apps.editjob", "portraitrig.eval.cli"):
        try:
            module = __import__(mod, fromlist=["register"])
        except ImportError as exc:  # an optional extra is missing: say so only when used
            missing = exc.name or mod
            q = sub.add_parser(mod.split(".")[1], help=f"(unavailable: {missing} is not installed)")
            q.set_defaults(func=lambda a, m=missing: sys.exit(f"portraitrig: this command needs {m}; "
                                                                "install with `bash scripts/install.sh`"))
            continue
        module.register(sub)
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
    except PortraitRigError as err:
        print(f"portraitrig: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("portraitrig: interrupted (finished items are kept; re-run to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
