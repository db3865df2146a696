"""`portraitrig render` on hostile inputs: ids and paths from files stay inside -o, bad items
are one-line errors that name the file, the rest of the batch is rendered, no traceback."""
import json
import os
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from cli_run import run_cli as _run

AFFINE = np.array([[2 / 3, 0, 0], [0, 2 / 3, 0]])  # a 96 px photo -> a 64 px crop


def _tree(root):
    return {p for p in root.rglob("*")}


def _outside(root, before, out):
    """Paths made under ``root`` since ``before`` that are neither ``out`` (or its parents) nor in it."""
    return {p for p in _tree(root) - before if out not in p.parents and p != out and p not in out.parents}


def _params(path, photo, **meta):
    """A neutral parameter file for the shipped model whose source is ``photo``."""
    p = RigParams.neutral(load_default_model())
    p.crop_size, p.sources = 64, [str(photo)]
    p.save(path, extras={"crop_affine": AFFINE})
    if meta:  # rewrite the metadata as given
        from safetensors.torch import load_file, save_file

        md = {**p.metadata(), **meta}
        save_file(load_file(str(path)), str(path), metadata={k: v for k, v in md.items() if v is not None})
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("render_in")
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(d / "photo.png")
    _params(d / "good.safetensors", d / "photo.png")
    return d


def _fit_folder(d, items, base):
    d.mkdir(parents=True, exist_ok=True)
    (d / "good.safetensors").write_bytes((base / "good.safetensors").read_bytes())
    (d / "manifest.json").write_text(json.dumps({"items": items}))
    return d


def _ok(id_, params="good.safetensors", **kw):
    return {"id": id_, "status": "ok", "params": params, **kw}


def test_ids_from_a_manifest_stay_inside_out(base, tmp_path, capsys):
    fit = _fit_folder(tmp_path / "in" / "fit", [_ok("../../pwned"), _ok(str(tmp_path / "abs")), _ok("good"),
                                                _ok("GOOD"), _ok(""), _ok(["x"]), _ok("con"), _ok("a/../../b")], base)
    out = tmp_path / "out" / "o"
    before = _tree(tmp_path)
    code, said, _ = _run(["render", str(fit), "-o", str(out), "-q", "--no-sheet", "--buffers", "mask"], capsys)
    assert code == 0, said
    assert "8 rendered, 0 failed" in said
    assert _outside(tmp_path, before, out) == set()
    dirs = sorted(p.name for p in out.iterdir())
    assert len(dirs) == 8 and {"good", "GOOD_2", "good_3"} < set(dirs)  # equal up to case: not overwritten
    assert all((out / d / "overlay.png").is_file() for d in dirs)


@pytest.mark.parametrize("item, problem", [
    (_ok("x", params="../outside.safetensors"), "outside the results folder"),
    (_ok("x", params=None), "not a relative path"),
    (_ok("x", params="/etc/passwd"), "absolute path"),
    (_ok("x", crop="../../photo.png"), "outside the results folder"),
    ("not an object", "item 1 is not an object"),
])
def test_manifest_paths_are_confined(base, tmp_path, capsys, item, problem):
    (tmp_path / "outside.safetensors").write_bytes((base / "good.safetensors").read_bytes())
    fit = _fit_folder(tmp_path / "fit", [_ok("good"), item], base)
    out = tmp_path / "out"
    code, said, _ = _run(["render", str(fit), "-o", str(out), "-q", "--no-sheet", "--buffers", "mask"], capsys)
    assert code == 1 and "1 rendered, 1 failed" in said
    err = [ln for ln in said.splitlines() if "error:" in ln]
    assert len(err) == 1 and "manifest.json" in err[0] and problem in err[0], said
    assert (out / "good" / "overlay.png").is_file()


def test_unreadable_manifest_is_one_error_and_the_batch_goes_on(base, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_bytes(b"{not json\xff")
    lst = tmp_path / "lst"
    lst.mkdir()
    (lst / "manifest.json").write_text('{"items": {"a": 1}}')
    code, said, _ = _run(["render", str(bad), str(lst), str(base / "good.safetensors"), "-o", str(tmp_path / "o"),
                          "-q", "--no-sheet", "--buffers", "mask"], capsys)
    assert code == 1 and "1 rendered, 2 failed" in said
    assert f"{bad / 'manifest.json'}: unreadable manifest" in said and "'items' must be a list" in said


def _bad_files(d, base):
    photo = base / "photo.png"
    nan = RigParams.neutral(load_default_model())
    nan.expression[0, 0] = float("nan")
    nan.crop_size, nan.sources = 64, [str(photo)]
    nan.save(d / "nan.safetensors", extras={"crop_affine": AFFINE})
    other = RigParams.neutral(load_default_model())
    other.identity = torch.zeros(1, 3)
    other.sources = [str(photo)]
    other.save(d / "other_model.safetensors", extras={"crop_affine": AFFINE})
    (d / "garbage.safetensors").write_bytes(b"\x00" * 40)
    (d / "notes.txt").write_text("not an image")
    return {
        "nan": ("non-finite values in expression", None),
        "other_model": ("identity has 3 coefficients", None),
        "garbage": ("cannot read", None),
        "badsources": ("malformed metadata", _params(d / "badsources.safetensors", photo, sources="[1,")),
        "nosources": ("sources must be a list", _params(d / "nosources.safetensors", photo, sources='"x"')),
        "nomodel": ("names no face model", _params(d / "nomodel.safetensors", photo, model=None)),
        "bigcrop": ("outside 1..", _params(d / "bigcrop.safetensors", photo, crop_size="99999")),
        "hugecrop": ("over 4096 px", _params(d / "hugecrop.safetensors", photo, crop_size="8192")),
        "version": ("format version", _params(d / "version.safetensors", photo, format_version="99")),
        "textsource": ("notes.txt", _params(d / "textsource.safetensors", d / "notes.txt")),
        "nosource": ("nosource.safetensors", _params(d / "nosource.safetensors", photo, sources="[]")),
    }


def test_bad_parameter_files_are_item_errors(base, tmp_path, capsys):
    d = tmp_path / "p"
    d.mkdir()
    cases = _bad_files(d, base)
    files = [str(d / f"{k}.safetensors") for k in cases] + [str(base / "good.safetensors")]
    out = tmp_path / "o"
    code, said, _ = _run(["render", *files, "-o", str(out), "-q", "--buffers", "mask"], capsys)
    assert code == 1 and f"1 rendered, {len(cases)} failed" in said, said
    errors = [ln for ln in said.splitlines() if ln.startswith("  error:")]
    for name, (problem, _) in cases.items():
        line = [ln for ln in errors if f"{name}.safetensors" in ln or (name == "textsource" and "notes.txt" in ln)]
        assert line and problem in line[0], (name, said)
    assert (out / "good" / "overlay.png").is_file() and (out / "contact_sheet.png").is_file()
    assert f"original photo(s) named in parameter files: {base / 'photo.png'}" in said


def test_out_is_the_input_folder(tmp_path, capsys):
    """`render DIR -o DIR` again: its contact sheet and item folders (faces too) are never inputs."""
    from skimage import data

    d = tmp_path / "photos"
    (d / "astronaut").mkdir(parents=True)
    face = Image.fromarray(data.astronaut()[::2, ::2])
    for name in ("astronaut.png", "contact_sheet.png", "contact_sheet_2.png", "astronaut/overlay.png"):
        face.save(d / name)  # as an earlier run left them
    code, said, _ = _run(["render", str(d), str(d / "*.png"), "-o", str(d), "-q", "--buffers", "mask"], capsys)
    assert code == 0 and "1 rendered, 0 failed" in said, said
    assert sorted(p.name for p in d.iterdir()) == ["astronaut", "astronaut.png", "contact_sheet.png",
                                                   "contact_sheet_2.png"]


def test_output_folder_problems(base, tmp_path, capsys):
    code, _, err = _run(["render", str(base / "good.safetensors"), "-o", "/proc/1/x", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "/proc/1/x" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["render", str(base / "good.safetensors"), "-o", str(blocker / "o"), "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and str(blocker) in err
    for flag, value in (("--buffers", "bogus"), ("--buffers", ""), ("--size", "20000")):
        code, _, err = _run(["render", str(base / "good.safetensors"), "-o", str(tmp_path / "o"), flag, value],
                            capsys)
        assert code == 2 and err.count("\n") == 1 and flag in err and value in err, err
        assert not (tmp_path / "o").exists()


def test_orphan_temp_files_are_cleaned(base, tmp_path, capsys):
    out = tmp_path / "o"
    (out / "good").mkdir(parents=True)
    orphans = [out / ".contact_sheet.png.tmp-abcd1234.png", out / "good" / ".mask.png.tmp-zzzz0000.png"]
    for o in orphans:
        o.write_bytes(b"half")
        old = time.time() - 7200
        os.utime(o, (old, old))
    keep = out / ".notes.txt"
    keep.write_text("mine")
    code, _, _ = _run(["render", str(base / "good.safetensors"), "-o", str(out), "-q", "--buffers", "mask"], capsys)
    assert code == 0 and not any(o.exists() for o in orphans) and keep.exists()


_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["..", "../..", "/", "/tmp/x", "a/../../b", "~", "\x00",
                                                          "con.png", "." * 300, "x" * 300, "\\..\\x", "C:\\x"]))
_ANY = st.one_of(_TEXT, st.none(), st.integers(), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(_ANY, min_size=1, max_size=3), params=_ANY, crop=_ANY, source=_TEXT,
       crop_size=st.one_of(st.text(max_size=6), st.sampled_from(["64", "0", "-1", "1e9", "nan"])))
def test_fuzz_manifests_never_write_outside_or_crash(base, tmp_path_factory, capsys, ids, params, crop, source,
                                                    crop_size):
    root = tmp_path_factory.mktemp("fuzz")
    fit = root / "in" / "fit"
    fit.mkdir(parents=True)
    try:
        _params(fit / "meta.safetensors", base / "photo.png", sources=json.dumps([source]), crop_size=crop_size)
    except UnicodeEncodeError:  # safetensors cannot store lone surrogates in its header
        _params(fit / "meta.safetensors", base / "photo.png", crop_size=crop_size)
    items = [_ok(i) for i in ids] + [_ok("p", params=params, crop=crop), _ok("m", params="meta.safetensors")]
    _fit_folder(fit, items, base)
    out = root / "out" / "o"
    before = _tree(root)
    code, said, _ = _run(["render", str(fit), "-o", str(out), "-q", "--no-sheet", "--buffers", "mask"], capsys)
    assert code in (0, 1)
    assert _outside(root, before, out) == set()
    assert said.startswith(f"{len(ids)}") or "rendered" in said
