"""`portraitrig eval` on hostile results folders: manifest paths stay inside RESULTS_DIR, bad
items are errors that name the file, the exit code says when items failed, no traceback."""
import json

import numpy as np
import pytest
from PIL import Image

from cli_run import run_cli as _run


def _img(path, size=16, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _results(d, items, **extra):
    d.mkdir(parents=True, exist_ok=True)
    _img(d / "gen.png")
    _img(d / "ref.png", value=7)
    (d / "manifest.json").write_text(json.dumps({"items": items, **extra}))
    return d


GOOD = {"id": "good", "generated": "gen.png", "reference": "ref.png"}
IMAGE = ["--kind", "image"]


def test_a_clean_folder_exits_0(tmp_path, capsys):
    d = _results(tmp_path / "r", [GOOD])
    code, out, _ = _run(["eval", str(d), *IMAGE], capsys)
    assert code == 0 and json.loads(out)["metrics"]["psnr"]["n"] == 1


@pytest.mark.parametrize("item, problem", [
    ({"generated": "../secret.png"}, "points outside the results folder"),
    ({"generated": "SECRET_ABS"}, "absolute path"),
    ({"generated": "gen.png", "reference": "../secret.png"}, "points outside the results folder"),
    ({"generated": "gen.png", "reference": "ref.png", "mask": "../secret.png"}, "points outside the results folder"),
    ({"generated": "gen.png", "requested_params": "/etc/passwd", "fitted_params": "x"}, "absolute path"),
    ({"generated": 5}, "is not a relative path"),
    ({"generated": "tiny.png"}, "1x1 px"),
    ({"generated": "gen.png", "reference": "missing.png"}, "missing.png"),
    ({"id": ["a"], "generated": "notes.png"}, "notes.png"),
    ("just text", "item 1 has no 'generated' path"),
])
def test_bad_items_are_reported_and_the_rest_evaluated(tmp_path, capsys, item, problem):
    secret = _img(tmp_path / "secret.png")
    if isinstance(item, dict) and item.get("generated") == "SECRET_ABS":
        item = {**item, "generated": str(secret)}
    d = _results(tmp_path / "r", [GOOD, item])
    _img(d / "tiny.png", size=1)
    (d / "notes.png").write_text("not an image")
    code, out, err = _run(["eval", str(d), *IMAGE, "-o", str(tmp_path / "o")], capsys)
    assert code == 1, err
    summary = json.loads(out)
    assert summary["n_items"] == 2 and summary["n_errors"] == 1 and summary["metrics"]["psnr"]["n"] == 1
    lines = err.splitlines()
    assert len(lines) == 1 and problem in lines[0], err
    assert "manifest.json" in lines[0] or "png" in lines[0]
    report = (tmp_path / "o" / "report.html").read_text()
    assert problem.split()[0] in report


def test_nothing_to_evaluate(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    code, _, err = _run(["eval", str(empty)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(empty) in err and "nothing to evaluate" in err
    code, _, err = _run(["eval", str(tmp_path / "missing")], capsys)
    assert code == 2 and "missing" in err
    all_bad = _results(tmp_path / "bad", [{"generated": "../x.png"}, {"generated": "tiny.png"}])
    _img(all_bad / "tiny.png", size=1)
    code, _, err = _run(["eval", str(all_bad), *IMAGE], capsys)
    assert code == 2 and "none of 2 item(s) could be evaluated" in err
    upstream = _results(tmp_path / "up", [GOOD, {"id": "x", "error": "no face"}])
    code, out, err = _run(["eval", str(upstream), *IMAGE], capsys)  # reported upstream: recorded only
    assert code == 0 and json.loads(out)["n_errors"] == 1 and err == ""


@pytest.mark.parametrize("manifest, problem", [
    (b"{not json", "not a results manifest"),
    (b'{"items": {"a": 1}}', "'items' must be a list"),
    (json.dumps({"items": [GOOD], "floor": {"a": "../a.safetensors", "b": "b.safetensors"}}).encode(),
     "points outside the results folder"),
])
def test_bad_manifests_are_one_line(tmp_path, capsys, manifest, problem):
    d = _results(tmp_path / "r", [])
    (d / "manifest.json").write_bytes(manifest)
    code, _, err = _run(["eval", str(d), *IMAGE], capsys)
    assert code == 2 and err.count("\n") == 1 and "manifest.json" in err and problem in err, err


def test_output_folder_that_cannot_be_made(tmp_path, capsys):
    d = _results(tmp_path / "r", [GOOD])
    code, _, err = _run(["eval", str(d), *IMAGE, "-o", "/proc/1/x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "/proc/1/x" in err


@pytest.mark.parametrize("flag, value", [("--max-frames", "0"), ("--max-frames", "-3"), ("--kind", "bogus")])
def test_bad_option_values(tmp_path, capsys, flag, value):
    d = _results(tmp_path / "r", [GOOD])
    code, _, err = _run(["eval", str(d), flag, value], capsys)
    lines = [ln for ln in err.splitlines() if not ln.startswith(("usage:", " "))]
    assert code == 2 and len(lines) == 1 and flag in lines[0], err
    assert not (d / "eval").exists()
