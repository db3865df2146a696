"""Speed of the evaluation metrics: dlib identity embedding per image (HOG detection + 5-point
alignment + ResNet, at several image sizes; HOG alone), PSNR / SSIM / masked
SSIM at 256^2 and 512^2, Fréchet identity distance (128-d) and landmark jitter.

    python bench/bench_eval.py [--image PATH] [-o out/bench_eval.json] [--repeat 5]

Default image: scikit-image's astronaut (ships with the package); any portrait works.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Table, describe_machine, machine_info, timeit, write_json  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=None, help="portrait image (default: skimage astronaut)")
    ap.add_argument("-o", "--out", default="out/bench_eval.json")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    from PIL import Image

    from portraitrig.eval.distribution import frechet_identity_distance
    from portraitrig.eval.identity import IdentityEncoder
    from portraitrig.eval.image import psnr, ssim
    from portraitrig.eval.video import landmark_jitter

    if args.image:
        from portraitrig.io.images import read_image

        img = read_image(args.image)
    else:
        from skimage import data

        img = data.astronaut()
    info = machine_info()
    t = Table("case", "ms / call", "min ms", "CPU ms", "calls / s", title=f"portraitrig.eval metrics on {describe_machine(info)}")

    def row(name, fn, repeat=args.repeat, number=1):
        r = timeit(fn, repeat=repeat, number=number)
        t.add(name, r["median_s"] * 1e3, r["min_s"] * 1e3, r["cpu_median_s"] * 1e3, 1 / r["median_s"])

    enc = IdentityEncoder()
    enc.embed(img)  # load the models
    for side in (256, 512, 1024):
        im = np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))
        row(f"identity embed (HOG + net) {side}^2", lambda im=im: enc.embed(im))
    im512 = np.asarray(Image.fromarray(img).resize((512, 512), Image.BILINEAR))
    row("HOG detect only 512^2 (embed - this = align + net)", lambda: enc.detect(im512))

    rng = np.random.default_rng(0)
    for side in (256, 512):
        a = np.asarray(Image.fromarray(img).resize((side, side)))
        b = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
        mask = np.zeros((side, side), bool)
        mask[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = True
        row(f"PSNR {side}^2", lambda a=a, b=b: psnr(a, b), number=20)
        row(f"SSIM {side}^2", lambda a=a, b=b: ssim(a, b))
        row(f"SSIM masked {side}^2", lambda a=a, b=b, m=mask: ssim(a, b, m))
    real, gen = rng.normal(size=(500, 128)), rng.normal(size=(500, 128)) + 0.1
    row("Frechet identity distance 500 x 128-d", lambda: frechet_identity_distance(real, gen))
    track = rng.normal(size=(300, 478, 2)) + 100
    track[:, [33, 133]] -= 30
    row("landmark jitter 300 frames x 478", lambda: landmark_jitter(track))
    t.print()
    print(f"load average (1 min) at the end: {machine_info()['load_average_1min']}")
    write_json(args.out, {"machine": info, "image": args.image or "skimage.data.astronaut",
                          "rows": t.records()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
