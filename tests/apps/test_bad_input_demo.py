"""`portraitrig demo` on bad input: bounded sizes, names that are not UTF-8, unusable photos and
output folders are one-line errors naming the file or option, no traceback."""
import os
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cli_run import run_cli as _run


@pytest.mark.parametrize("size, code", [("20000", 2), ("2049", 2), ("0", 2), ("31", 2), ("x", 2)])
def test_size_is_bounded(tmp_path, capsys, size, code):
    got, _, err = _run(["demo", "-o", str(tmp_path / "o"), "--size", size], capsys)
    errors = [ln for ln in err.splitlines() if not ln.startswith("usage:")]  # argparse adds a usage line
    assert got == code and len(errors) == 1 and "--size" in errors[0], err
    assert not any((tmp_path / "o").glob("*.png"))


def test_photo_named_in_bytes_that_are_not_utf8(tmp_path, capsys):
    name = os.fsdecode(bytes(tmp_path) + b"/portr\xe4t.png")
    Image.fromarray(data.astronaut()[::2, ::2]).save(name)
    out = tmp_path / "o"
    stale = out / ".sheet.png.tmp-abcd1234.png"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200,) * 2)
    code, said, _ = _run(["demo", name, "-o", str(out), "--size", "64"], capsys)
    assert code == 0 and (out / "sheet.png").is_file() and not stale.exists()
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "portr\\xe4t.png" in page


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "missing.jpg", "missing.jpg"),
    (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "notes.png"),
    (lambda d: (d / "empty.jpg").write_bytes(b"") is not None and d / "empty.jpg", "empty.jpg"),
    (lambda d: Image.new("RGB", (1, 1)).save(d / "dot.png") or d / "dot.png", "dot.png"),
    (lambda d: Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)).save(d / "noise.png")
     or d / "noise.png", "noise.png"),
    (lambda d: d, str),  # a folder, not a photo
])
def test_unusable_photos(tmp_path, capsys, make, problem):
    photo = make(tmp_path)
    code, _, err = _run(["demo", str(photo), "-o", str(tmp_path / "o"), "--size", "64"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert (str(photo) if problem is str else problem) in err


def test_output_folder_that_cannot_be_made(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in ("/proc/1/x", str(tmp_path / "file" / "o")):
        code, _, err = _run(["demo", "-o", out, "--size", "64"], capsys)
        assert code == 2 and err.count("\n") == 1 and out.rsplit("/", 1)[0] in err, err
