"""``portraitrig edit``: edit photos with any trained neural renderer (the model folder names its
method). Writes, per photo, the input crop, the reconstruction, the edit (and a light sweep), at
crop size and pasted back into the photo, each edit's rig parameters, a side-by-side sheet, and
``manifest.json`` in the results layout ``portraitrig eval`` reads (docs/eval.md). A photo that
cannot be used (no face, unreadable, a parameter file of another face model) is reported and the
others are edited. The original photo a parameter file records (for the paste-back) is read only
as an image, and the summary lists it.
"""
from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from portraitrig.editspec import EditSpec
from portraitrig.errors import InputError, printable
from portraitrig.io.atomic import clean_orphans, write_image, write_json
from portraitrig.io.safepath import safe_name


@dataclass
class EditJobConfig:
    steps: int = field(default=20, metadata={"help": "DDIM steps for inversion and for decoding (DiffusionRig)"})
    refine: int = field(default=0, metadata={"help": "fixed-point refinements per inversion step (closer "
                                                     "reconstruction, slower; DiffusionRig)"})
    inversion: bool = field(default=True, metadata={"help": "invert the photo (off: sample from --seed's noise)"})
    seed: int = field(default=0, metadata={"help": "noise seed without inversion"})
    light_sweep: int = field(default=0, metadata={"help": "also N light directions from left to right"})
    batch: int = field(default=16, metadata={"help": "largest GPU batch"})
    fast: bool = field(default=True, metadata={"help": "bf16 + compile + CUDA graphs on a GPU (off: plain fp32)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 (default: a GPU if there is one)"})

    def validate(self) -> None:
        if self.steps < 1 or self.steps > 1000:
            raise ValueError(f"steps must be in 1..1000, got {self.steps}")
        if not 0 <= self.refine <= 20 or not 0 <= self.light_sweep <= 64 or not 1 <= self.batch <= 1024:
            raise ValueError("refine must be in 0..20, light_sweep in 0..64, batch in 1..1024")


@dataclass
class EditJobSummary:
    out_dir: Path
    photos: int = 0
    edits: int = 0
    failed: list[str] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)  # photos read because a parameter file names them

    @property
    def exit_code(self) -> int:
        return 0 if not self.failed else (1 if self.photos else 2)

    def text(self) -> str:
        lines = [f"{self.photos} photo(s) x {self.edits} edit(s) written to {self.out_dir}; {len(self.failed)} failed"]
        lines += [f"  error: {m}" for m in self.failed[:20]]
        if self.originals:
            shown = ", ".join(printable(o) for o in self.originals[:3]) + (", ..." if len(self.originals) > 3 else "")
            lines.append(f"  read {len(self.originals)} original photo(s) named in parameter files: {shown}")
        return "\n".join(lines)


def build_edits(spec: EditSpec, renderer, light_sweep: int = 0) -> list:
    """The Edit list: the reconstruction, the spec's edit, and a light sweep if asked (each sweep
    item carries the spec's other edits too)."""
    from dataclasses import replace

    from portraitrig.edits import light_sweep_directions
    from portraitrig.neural.contract import Edit

    def fit(path):
        return renderer.subject(path).params

    appearance = None
    if spec.appearance:
        if not hasattr(renderer, "latent"):
            raise InputError(spec.appearance, f"the {renderer.method} renderer takes no other appearance")
        appearance = renderer.latent([renderer.subject(spec.appearance).crop_image])[0]
    edits = [Edit("reconstruction")]
    if spec.changes_rig or appearance is not None:
        edits.append(Edit("edit", spec.params_fn(renderer.face_model, fit), appearance))
    for k, (az, el) in enumerate(light_sweep_directions(light_sweep) if light_sweep else []):
        swept = replace(spec, light=f"{az:g},{el:g}")
        edits.append(Edit(f"light{k:02d}", swept.params_fn(renderer.face_model, fit), appearance))
    return edits


def load_editor(model_dir: str | Path, config: EditJobConfig | None = None):
    """The renderer ``run_edit`` uses for ``model_dir`` under ``config`` (device, batch, fast
    path): load it once to run many edits (the web app keeps one)."""
    import torch

    from portraitrig.methods import load_renderer

    cfg = config or EditJobConfig()
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_renderer(model_dir, device=device, max_batch=cfg.batch, fast=None if cfg.fast else False)


def run_edit(model_dir: str | Path, photos: Sequence, out_dir: str | Path, spec: EditSpec,
             config: EditJobConfig | None = None, renderer=None) -> EditJobSummary:
    """Edit ``photos`` (paths of photos or parameter files, or ``neural.contract.Subject``s
    already fitted) into ``out_dir``. ``renderer``: one from ``load_editor(model_dir, config)``
    (default: loaded here)."""
    from portraitrig.neural.contract import Subject, side_by_side

    cfg = config or EditJobConfig()
    renderer = renderer if renderer is not None else load_editor(model_dir, cfg)
    try:
        edits = build_edits(spec, renderer, cfg.light_sweep)
    except ValueError as exc:  # an edit the face model does not have (--control bogus=1)
        raise InputError(None, f"edit options: {exc}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_orphans(out)
    summary = EditJobSummary(out, edits=len(edits))
    subjects, failed = [], []

    def fail(source, message):
        failed.append({"source": printable(str(source)), "status": "error", "message": message})
        summary.failed.append(message)

    for photo in photos:  # a photo without a face is reported; the others are edited
        if isinstance(photo, Subject):
            subjects.append(photo)
            continue
        try:
            if Path(photo).suffix in (".safetensors", ".npz"):  # made for this renderer's face model?
                from portraitrig.face.params import RigParams

                RigParams.load(photo, model=renderer.face_model)
            subject = renderer.subject(photo)
        except InputError as err:
            fail(photo, str(err))
            continue
        subjects.append(subject)
        if subject.original is not None and Path(photo).suffix in (".safetensors", ".npz"):
            summary.originals.append(subject.source)
    accepted = inspect.signature(renderer.render_edits).parameters
    options = {k: v for k, v in {"steps": cfg.steps, "refine": cfg.refine, "inversion": cfg.inversion,
                                 "seed": cfg.seed}.items() if k in accepted}
    try:
        results = renderer.edit(subjects, edits, **options) if subjects else []
    except (InputError, RuntimeError, ValueError):
        if len(subjects) < 2:
            raise
        results = []  # one photo spoils the batch: edit them one by one and report that one
        for s in subjects:
            try:
                results += renderer.edit([s], edits, **options)
            except (InputError, RuntimeError, ValueError) as err:
                fail(s.source, str(err) if isinstance(err, InputError) else
                     printable(f"{s.source}: {err.__class__.__name__}: {err}"))
    photos_out, items, used = [], [], set()
    # the images are encoded in parallel (PIL lets go of the GIL): the manifest waits for them all
    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = []

        def put(name: str, image) -> str:
            writes.append(pool.submit(write_image, out / name, image))
            return name

        for res in results:
            stem = safe_name(Path(res.source.split("#", 1)[0]).stem, "photo")
            while stem in used:
                stem += "_"
            used.add(stem)
            # the input crop and its own parameters: the reference and the floor for `portraitrig eval`
            ref = put(f"{stem}.input.png", res.input_crop) if res.input_crop is not None else None
            ref_params = None
            files = {}
            first = len(items)
            for name, crop, full, params in zip(res.names, res.crops, res.pasted, res.params):
                files[name] = put(f"{stem}.{name}.png", crop)
                if full is not None:
                    put(f"{stem}.{name}.full.png", full)
                pfile = params.save(out / f"{stem}.{name}.safetensors").name
                if name == "reconstruction":
                    ref_params = pfile
                items.append({"id": f"{stem}.{name}", "source": res.source, "edit": name, "generated": files[name],
                              "reference": ref, "requested_params": pfile})
            for it in items[first:]:
                it["reference_params"] = ref_params
            put(f"{stem}.sheet.png", side_by_side(res))
            photos_out.append({"source": res.source, "stem": stem, "edits": files,
                               "pasted": all(f is not None for f in res.pasted)})
            summary.photos += 1
        for w in writes:
            w.result()
    # "items" follows portraitrig.eval's results layout: `portraitrig eval OUT --refit` scores it
    write_json(out / "manifest.json", {"tool": "portraitrig edit", "model": str(model_dir), "method": renderer.method,
                                       "edit": spec.text(), "steps": cfg.steps, "inversion": cfg.inversion,
                                       "photos": photos_out + failed, "items": items})
    return summary


__all__ = ["EditJobConfig", "EditJobSummary", "build_edits", "load_editor", "run_edit"]
