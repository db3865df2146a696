"""`portraitrig fit` and `portraitrig prepare` on bad input, through the CLI: one-line errors
naming the file or option, outputs only inside -o, the tool's own outputs never taken as
inputs, no traceback."""
import json
import os
import time

import pytest
from PIL import Image
from skimage import data

from portraitrig.cli import main
from portraitrig.face.params import RigParams
from cli_run import run_cli as _run, error_line as _error


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A photo folder and its `fit --save-crops` folder (one MediaPipe fit for the module)."""
    d = tmp_path_factory.mktemp("fit_in")
    Image.fromarray(data.astronaut()[::2, ::2]).save(d / "astronaut.png")
    fit = d / "fit"
    assert main(["fit", str(d / "astronaut.png"), "-o", str(fit), "--save-crops", "-q", "--no-photometric"]) == 0
    return d, fit


@pytest.mark.parametrize("cmd, flag, value", [
    ("fit", "--stride", "0"), ("fit", "--size", "0"), ("fit", "--max-frames", "0"), ("fit", "--smooth", "nan"),
    ("prepare", "--size", "0"), ("prepare", "--stride", "0"), ("prepare", "--quality", "0"),
    ("prepare", "--max-frames", "x"),
])
def test_bad_option_values(tmp_path, capsys, cmd, flag, value):
    code, _, err = _run([cmd, "photo.jpg", "-o", str(tmp_path / "o"), flag, value], capsys)
    assert code == 2 and flag in _error(err)
    assert not (tmp_path / "o").exists()


def test_output_folders_that_cannot_be_made(fitted, tmp_path, capsys):
    d, fit = fitted
    (tmp_path / "file").write_text("x")
    for out in ("/proc/1/x", str(tmp_path / "file" / "o")):
        code, _, err = _run(["fit", str(tmp_path / "missing.jpg"), "-o", out, "-q"], capsys)
        assert code == 2 and out.rsplit("/", 1)[0] in _error(err)
        code, _, err = _run(["prepare", str(fit), "-o", out + "/c.safetensors", "--size", "32"], capsys)
        assert code == 2 and out.rsplit("/", 1)[0] in _error(err)


def test_fit_never_ingests_its_own_crops(fitted, tmp_path, capsys):
    d, _ = fitted
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.png").write_bytes((d / "astronaut.png").read_bytes())
    for _ in range(2):
        code, _, _ = _run(["fit", str(photos), "-o", str(photos), "--save-crops", "-q", "--no-photometric"], capsys)
    items = json.loads((photos / "manifest.json").read_text())["items"]
    assert code == 0 and [it["id"] for it in items] == ["astronaut"]


def test_fit_a_file_name_that_is_not_utf8(fitted, tmp_path, capsys):
    d, _ = fitted
    name = os.fsdecode(bytes(tmp_path) + b"/astro\xe9.png")
    with open(name, "wb") as f:
        f.write((d / "astronaut.png").read_bytes())
    out = tmp_path / "o"
    code, said, err = _run(["fit", name, "-o", str(out), "-q", "--no-photometric"], capsys)
    assert code == 0, said + err
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert items[0]["status"] == "ok" and "astro\\xe9.png" in items[0]["source"]


def test_fit_cleans_orphans(fitted, tmp_path, capsys):
    d, _ = fitted
    out = tmp_path / "o"
    out.mkdir()
    orphan = out / ".astronaut.safetensors.tmp-abcd1234.safetensors"
    orphan.write_bytes(b"half")
    os.utime(orphan, (time.time() - 7200,) * 2)
    code, _, _ = _run(["fit", str(d / "astronaut.png"), "-o", str(out), "-q", "--no-photometric"], capsys)
    assert code == 0 and not orphan.exists()


def _copy_fit(fit, dst, edit_item=None, params=None):
    dst.mkdir()
    for p in fit.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    m = json.loads((dst / "manifest.json").read_text())
    if edit_item:
        edit_item(m["items"][0])
    (dst / "manifest.json").write_text(json.dumps(m))
    if params:
        params(dst / m["items"][0]["params"])
    return dst


def _nan(path):
    p, extras, meta = RigParams.load(path, with_extras=True)
    p.expression[0, 0] = float("nan")
    p.save(path, extras=extras, meta=meta)


@pytest.mark.parametrize("name, edit_item, params, problem", [
    ("nan", None, _nan, "non-finite"),
    ("garbage", None, lambda p: p.write_bytes(b"\0" * 16), "cannot read"),
    pytest.param("outside", lambda it: it.update(params="../../fit_in0/fit/astronaut.safetensors"), None, "outside"),
    pytest.param("absolute", lambda it: it.update(crop="/etc/passwd"), None, "outside"),
    pytest.param("no_params", lambda it: it.pop("params"), None, "params"),
])
def test_prepare_from_hostile_fit_folders(fitted, tmp_path, capsys, name, edit_item, params, problem):
    _, fit = fitted
    bad = _copy_fit(fit, tmp_path / name, edit_item, params)
    code, _, err = _run(["prepare", str(bad), "-o", str(tmp_path / "c.safetensors"), "--size", "32"], capsys)
    line = _error(err)
    assert code == 2 and str(bad) in line and problem in line, line


def test_prepare_an_unreadable_manifest(fitted, tmp_path, capsys):
    _, fit = fitted
    bad = _copy_fit(fit, tmp_path / "bad")
    (bad / "manifest.json").write_text("{x")
    code, _, err = _run(["prepare", str(bad), "-o", str(tmp_path / "c.safetensors"), "--size", "32"], capsys)
    assert code == 2 and "manifest.json" in _error(err)
