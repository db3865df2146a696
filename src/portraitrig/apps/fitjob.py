"""``portraitrig fit``: fit every image / video frame, one parameter file per item, a manifest.

A bad input never stops the batch: it is recorded in ``manifest.json`` with status ``error``
and a message naming the file and the problem. Re-running skips finished items (and finished
videos; a change of any output setting refits everything); every file is written atomically and
the manifest is rewritten every few seconds and at the end, so a killed run loses at most the
last few seconds' record (those items are fitted again). An album (``--album``) is one joint
fit: re-running it refits all its photos.

Long videos: a video of more than ``chunk_frames`` kept frames gets its identity and albedo
once, from frames spread over it (saved as ``<video id>.identity.<format>``), and is then
fitted chunk by chunk with them fixed, in bounded memory (see :mod:`portraitrig.pipeline`). The
manifest's ``sources`` entry of the video records the chunks finished, so a killed run resumes
at the first unfinished chunk, not at the video's start.

Scaling:

- ``workers=N`` fits in N processes on this machine: the inputs (a video, a photo; an album is
  one unit) are handed out one at a time to processes that each have their own rigger and
  MediaPipe graphs; the parent alone writes the one ``manifest.json`` (resumable as above).
  Every fitting process, the job's own included, runs torch on one thread (``FIT_THREADS``).
- ``shard="I/N"`` (0-based I) fits only shard I of N of the expanded inputs, so that N machines
  split one collection: run the same command on each machine with ``shard`` 0/N ... N-1/N and
  a different output folder per shard (each shard writes its own folder and manifest). An
  input's shard depends only on its file name and its folder's name (a hash), so it does not
  change with where the collection is mounted or when files are added to it.
"""
from __future__ import annotations

import hashlib
import os
import queue
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from portraitrig.errors import InputError
from portraitrig.io.atomic import write_image
from portraitrig.io.fitfolder import MANIFEST, Manifest


@dataclass
class FitJobConfig:
    crop_size: int = 256
    format: str = "safetensors"       # or "npz"
    stride: int = 1                   # video frame stride
    max_frames: int | None = None     # per video
    album: bool = False               # all photos show one person: shared identity + albedo
    smooth_sigma: float = 1.0         # video temporal smoothing, in (original) frames; 0 = off
    save_crops: bool = False          # also write <id>.crop.png
    photometric: bool = True
    device: str = "cpu"
    workers: int = field(default=1, metadata={"help": "fitting processes on this machine (one torch thread each)"})
    shard: str | None = field(default=None, metadata={
        "help": "fit only shard I of N of the inputs, as I/N with 0 <= I < N (one output folder per shard)"})
    chunk_frames: int = field(default=100, metadata={  # = pipeline.VIDEO_CHUNK (importing it loads torch)
        "help": "a longer video is fitted in chunks of this many frames (bounded memory, resumable)"})


# torch threads of a fitting process: its solves are many small operations, and more threads
# mostly spin against MediaPipe's own (4.4x slower with 2 threads than with 1 on 2 cores);
# more cores are used through more worker processes
FIT_THREADS = 1

# settings that change what is written: a re-run with other values refits everything
OUTPUT_SETTINGS = ("crop_size", "format", "stride", "max_frames", "album", "smooth_sigma", "photometric")


@dataclass
class FitJobSummary:
    out_dir: Path
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, message)

    @property
    def exit_code(self) -> int:
        return 0 if self.errors == 0 else 1

    def text(self) -> str:
        lines = [f"{self.ok} fitted, {self.skipped} already done, {self.errors} failed -> {self.out_dir / MANIFEST}"]
        for src, msg in self.failed[:20]:
            lines.append(f"  error: {msg}" if msg.startswith(src) else f"  error: {src}: {msg}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (see the manifest)")
        return "\n".join(lines)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ValueError with a clear message otherwise."""
    parts = str(text).split("/")
    try:
        i, n = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        i = n = None
    if i is None or n is None or n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be I/N with N >= 1 and 0 <= I < N (e.g. 0/4), got {text!r}")
    return i, n


def shard_of(path: str | Path, n: int) -> int:
    """The shard (0..n-1) of an input file: a hash of its folder's name and its file name."""
    p = Path(path)
    key = f"{p.parent.name}/{p.name}".encode()
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % n


def _error_item(item_id: str, source: str, err: Exception) -> dict:
    msg = str(err) if isinstance(err, InputError) else f"{source}: {err.__class__.__name__}: {err}"
    return {"id": item_id, "source": source, "status": "error", "message": msg}


class _Record:
    """Applies what the fitting reports to the manifest and the summary (in the parent)."""

    def __init__(self, manifest: Manifest, summary: FitJobSummary, bar):
        self.manifest, self.summary, self.bar = manifest, summary, bar

    def item(self, entry: dict) -> None:
        self.manifest.items[entry["id"]] = entry
        if entry["status"] == "ok":
            self.summary.ok += 1
        else:
            self.summary.errors += 1
            self.summary.failed.append((entry["source"], entry["message"]))

    def skipped(self, n: int) -> None:
        self.summary.skipped += n

    def source(self, key: str, entry: dict) -> None:
        self.manifest.sources[key] = entry
        self.manifest.save(force=False)

    def advance(self) -> None:
        self.bar.update(1)
        self.manifest.save(force=False)


class _Relay:
    """The same reports, sent from a worker process to the parent."""

    def __init__(self, results, worker: int):
        self.results, self.worker = results, worker

    def __getattr__(self, name: str):
        if name not in ("item", "skipped", "source", "advance"):
            raise AttributeError(name)
        return lambda *args: self.results.put((name, self.worker, args))


class _Fitter:
    """Fits sources with one rigger and reports every outcome to ``record``; reads the
    earlier run's manifest only to skip finished work."""

    def __init__(self, rigger, cfg: FitJobConfig, out: Path, manifest: Manifest, record):
        self.rigger, self.cfg, self.out, self.manifest, self.record = rigger, cfg, out, manifest, record

    def error(self, item_id: str, source: str, err: Exception) -> None:
        self.record.item(_error_item(item_id, source, err))

    def write(self, item_id: str, cap, res) -> bool:
        """Write one fit's files and report it; False if writing failed."""
        cfg, out = self.cfg, self.out
        pfile = f"{item_id}.{cfg.format}"
        try:
            res.params.save(out / pfile, extras=res.extras(self.rigger.model),
                            meta={"n_faces": res.n_faces, "landmark_error_iod_pct": res.landmark_error})
            entry = {"id": item_id, "source": cap.source, "status": "ok", "message": "", "params": pfile,
                     "n_faces": res.n_faces, "landmark_error_iod_pct": round(res.landmark_error, 4)}
            if res.n_faces > 1:
                entry["message"] = f"{res.n_faces} faces found; fitted the largest"
            if cfg.save_crops:
                entry["crop"] = f"{item_id}.crop.png"
                write_image(out / entry["crop"], res.crop_image)
        except OSError as exc:  # disk full, permissions: recorded, the batch goes on
            self.error(item_id, cap.source, exc)
            return False
        self.record.item(entry)
        return True

    def write_group(self, group: list[tuple[str, object]], shared: bool, smooth: float,
                    times: list[int] | None = None) -> bool:
        """Fit (id, Capture) pairs together and write their files (``times``: a video's frame
        numbers of them, for the smoothing); False if the group failed."""
        if not group:
            return True
        try:
            results = self.rigger.fit_captures([c for _, c in group], shared=shared, smooth_sigma=smooth,
                                               times=times)
        except Exception as exc:  # a failed solve fails the group, not the batch
            for item_id, cap in group:
                self.error(item_id, cap.source, exc)
            return False
        return all([self.write(item_id, cap, res) for (item_id, cap), res in zip(group, results)])

    def capture(self, item):
        # the original image is not kept: the fit needs the crop only
        return replace(self.rigger.capture(item.load(), item.source), image=None)

    def fit(self, sources) -> None:
        """Fit these sources (photos one by one, or as one album; videos each on its own)."""
        album: list[tuple[str, object]] = []
        for src in sources:
            if src.kind == "video":
                self.fit_video(src)
            else:
                for item in src.iter_items():
                    # an album is one joint fit: any new photo refits all of it
                    if not self.cfg.album and self.manifest.done(item.id, self.out):
                        self.record.skipped(1)
                        continue
                    try:
                        cap = self.capture(item)
                    except Exception as err:  # unreadable, no face, decoder crash: reported, batch goes on
                        self.error(item.id, item.source, err)
                        continue
                    if self.cfg.album:
                        album.append((item.id, cap))
                    else:
                        self.write_group([(item.id, cap)], shared=False, smooth=0.0)
            self.record.advance()
        if album:
            self.write_group(album, shared=True, smooth=0.0)

    def fit_video(self, src) -> None:
        from portraitrig.pipeline import kept_frame_count

        key = str(src.path)
        if self.manifest.source_done(key, self.out):
            self.record.skipped(len(self.manifest.sources[key].get("items", [])))
            return
        try:
            kept = kept_frame_count(src.path, self.cfg.stride, self.cfg.max_frames)
        except InputError as err:  # cannot be opened at all
            self.error(Path(key).name, key, err)
            self.record.source(key, {"kind": "video", "status": "error", "items": []})
            return
        if kept <= self.cfg.chunk_frames:
            self.fit_short_video(src)
        else:
            self.fit_long_video(src, kept)

    def fit_short_video(self, src) -> None:
        """One joint solve of all the video's frames."""
        cfg, key = self.cfg, str(src.path)
        group: list[tuple[str, object]] = []
        ids: list[str] = []
        times: list[int] = []   # the captured frames' numbers among the kept frames (gaps: no face)
        broken = False
        try:
            for item in src.iter_items():
                if cfg.max_frames is not None and len(ids) >= cfg.max_frames:
                    break
                ids.append(item.id)
                try:
                    group.append((item.id, self.capture(item)))
                    times.append(item.frame_index // cfg.stride)
                except Exception as err:
                    self.error(item.id, item.source, err)
        except InputError as err:  # the source itself broke (unreadable / truncated video)
            broken = True
            self.error(ids[-1] + ".broken" if ids else Path(key).name, key, err)
        fitted = self.write_group(group, shared=True, smooth=cfg.smooth_sigma / max(cfg.stride, 1), times=times)
        # done when decoded to its end and fitted (frames without a face stay errors)
        self.record.source(key, {"kind": "video", "status": "ok" if fitted and not broken else "error", "items": ids})

    def fit_long_video(self, src, kept: int) -> None:
        """Identity from a sample of frames, then chunk by chunk; resumes at the first
        unfinished chunk of an earlier run."""
        from portraitrig.face.params import RigParams
        from portraitrig.fit.smooth import support_radius

        cfg, out, key, C = self.cfg, self.out, str(src.path), self.cfg.chunk_frames
        sigma = cfg.smooth_sigma / max(cfg.stride, 1)
        r = support_radius(sigma)
        before = self.manifest.sources.get(key, {})
        ident_file = f"{src.id}.identity.{cfg.format}"
        start, identity = 0, None
        if (self.manifest.reusable and before.get("chunk_frames") == C and before.get("chunks_done", 0) > 0
                and (out / ident_file).exists()):
            try:
                identity = RigParams.load(out / ident_file)
                start = int(before["chunks_done"])
            except InputError:  # a damaged identity file: start the video again
                identity = None
        ids: list[tuple[int, str]] = []
        if identity is None:
            try:
                sample = self.rigger.sample_video(src.path, cfg.stride, cfg.max_frames, kept=kept)
                if not sample:
                    raise InputError(key, "no face found in the frames sampled over the video for its identity")
                identity = self.rigger.video_identity(sample)
                del sample
                identity.save(out / ident_file)
            except Exception as err:
                self.error(Path(key).name, key, err)
                self.record.source(key, {"kind": "video", "status": "error", "items": []})
                return
        else:  # finished chunks are kept; their frames are read again only as smoothing context
            done = list(before.get("items", []))
            self.record.skipped(sum(self.manifest.done(i, out) for i in done))
            ids = [(int(i.rsplit(".f", 1)[1]) // cfg.stride, i) for i in done]
        skip = {i for o, i in ids if o < start * C - r}
        id_of = dict(ids)
        broken = False

        def captures():
            nonlocal broken
            try:
                for item in src.iter_items(skip=skip.__contains__):
                    o = item.frame_index // cfg.stride
                    if cfg.max_frames is not None and o >= cfg.max_frames:
                        break
                    if o >= start * C:
                        ids.append((o, item.id))
                    id_of[o] = item.id
                    try:
                        yield o, self.capture(item)
                    except Exception as err:
                        if o >= start * C:
                            self.error(item.id, item.source, err)
            except InputError as err:  # the video broke off: what was read is still fitted
                broken = True
                self.error(ids[-1][1] + ".broken" if ids else Path(key).name, key, err)

        chunks_done, failed = start, False
        for ch in self.rigger.fit_chunks(captures(), identity, sigma, C, start_chunk=start):
            if ch.error is not None:
                failed = True
                for o, cap in ch.captures:
                    self.error(id_of[o], cap.source, ch.error)
            else:
                ok = all([self.write(id_of[o], cap, res) for (o, cap), res in zip(ch.captures, ch.results)])
                failed = failed or not ok
            if not failed:
                chunks_done = ch.index + 1
            self.record.source(key, {"kind": "video", "status": "partial", "chunk_frames": C,
                                     "chunks_done": chunks_done, "identity": ident_file,
                                     "items": [i for o, i in ids if o < chunks_done * C]})
        status = "ok" if not (failed or broken) else "error"
        self.record.source(key, {"kind": "video", "status": status, "chunk_frames": C, "chunks_done": chunks_done,
                                 "identity": ident_file, "items": [i for _, i in ids]})


def _tasks(sources, album: bool) -> list[list[int]]:
    """Units of work (lists of source indices), largest files first: an album is one unit."""
    def size(i: int) -> int:
        try:
            return os.stat(sources[i].path).st_size
        except OSError:
            return 0

    photos = [i for i, s in enumerate(sources) if s.kind == "image"]
    units = [[i] for i, s in enumerate(sources) if s.kind == "video" or not album]
    if album and photos:
        units.append(photos)
    return sorted(units, key=lambda u: -sum(size(i) for i in u))


def _worker(worker: int, sources, cfg: FitJobConfig, out: str, manifest: Manifest, tasks, results) -> None:
    """A fitting process: takes units from ``tasks`` until None, reports to ``results``."""
    import torch

    from portraitrig.pipeline import Rigger

    torch.set_num_threads(FIT_THREADS)
    relay = _Relay(results, worker)
    with Rigger(crop_size=cfg.crop_size, device=cfg.device, photometric=cfg.photometric) as rigger:
        fitter = _Fitter(rigger, cfg, Path(out), manifest, relay)
        while (unit := tasks.get()) is not None:
            results.put(("start", worker, (unit,)))
            try:
                fitter.fit([sources[i] for i in unit])
            except Exception as exc:  # the unit fails, the worker goes on
                for i in unit:
                    relay.item(_error_item(sources[i].id, str(sources[i].path), exc))
            results.put(("end", worker, (unit,)))


def _run_workers(sources, units: list[list[int]], cfg: FitJobConfig, out: Path, manifest: Manifest,
                 record: _Record) -> None:
    """Hand ``units`` out to ``cfg.workers`` spawned processes; apply their reports here."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for u in units:
        tasks.put(u)
    n = min(cfg.workers, len(units))

    def start(w: int):
        tasks.put(None)  # one stop sign per process started
        p = ctx.Process(target=_worker, args=(w, sources, cfg, str(out), manifest, tasks, results),
                        daemon=True)
        p.start()
        return p

    procs = {w: start(w) for w in range(n)}
    busy: dict[int, list[int]] = {}
    remaining, restarts = len(units), 0
    try:
        while remaining:
            try:
                kind, w, args = results.get(timeout=1.0)
            except queue.Empty:
                for w, p in list(procs.items()):
                    if p.exitcode in (None, 0):
                        continue
                    # a worker died (killed, out of memory, crashed): its unit is reported as
                    # failed and a new process takes over the rest
                    if w in busy:
                        for i in busy.pop(w):
                            record.item(_error_item(sources[i].id, str(sources[i].path),
                                                    RuntimeError(f"fitting process died (exit code {p.exitcode})")))
                            record.advance()
                        remaining -= 1
                    restarts += 1
                    if restarts > len(units):
                        raise RuntimeError(f"fitting processes keep dying (exit code {p.exitcode})")
                    if remaining:
                        procs[w] = start(w)
                if all(p.exitcode == 0 for p in procs.values()):  # all stopped, no more reports
                    break
                continue
            if kind == "start":
                busy[w] = args[0]
            elif kind == "end":
                busy.pop(w, None)
                remaining -= 1
            else:
                getattr(record, kind)(*args)
    finally:
        for p in procs.values():
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()


def run_fit(inputs: Sequence[str | Path], out_dir: str | Path, config: FitJobConfig | None = None,
            progress: bool = True) -> FitJobSummary:
    """Fit all inputs (files, folders, globs, videos) into ``out_dir``. See the module doc."""
    import torch
    from tqdm.auto import tqdm

    from portraitrig.io.sources import expand_inputs
    from portraitrig.pipeline import Rigger

    cfg = config or FitJobConfig()
    if cfg.format not in ("safetensors", "npz"):
        raise ValueError(f"format must be 'safetensors' or 'npz', not {cfg.format!r}")
    if cfg.workers < 1:
        raise ValueError(f"workers must be at least 1, got {cfg.workers}")
    if cfg.chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {cfg.chunk_frames}")
    shard = parse_shard(cfg.shard) if cfg.shard is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from portraitrig.io.atomic import clean_orphans

    clean_orphans(out)  # temporary files of writes a kill interrupted
    manifest = Manifest(out / MANIFEST, asdict(cfg), OUTPUT_SETTINGS)
    summary = FitJobSummary(out)
    out_resolved = out.resolve()

    def own_output(path: Path) -> bool:  # never fit the crops this job wrote (-o inside an input folder)
        return path.name.endswith(".crop.png") and path.resolve().parent == out_resolved

    inputs = [str(p) for p in inputs]
    bad: list[tuple[str, InputError]] = []
    try:  # expanded together, so that item ids are unique across inputs
        sources = expand_inputs(inputs, stride=cfg.stride, exclude=own_output)
    except InputError:  # an empty folder or a glob matching nothing: that input's error only
        good = []
        for inp in inputs:
            try:
                expand_inputs([inp], stride=cfg.stride, exclude=own_output)
                good.append(inp)
            except InputError as err:
                bad.append((inp, err))
        sources = expand_inputs(good, stride=cfg.stride, exclude=own_output) if good else []
    if shard is not None:
        sources = [s for s in sources if shard_of(s.path, shard[1]) == shard[0]]

    bar = tqdm(total=len(sources), unit="input", desc="fit", disable=not progress)
    record = _Record(manifest, summary, bar)
    for inp, err in bad:
        record.item(_error_item(Path(inp).name or inp, inp, err))
    try:
        units = _tasks(sources, cfg.album)
        if cfg.workers > 1 and len(units) > 1:
            _run_workers(sources, units, cfg, out, manifest, record)
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(FIT_THREADS)
            try:
                with Rigger(crop_size=cfg.crop_size, device=cfg.device, photometric=cfg.photometric) as rigger:
                    _Fitter(rigger, cfg, out, manifest, record).fit(sources)
            finally:
                torch.set_num_threads(threads)
    finally:  # the record is saved however the loop ends (Ctrl-C included)
        bar.close()
        manifest.save()
    return summary


__all__ = ["FitJobConfig", "FitJobSummary", "parse_shard", "run_fit", "shard_of"]
