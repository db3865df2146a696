"""Identity verification study on real data: how well does dlib's embedding (as used by
portraitrig.eval.identity) separate people in our data?

Samples N evenly spaced frames per video clip, embeds them (HOG face; frames without one are
skipped), and scores same-clip pairs (positives) against cross-clip pairs (negatives): ROC AUC,
EER, accuracy at dlib's 0.6, best threshold. Optionally adds the CelebA-HQ photos, each taken
as its own identity (negatives only, against each other and the clips). Also lists clip pairs
whose mean cross distance is below 0.6 (possibly the same person, or a weak embedding).

    python scripts/identity_auc.py [--videos DIR] [--photos DIR|none] [-n 12] [--aligned 256]
                                   [-o out/identity_auc.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import Table, default_data_dir, describe_machine, machine_info, write_json  # noqa: E402

from portraitrig.errors import PortraitRigError  # noqa: E402
from portraitrig.eval.identity import IdentityEncoder, identity_distance, verify  # noqa: E402
from portraitrig.io.images import read_image  # noqa: E402
from portraitrig.io.video import iter_video, video_info  # noqa: E402


def sample_frames(path: Path, n: int) -> list[np.ndarray]:
    """n evenly spaced frames (by the container's frame count)."""
    count = video_info(path).frame_count
    want = set(np.unique(np.linspace(0, max(count - 1, 0), n).round().astype(int)).tolist())
    out = []
    for f in iter_video(path, want=want.__contains__):
        out.append(f.image)
        if f.index >= max(want):
            break
    return out


def pairs_from_groups(emb: np.ndarray, group: np.ndarray, singleton: np.ndarray):
    """All index pairs; positive when both share a group and neither is a singleton."""
    i, j = np.triu_indices(len(emb), 1)
    same = (group[i] == group[j]) & ~singleton[i] & ~singleton[j]
    return identity_distance(emb[i], emb[j]), same, i, j


def main(argv=None) -> int:
    data = default_data_dir()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", default=str(data / "videos"))
    ap.add_argument("--photos", default=str(data / "photos" / "celebahq"), help="folder, or 'none'")
    ap.add_argument("-n", "--frames", type=int, default=12, help="frames per clip")
    ap.add_argument("--jitter", type=int, default=0, help="dlib num_jitters")
    ap.add_argument("--aligned", type=int, default=0, metavar="SIZE",
                    help="embed FFHQ-aligned SIZE^2 crops (MediaPipe landmarks), as generated "
                         "crops are, instead of the raw frames/photos (0 = raw)")
    ap.add_argument("-o", "--out", default="out/identity_auc.json")
    args = ap.parse_args(argv)

    enc = IdentityEncoder(jitter=args.jitter, fallback="aligned" if args.aligned else "none")

    def prepare(image):
        if not args.aligned:
            return image
        from portraitrig.capture.align import align_face
        from portraitrig.capture.detector import detect_largest

        return align_face(image, detect_largest(image), args.aligned).image

    embs, groups, single, names, sources, times = [], [], [], [], [], []
    clips = sorted(Path(args.videos).glob("*.mp4"))
    if not clips:
        print(f"no .mp4 in {args.videos}", file=sys.stderr)
        return 2
    missed = {}
    for c in clips:
        frames = sample_frames(c, args.frames)
        for k, f in enumerate(frames):
            try:
                f = prepare(f)
                t0 = time.perf_counter()
                e = enc.encode(f)
            except PortraitRigError:
                missed[c.name] = missed.get(c.name, 0) + 1
                continue
            times.append(time.perf_counter() - t0)
            embs.append(e.vector), groups.append(c.stem), single.append(False)
            names.append(f"{c.name}#{k}"), sources.append(e.source)
    n_clip_items = len(embs)
    photos = [] if args.photos == "none" else sorted(p for p in Path(args.photos).iterdir()
                                                     if p.suffix.lower() in (".jpg", ".png"))
    for p in photos:
        try:
            img = prepare(read_image(p))
            t0 = time.perf_counter()
            e = enc.encode(img)
        except PortraitRigError:
            missed[p.name] = 1
            continue
        times.append(time.perf_counter() - t0)
        embs.append(e.vector), groups.append(p.stem), single.append(True)
        names.append(p.name), sources.append(e.source)

    E, G, S = np.array(embs), np.array(groups), np.array(single)
    d, same, i, j = pairs_from_groups(E, G, S)
    clip_pair = ~S[i] & ~S[j]
    results = {"clips": verify(d[clip_pair], same[clip_pair])}
    if S.any():
        results["clips+photos"] = verify(d, same)
        results["photos_only_negatives"] = {
            "n": int((S[i] & S[j]).sum()), "mean_distance": float(d[S[i] & S[j]].mean()),
            "fraction_below_0.6": float((d[S[i] & S[j]] < 0.6).mean())}

    t = Table("set", "pos", "neg", "AUC", "EER", "acc@0.6", "TPR@0.6", "FPR@0.6", "best acc", "best thr",
              title=f"dlib identity verification, {args.frames} frames/clip, jitter {args.jitter}, "
                    + (f"aligned {args.aligned}^2 crops" if args.aligned else "raw frames/photos"))
    for name, r in results.items():
        if "auc" in r:
            t.add(name, r["n_positive"], r["n_negative"], r["auc"], r["eer"], r["accuracy_at_0.6"],
                  r["tpr_at_0.6"], r["fpr_at_0.6"], r["best_accuracy"], r["best_threshold"])
    t.print()
    if "photos_only_negatives" in results:
        r = results["photos_only_negatives"]
        print(f"photo-photo pairs (all different people): {r['n']}, mean distance {r['mean_distance']:.3f}, "
              f"{r['fraction_below_0.6'] * 100:.2f}% below 0.6")

    # per clip: spread within, and the nearest other clip
    stems = sorted(set(G[~S]))
    per = Table("clip", "frames", "mean d within", "max d within", "nearest clip", "mean d to it")
    close = []
    for a in stems:
        ia = np.nonzero(G == a)[0]
        within = identity_distance(E[ia][:, None], E[ia][None])[np.triu_indices(len(ia), 1)]
        best = (None, np.inf)
        for b in stems:
            if b != a:
                m = float(identity_distance(E[ia][:, None], E[G == b][None]).mean())
                best = min(best, (b, m), key=lambda x: x[1])
                if m < 0.6 and a < b:
                    close.append({"a": str(a), "b": str(b), "mean_distance": m})
        per.add(str(a), len(ia), float(within.mean()) if within.size else float("nan"),
                float(within.max()) if within.size else float("nan"), str(best[0]), best[1])
    per.print()
    fa = (d < 0.6) & ~same
    by_pair: dict[str, int] = {}
    for a, b in zip(G[i[fa]], G[j[fa]]):
        key = " ~ ".join(sorted((str(a), str(b))))
        by_pair[key] = by_pair.get(key, 0) + 1
    print("false accepts at 0.6 by pair of identities:", dict(sorted(by_pair.items(), key=lambda kv: -kv[1])))
    if close:
        print("clip pairs with mean distance < 0.6 (same person?):", close)
    info = machine_info()
    print(f"embedding: {np.median(times) * 1e3:.0f} ms/image median over {len(times)} "
          f"({describe_machine(info)}); no face in: {missed or 'none'}; "
          f"face sources: { {s: sources.count(s) for s in set(sources)} }")
    write_json(args.out, {
        "machine": info, "frames_per_clip": args.frames, "jitter": args.jitter, "aligned": args.aligned,
        "n_clip_images": n_clip_items, "n_photos": int(S.sum()), "no_face": missed,
        "face_sources": {s: sources.count(s) for s in set(sources)},
        "results": results, "per_clip": per.records(), "close_clip_pairs": close,
        "false_accepts_at_0.6": by_pair,
        "embed_ms_median": float(np.median(times) * 1e3),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
