"""Shared helpers of the bench/ scripts: machine description, timing, a plain-text table and
atomic JSON output.

Typical use::

    import sys; sys.path.insert(0, str(Path(__file__).parent))   # when run as a script
    from common import Table, machine_info, timeit, write_json

    t = Table("case", "ms / item", "items / s")
    r = timeit(lambda: f(x), repeat=5)
    t.add("f 256", r["median_s"] * 1e3, 1 / r["median_s"])
    t.print()
    write_json(out, {"machine": machine_info(), "rows": t.records()})
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from portraitrig.io.atomic import write_json as _write_json


def cpu_model() -> str:
    """CPU model name (from /proc/cpuinfo on Linux, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: CPU model, usable cores, GPU(s), torch/CUDA versions, Python,
    UTC timestamp. torch is optional (absent fields are None)."""
    info: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": load_average(),
        "torch": None, "torch_threads": None, "cuda": None, "gpus": [],
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line such as "Intel Xeon (2 cores), no GPU, torch 2.13.0"."""
    i = info or machine_info()
    gpu = ", ".join(i["gpus"]) if i.get("gpus") else "no GPU"
    cuda = f" CUDA {i['cuda']}" if i.get("cuda") else ""
    return f"{i['cpu']} ({i['cpu_cores']} cores), {gpu}, torch {i.get('torch')}{cuda}"


def sync() -> None:
    """Wait for queued GPU work (no-op without CUDA), so timings are honest."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass


def timeit(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1, number: int = 1) -> dict[str, float]:
    """Time ``fn`` (called ``number`` times per repeat, after ``warmup`` calls). Seconds per
    call: median_s, min_s, mean_s, stdev_s (wall clock) and cpu_median_s (this process's CPU
    time: on a shared, busy machine it is the steadier figure for single-threaded code);
    and repeat, number."""
    for _ in range(warmup):
        fn()
    sync()
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / number)
        cpu.append((time.process_time() - c0) / number)
    return {"median_s": statistics.median(times), "min_s": min(times), "mean_s": statistics.fmean(times),
            "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
            "cpu_median_s": statistics.median(cpu), "repeat": repeat, "number": number}


def load_average() -> float | None:
    """1-minute load average (None where unknown): record it beside timings."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


class Table:
    """A plain-text table: ``Table("name", "ms")``, ``add(...)`` rows, ``print()``; floats are
    shown with 4 significant digits; ``records()`` gives the rows as dicts for JSON."""

    def __init__(self, *columns: str, title: str | None = None):
        self.columns, self.title, self.rows = list(columns), title, []

    def add(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        self.rows.append(list(values))

    @staticmethod
    def _fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4g}"
        return "-" if v is None else str(v)

    def render(self) -> str:
        cells = [self.columns] + [[self._fmt(v) for v in r] for r in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [] if self.title is None else [self.title]
        for k, r in enumerate(cells):
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(r, widths))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def print(self) -> None:
        print(self.render(), flush=True)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def workers_table(runs: dict[int, list[dict]], title: str) -> tuple["Table", list[dict]]:
    """Median wall time per worker count of runs {workers: [{"wall_s", "frames", ...}, ...]},
    frames / s and the speed-up over the first count: (table, rows for the JSON)."""
    import statistics

    first = next(iter(runs))
    base = statistics.median(r["wall_s"] for r in runs[first])
    table = Table("workers", "wall s", "frames", "frames / s", "speed-up", title=title)
    rows = []
    for w, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        frames = rs[0]["frames"]
        table.add(w, wall, frames, frames / wall, base / wall)
        rows.append({"workers": w, "wall_s": wall, "frames": frames, "frames_per_s": frames / wall,
                     "speedup": base / wall, "runs": rs})
    return table, rows


def fit_crops(rigger, images, label: str = "image") -> list:
    """Fit each aligned crop (H, W, 3) uint8 with ``rigger`` (:class:`portraitrig.pipeline.Rigger`):
    a list of fits, None where no face was found (benchmarks' re-fit scores)."""
    import numpy as np

    from portraitrig.errors import InputError

    fits = []
    for i, im in enumerate(images):
        try:
            fits.append(rigger.fit_crop(np.ascontiguousarray(im), f"{label} {i}"))
        except InputError:
            fits.append(None)
    return fits


def vertex_colours(params, image, face_model):
    """(V, 3) colours in [0, 1] of the rig's mesh under ``params`` (one item, NDC of ``image``)
    taken from ``image`` (S, S, 3) uint8 where it shows the vertex (the z-buffer decides); hidden
    vertices take repeated averages of their neighbours' colours. The colours of the avatar's
    novel-view floor (``bench_avatar.mesh_views``): the rig's own mesh turned as requested, so
    the pose a re-fit misses on it is the re-fit's own error there. Coarse (one colour per
    vertex): for expressions, whose re-fit reads brows and lips, see :func:`uv_texture`."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from portraitrig.face.base import posed_vertices
    from portraitrig.fit.photometric import mesh_laplacian
    from portraitrig.render.raster import rasterize

    p = params.to("cpu", torch.float32)
    img = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255
    v = posed_vertices(face_model, p)                                         # (1, V, 3), NDC
    at = v[:, None, :, :2]
    col = F.grid_sample(img, at, align_corners=False)[0, :, 0].T              # (V, 3)
    depth = rasterize(v, face_model.faces, image.shape[0]).depth[:, None]       # (1, 1, S, S)
    seen = v[0, :, 2] <= F.grid_sample(depth, at, mode="nearest", align_corners=False)[0, 0, 0] + 0.02
    if seen.any() and not seen.all():
        A = -mesh_laplacian(face_model.faces, face_model.n_vertices)
        A.fill_diagonal_(0)
        col[~seen] = col[seen].mean(0)
        for _ in range(50):   # hidden vertices: repeated averages of their neighbours
            col[~seen] = ((A @ col) / A.sum(1, keepdim=True).clamp_min(1))[~seen]
    return col


def uv_texture(params, image, face_model, size: int = 128):
    """(3, size, size) texture in [0, 1] of the rig's mesh under ``params`` (one item, NDC of
    ``image``) unwrapped from ``image`` (S, S, 3) uint8 through the rendered uv buffer: each
    pixel the mesh covers lands on its texel (texels hit by several pixels take their mean);
    texels no pixel reached (hidden, or between pixels) take repeated averages of their filled
    neighbours. Sharper than :func:`vertex_colours` (eyebrows, lips): the texture of the
    cross-reenactment floor."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from portraitrig.render.buffers import render_buffers

    p = params.to("cpu", torch.float32)
    img = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1) / 255      # (3, S, S)
    b = render_buffers(p, face_model, size=image.shape[0], names=("uv", "mask"))
    on = b["mask"][0, 0] > 0.99
    uv = b["uv"][0][:, on]                                                                  # (2, P)
    texel = (uv[1] * size).long().clamp(0, size - 1) * size + (uv[0] * size).long().clamp(0, size - 1)
    tex = torch.zeros(3, size * size).index_add_(1, texel, img[:, on])
    n = torch.zeros(size * size).index_add_(0, texel, torch.ones(len(texel)))
    tex, filled = (tex / n.clamp_min(1)).view(1, 3, size, size), (n > 0).float().view(1, 1, size, size)
    for _ in range(4 * size):   # hidden texels: averages of filled neighbours, growing inwards
        if bool(filled.all()):
            break
        s = F.avg_pool2d(tex * filled, 3, 1, 1, count_include_pad=False)
        w = F.avg_pool2d(filled, 3, 1, 1, count_include_pad=False)
        grow = (filled == 0) & (w > 0)
        if not bool(grow.any()):   # nothing filled to grow from (no pixel on the mesh)
            break
        tex = torch.where(grow, s / w.clamp_min(1e-6), tex)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return tex[0]


def render_textured(params, texture, face_model, size: int):
    """(B, 3, size, size) colours and (B, 1, size, size) mask of the rig's mesh under ``params``
    coloured by ``texture`` (3, T, T) (:func:`uv_texture`) at the rendered uv buffer."""
    import torch
    import torch.nn.functional as F

    from portraitrig.render.buffers import render_buffers

    b = render_buffers(params.to("cpu", torch.float32), face_model, size=size, names=("uv", "mask"))
    grid = (b["uv"] * 2 - 1).permute(0, 2, 3, 1)
    colour = F.grid_sample(texture[None].expand(len(grid), -1, -1, -1), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    return colour * b["mask"], b["mask"]


def embed_crops(encoder, images):
    """(N, 128) identity embeddings of crops with ``encoder`` (:class:`portraitrig.eval.identity.IdentityEncoder`)."""
    import numpy as np

    return np.stack([encoder.embed(np.ascontiguousarray(x)) for x in images])


def steps_per_second(method, cfg, n: int = 30, windows: int = 3, warmup: int = 10, at_step: int = 0) -> float:
    """Training steps per second of ``method`` with ``cfg.train``: a schedule's length that fits
    a time budget (:func:`budget_schedule`). The median of ``windows`` runs of ``n`` steps after
    ``warmup`` steps: a compiled step may still recompile in its first steps (a new share of moved
    items is a new shape), and one slow window made a run's schedule end a quarter early. The
    steps taken are thrown away: the model's (and a critic's) weights are put back, so the same
    method then trains from its initial state. ``at_step``: the steps are numbered from there
    (a method whose step changes later in the run, a critic that starts then, is timed as it
    will run then)."""
    import copy

    import torch

    from portraitrig.training.loop import Trainer

    critic = getattr(method, "critic", None)
    start = copy.deepcopy(method.model.state_dict())
    start_critic = None if critic is None else copy.deepcopy(critic.state_dict())
    tr = Trainer(method, cfg.train)
    sync = torch.cuda.synchronize if method.device.type == "cuda" else (lambda: None)
    for k in range(warmup):
        tr.step(at_step + k)
    rates, step = [], at_step + warmup
    for _ in range(max(1, windows)):
        sync()
        t = time.perf_counter()
        for _ in range(n):
            tr.step(step)
            step += 1
        sync()
        rates.append(n / (time.perf_counter() - t))
    method.model.load_state_dict(start)
    if critic is not None:
        critic.load_state_dict(start_critic)
    return float(statistics.median(rates))


def budget_schedule(rate: float, minutes: float) -> tuple[int, float]:
    """(steps, time limit in minutes) of a decaying schedule sized to ``minutes`` of training at
    ``rate`` steps/s (:func:`steps_per_second`): 90 % of the steps the probe's rate gives, since
    the loop runs slower than the bare step (logging, samples; on the H200 the 256 video preset
    stepped at 30.6/s where the probe's fastest window read 37), and a time limit a fifth over
    the budget, a guard that should not cut the schedule before its decay ends."""
    return max(100, int(rate * minutes * 60 * 0.9)), minutes * 1.2


def replay_oracle(train, held, masks=None, keep=None) -> dict:
    """What replaying a video's training frames would score on its held-out frames, each frame
    replayed by the training frame that scores best against it (chosen with the answer in hand):
    mean PSNR over the held-out frames (``psnr``) and, with ``masks`` (M, H, W) in [0, 1] or 0..255,
    mean PSNR weighted by each frame's mask (``psnr_masked``, its own best frame). ``train``
    (N, H, W, 3) and ``held`` (M, H, W, 3) uint8 (arrays or tensors). ``keep`` (indices into
    ``held``): the same figures over those frames too, as ``saved_frames`` (from the same search).
    A renderer that could only replay training frames scores at most this; above it is
    generalisation beyond them."""
    import numpy as np
    import torch

    tr = torch.as_tensor(np.asarray(train)).float() / 255
    out: dict = {"frames": len(held), "training_frames": len(tr)}
    whole, masked = [], []
    for k in range(len(held)):
        ref = torch.as_tensor(np.asarray(held[k])).float() / 255
        err = ((tr - ref) ** 2).mean(-1)                                            # (N, H, W)
        whole.append(float(-10 * torch.log10(err.mean((1, 2)).min().clamp_min(1e-12))))
        if masks is not None:
            m = torch.as_tensor(np.asarray(masks[k])).float()
            m = m / 255 if float(m.max()) > 1.5 else m
            se = (err * m).sum((1, 2)) / m.sum().clamp_min(1e-6)
            masked.append(float(-10 * torch.log10(se.min().clamp_min(1e-12))))
    def summary(rows) -> dict:
        got = {"psnr": round(float(np.mean([whole[i] for i in rows])), 2)}
        if masked:
            got["psnr_masked"] = round(float(np.mean([masked[i] for i in rows])), 2)
        return got

    out.update(summary(range(len(held))))
    if keep is not None:
        out["saved_frames"] = {"frames": len(keep), "training_frames": len(tr), **summary([int(i) for i in keep])}
    return out


def replay_rig_nearest(train, held, train_params, held_params, face_model, inside=None) -> dict:
    """What replaying a video's training frames scores on its held-out frames when each is
    replayed by the training frame whose rig lies nearest (the video renderer's retrieval key,
    ``retrieval_keys``: face-mesh landmarks in the crop), chosen without the answer:
    mean PSNR and SSIM of the crops, and PSNR where ``inside`` (H, W) bool (the crop's part in
    the video frame). ``train`` (N, H, W, 3) and ``held`` (M, H, W, 3) uint8 arrays."""
    import numpy as np
    import torch

    from portraitrig.eval import image
    from portraitrig.methods.video.condition import Conditioner, retrieval_keys

    def keys(p):
        return retrieval_keys(face_model, p.to("cpu", torch.float32))

    def psnr(a, b, m=None):   # as replay_oracle: an exact copy at PSNR_CAP, not infinity
        return min(image.psnr(a, b, m), image.PSNR_CAP)

    pick = Conditioner.nearest(keys(held_params), keys(train_params)).numpy()
    out = {"frames": len(held), "training_frames": len(train),
           "psnr": round(float(np.mean([psnr(train[j], h) for j, h in zip(pick, held)])), 2),
           "ssim": round(float(np.mean([image.ssim(train[j], h) for j, h in zip(pick, held)])), 4)}
    if inside is not None:
        out["psnr_in_frame"] = round(float(np.mean([psnr(train[j], h, inside) for j, h in zip(pick, held)])), 2)
    return out


EDGE_BAND_PX = 6  # the person mask's outline band (heldout_breakdown, ssim_by_region), pixels either side


def mask_edge_band(mask, px: int):
    """Pixels within ``px`` of a boolean mask's edge (H, W): its dilation minus its erosion."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    k = 2 * px + 1
    grown = F.max_pool2d(m, k, 1, px)
    shrunk = 1 - F.max_pool2d(1 - m, k, 1, px)
    return (grown - shrunk)[0, 0].numpy() > 0.5


def ssim_by_region(gen, real, person, face, inside=None, band_px: int = EDGE_BAND_PX) -> dict:
    """Where rendered frames lose SSIM against the real ones: the SSIM map's deficit (1 - SSIM,
    scikit-image's 7x7 map of ``portraitrig.eval.image``, its mean over colour) pooled over the
    frames in four regions: inside the face mesh (``face`` (M, S, S) bool), the band within
    ``band_px`` of the person mask's edge outside it (the hair's and shoulders' outline), the rest
    of the person (``person`` (M, S, S) in [0, 1], above 0.5) and the background; each region's
    share of the pixels and of the deficit, and its SSIM. Also the renders' sharpness where the
    rig has no surface (the person outside the face mesh): their Laplacian energy over the real
    frames' (below 1: blurrier than the video). ``gen``, ``real`` (M, S, S, 3) uint8; ``inside``
    (S, S) or (M, S, S) bool: the pixels counted (default all; e.g. not the crop's padding)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from portraitrig.eval.image import ssim_map

    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]

    def energy(img, where):   # mean squared Laplacian of the grey image on ``where``
        g = torch.from_numpy(np.asarray(img, np.float32).mean(-1))[None, None]
        return float((F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), lap)[0, 0].numpy()[where] ** 2).sum())

    names = ("face_mesh", "outline_band", "person_rest", "background")
    lost, count = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    e_gen = e_real = 0.0
    for k in range(len(gen)):
        deficit = 1 - ssim_map(np.asarray(gen[k]), np.asarray(real[k]), data_range=255)
        here = np.ones(deficit.shape, bool) if inside is None else \
            np.asarray(inside if np.ndim(inside) == 2 else inside[k], bool)
        p, f = np.asarray(person[k]) > 0.5, np.asarray(face[k], bool)
        band = mask_edge_band(p, band_px) & ~f
        regions = {"face_mesh": f, "outline_band": band, "person_rest": p & ~f & ~band, "background": ~p & ~f & ~band}
        for name, m in regions.items():
            lost[name] += float(deficit[m & here].sum())
            count[name] += float((m & here).sum())
        rest = p & ~f & here
        e_gen, e_real = e_gen + energy(gen[k], rest), e_real + energy(real[k], rest)
    total_lost, total = sum(lost.values()), sum(count.values())
    out = {"frames": len(gen), "ssim": round(1 - total_lost / max(total, 1.0), 4), "band_px": band_px}
    for name in names:
        out[name] = {"share_pixels": round(count[name] / max(total, 1.0), 3),
                     "share_deficit": round(lost[name] / total_lost, 3) if total_lost > 0 else 0.0,
                     "ssim": round(1 - lost[name] / count[name], 4) if count[name] else None}
    out["sharpness_person_outside_face"] = round(e_gen / e_real, 3) if e_real > 0 else None
    return out


def face_masks(params, face_model, size: int):
    """The face mesh's masks (B, size, size) bool of B items' RigParams."""
    import torch

    from portraitrig.render.buffers import render_buffers

    with torch.no_grad():
        return render_buffers(params, face_model, size=size, names=("mask",))["mask"][:, 0].cpu().numpy() > 0.5


def by_condition_range(gen, real, params, train_params, face_model, face=None) -> dict:
    """PSNR inside the face mesh (pooled) of rendered frames ``gen`` against ``real`` (M, S, S, 3)
    uint8, split by whether each frame's rig condition (``params``: expression coefficients and
    gaze, what the Gaussian avatar's expression MLP sees) lies inside the range ``train_params``
    spanned, value by value, or beyond it (with how far: the sum over the values of the excess in
    training standard deviations, mean over those frames). ``face``: the frames' face-mesh masks
    (M, S, S) bool when the caller has them (else rendered here)."""
    import numpy as np
    import torch

    def cond(p):
        return torch.cat([p.expression, p.gaze.flatten(1)], 1).float().cpu()

    ct = cond(train_params)
    lo, hi, sd = ct.amin(0), ct.amax(0), ct.std(0).clamp_min(1e-6)
    ch = cond(params)
    excess = ((torch.relu(ch - hi) + torch.relu(lo - ch)) / sd).sum(1).numpy()
    if face is None:
        face = face_masks(params, face_model, np.asarray(real[0]).shape[0])
    se = {True: 0.0, False: 0.0}
    n = {True: 0, False: 0}
    for k in range(len(gen)):
        err = ((np.asarray(gen[k], np.float64) - np.asarray(real[k], np.float64)) / 255) ** 2
        inside = bool(excess[k] == 0)
        se[inside] += float(err.mean(-1)[face[k]].sum())
        n[inside] += int(face[k].sum())

    def db(key):
        return round(float(-10 * np.log10(max(se[key], 1e-12) / n[key])), 2) if n[key] else None

    beyond = excess[excess > 0]
    return {"frames_inside": int((excess == 0).sum()), "frames_beyond": int(len(beyond)),
            "psnr_face_mesh_inside": db(True), "psnr_face_mesh_beyond": db(False),
            "beyond_mean_excess_sd": round(float(beyond.mean()), 2) if len(beyond) else 0.0}


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (numpy values and paths allowed); creates parent folders."""
    return _write_json(path, obj)


def default_data_dir() -> Path:
    """The shared real data (``../shared/data/faces`` beside the checkout), or $PORTRAITRIG_DATA."""
    env = os.environ.get("PORTRAITRIG_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def fast_cuda_settings(device) -> None:
    """TF32 matmuls/convolutions and cuDNN autotuning on a CUDA device (what training uses)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


__all__ = ["cpu_model", "machine_info", "describe_machine", "sync", "timeit", "load_average", "Table", "write_json",
           "default_data_dir", "fast_cuda_settings"]


def fixed_batch_trainer(model_config, train_config, device, x0, buffers, grad_checkpointing: bool = False):
    """The shared loop's Trainer on DiffusionRig with one fixed batch (x0, buffers) every step:
    the training step as the real loop runs it (EMA, clipping, optimizer), without data loading.
    ``trainer.step(k)`` runs step k."""
    import torch

    from portraitrig.methods.diffusionrig.method import diffusion_loss
    from portraitrig.methods.diffusionrig.model import DiffusionRigModel
    from portraitrig.methods.diffusionrig.sampling import NoiseSchedule
    from portraitrig.training.loop import Trainer
    from portraitrig.training.method import TrainingMethod

    class FixedBatch(TrainingMethod):
        name = "diffusion-benchmark"

        def __init__(self):
            torch.manual_seed(train_config.seed)
            self.device = torch.device(device)
            self.model = DiffusionRigModel(model_config).to(self.device)
            if grad_checkpointing:
                self.model.unet.enable_gradient_checkpointing()
            self.schedule = NoiseSchedule(model_config)
            self.mf = torch.channels_last if train_config.channels_last else torch.contiguous_format

        def num_items(self):
            return x0.shape[0]

        def loss(self, net, idx, step, generator):
            x = x0.contiguous(memory_format=self.mf)
            return diffusion_loss(net, self.schedule, x, buffers, x, generator, self.mf)

        def run_identity(self):
            return {}

        def export(self, ema, directory):
            return ema.save_pretrained(directory)

    import dataclasses

    return Trainer(FixedBatch(), dataclasses.replace(train_config, batch_size=x0.shape[0]))
