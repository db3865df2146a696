"""`portraitrig edit` on bad input: options, hostile model folders and parameter files are
one-line errors naming the option or file; a bad photo never stops the others; no traceback."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from cli_run import run_cli as _run, error_line as _error


def _fit_file(path, params, photo=None):
    """A parameter file with its ``.crop.png`` beside it, as `portraitrig fit --save-crops` writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params.sources = [str(photo)] if photo else []
    extras = {"crop_affine": np.array([[1.0, 0, 0], [0, 1.0, 0]]), "image_size": np.array([32, 32])}
    params.save(path, extras=extras)
    stem = path.name[: -len(path.suffix)]
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(path.with_name(stem + ".crop.png"))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from portraitrig.methods.diffusionrig.config import preset
    from portraitrig.methods.diffusionrig.model import DiffusionRigModel

    d = tmp_path_factory.mktemp("edit_in")
    model = DiffusionRigModel(preset("tiny")).save_pretrained(d / "model")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(d / "photo.png")
    good = RigParams.neutral(load_default_model())
    good.crop_size = 32
    return d, model, _fit_file(d / "good.safetensors", good, d / "photo.png")


def _edit(files, out, *photos, extra=()):
    d, model, good = files
    return ["edit", str(model), *(map(str, photos or [good])), "-o", str(out), "--device", "cpu", "--steps", "1",
            "--no-fast", *extra]


@pytest.mark.parametrize("extra, flag", [
    (["--steps", "0"], "steps"), (["--steps", "100000"], "steps"), (["--control", "bogus=1"], "bogus"),
    (["--control", "smile"], "--control"), (["--smile", "nan"], "smile"), (["--light-sweep", "1000"], "light_sweep"),
    (["--batch", "0"], "batch"), (["--yaw", "x"], "yaw"), (["--edit", "smile=="], "smile"),
    (["--light", "nowhere.hdr"], "nowhere.hdr"), (["--appearance-from", "missing.png"], "missing.png"),
])
def test_bad_option_values(files, tmp_path, capsys, extra, flag):
    code, _, err = _run(_edit(files, tmp_path / "o", extra=extra), capsys)
    line = _error(err)
    assert code == 2 and flag in line, line


def _model_copy(src, dst, config=None, weights=None):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if config:
        config(cfg["config"])
    (dst / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(src / "model.safetensors"))
    if weights:
        k = sorted(k for k, v in w.items() if v.is_floating_point() and v.ndim > 1)[0]
        w[k] = weights(w[k])
    save_file(w, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("name, config, weights", [
    ("huge", lambda c: c["unet"].update(base_channels=4096), None),
    ("unknown_key", lambda c: c.update(bogus=1), None),
    ("wrong_shape", None, lambda t: t[:1]),
    ("not_json", "x", None),
    ("missing", None, None),
])
def test_hostile_model_folders(files, tmp_path, capsys, name, config, weights):
    _, model, good = files
    if name == "missing":
        bad = tmp_path / "missing"
    elif config == "x":
        bad = _model_copy(model, tmp_path / name)
        (bad / "config.json").write_text("{x")
    else:
        bad = _model_copy(model, tmp_path / name, config, weights)
    args = _edit(files, tmp_path / "o")
    args[1] = str(bad)
    code, _, err = _run(args, capsys)
    line = _error(err)
    assert code == 2 and str(bad) in line, line


def _bad_params(d, photo):
    m = load_default_model()
    nan = RigParams.neutral(m)
    nan.expression[0, 0] = float("inf")
    other = RigParams.neutral(m)
    other.expression = torch.zeros(1, 2)
    cases = {"nan": _fit_file(d / "nan.safetensors", nan, photo),
             "other": _fit_file(d / "other.safetensors", other, photo),
             "nocrop": _fit_file(d / "nocrop.safetensors", RigParams.neutral(m), photo)}
    (d / "nocrop.crop.png").unlink()
    (d / "garbage.safetensors").write_bytes(b"\0" * 32)
    cases["garbage"] = d / "garbage.safetensors"
    cases["missing"] = d / "missing.png"
    (d / "notes.png").write_text("not an image")
    cases["notes"] = d / "notes.png"
    return cases


def test_bad_photos_are_item_errors_and_the_rest_is_edited(files, tmp_path, capsys):
    d, model, good = files
    cases = _bad_params(tmp_path / "in", d / "photo.png")
    out = tmp_path / "o"
    code, said, err = _run(_edit(files, out, good, *cases.values(), extra=["--smile", "1"]), capsys)
    assert code == 1 and f"1 photo(s) x 2 edit(s) written to {out}; {len(cases)} failed" in said, said + err
    errors = [ln for ln in said.splitlines() if ln.startswith("  error:")]
    for name, path in cases.items():
        assert any(str(path) in ln for ln in errors), (name, said)
    assert (out / "photo.edit.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len([p for p in manifest["photos"] if p.get("status") == "error"]) == len(cases)
    assert f"original photo(s) named in parameter files: {d / 'photo.png'}" in said


def test_all_photos_bad_and_output_problems(files, tmp_path, capsys):
    d, _, _ = files
    code, said, _ = _run(_edit(files, tmp_path / "o", d / "missing.png"), capsys)
    assert code == 2 and "missing.png" in said
    code, _, err = _run(_edit(files, "/proc/1/x"), capsys)
    assert code == 2 and "/proc/1/x" in _error(err)


def test_names_that_are_not_utf8_and_orphans(files, tmp_path, capsys):
    d, _, good = files
    name = os.fsdecode(bytes(tmp_path) + b"/s\xe9ance.safetensors")
    p = RigParams.neutral(load_default_model())
    p.crop_size = 32
    _fit_file(Path(name), p)
    out = tmp_path / "o"
    out.mkdir()
    orphan = out / ".photo.edit.png.tmp-abcd1234.png"
    orphan.write_bytes(b"half")
    os.utime(orphan, (time.time() - 7200,) * 2)
    code, said, _ = _run(_edit(files, out, name, good), capsys)
    assert not orphan.exists()
    # safetensors cannot open a path that is not UTF-8: that photo is an error naming it, shown as \xe9
    assert code == 1 and "s\\xe9ance.safetensors" in said, said
    photos = json.loads((out / "manifest.json").read_text())["photos"]
    assert [p.get("stem") for p in photos] == ["photo", None] and "s\\xe9ance" in photos[1]["source"]
