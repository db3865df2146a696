"""``portraitrig eval RESULTS_DIR [-o OUT] [--real DIR] [--kind KIND ...]``.

The main CLI calls :func:`register` with its subparsers; the subcommand's ``func(args) -> int``
is set as the parser default. Layout of RESULTS_DIR: see :mod:`portraitrig.eval.results`.
"""
from __future__ import annotations

import argparse
import json
import sys

from portraitrig.eval.results import KINDS


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "eval", help="metrics and an HTML report on a folder of results",
        description="Compute identity, image, rig, video and distribution metrics on a results "
                    "folder (RESULTS_DIR/manifest.json, or every image/video in it) and write "
                    "OUT/metrics.json and OUT/report.html.")
    p.add_argument("results_dir", metavar="RESULTS_DIR")
    p.add_argument("-o", "--out", default=None, help="output folder (default RESULTS_DIR/eval)")
    p.add_argument("--real", default=None, metavar="DIR",
                   help="real images/videos: references matched by file stem, and the real set "
                        "of the Fréchet identity distance")
    p.add_argument("--kind", action="append", choices=KINDS, default=None,
                   help="metric kind to compute (repeatable; default all)")
    p.add_argument("--max-frames", type=_positive, default=300, help="frames read per video (default 300)")
    p.add_argument("--refit", action="store_true",
                   help="fit the rig on generated crops (rig consistency without fitted_params), and on "
                        "the real references for the floor")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``portraitrig eval``; prints the summary as JSON. Returns the exit status: 0 when
    every item was evaluated (items the manifest marks as failed upstream are only recorded),
    1 when some items could not be evaluated (listed on stderr and in the report), 2 when
    nothing could be (an empty or unreadable results folder, every item failed)."""
    from portraitrig.errors import InputError
    from portraitrig.eval.results import evaluate_folder

    try:
        summary = evaluate_folder(args.results_dir, args.out, args.real, args.kind or KINDS,
                                  max_frames=args.max_frames, refit=args.refit)
    except InputError as exc:
        print(f"portraitrig: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # the eval extra (dlib, face_recognition_models) is missing
        print(f"portraitrig: eval needs {exc.name or exc}; install with "
              "`pip install 'portraitrig[eval]'`", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    failed = summary.get("errors", [])
    for message in failed[:20]:
        print(f"portraitrig: error: {message}", file=sys.stderr)
    if failed and summary["n_errors"] == summary["n_items"]:  # not one item evaluated
        print(f"portraitrig: error: {args.results_dir}: none of {summary['n_items']} item(s) could be evaluated",
              file=sys.stderr)
        return 2
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m portraitrig.eval.cli``)."""
    parser = argparse.ArgumentParser(prog="portraitrig")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
