"""`portraitrig train` on bad input: options, configs, caches and --init model folders are
refused in one line naming the option or file, before anything large is allocated."""
import json
import os
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from portraitrig.methods.diffusionrig import tiny_data
from cli_run import run_cli as _run, error_line as _error


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from portraitrig.methods.diffusionrig.config import preset
    from portraitrig.methods.diffusionrig.model import DiffusionRigModel

    d = tmp_path_factory.mktemp("train_in")
    data = tiny_data(d)
    model = DiffusionRigModel(preset("tiny")).save_pretrained(d / "model")
    return d, data, model


def _train(files, out, *extra):
    d, data, _ = files
    return ["train", "diffusion", str(data), "-o", str(out), "--preset", "tiny", "--device", "cpu", "-q",
            "--steps", "1", "--sample-every", "0", *extra]


@pytest.mark.parametrize("flag, value", [
    ("--batch-size", "0"), ("--ckpt-every", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--light-augment", "2"),
    ("--steps", "0"), ("--log-every", "0"), ("--keep", "0"), ("--time-limit", "-1"), ("--ema-decay", "2"),
    ("--grad-clip", "nan"), ("--warmup-steps", "-1"), ("--precision", "bogus"), ("--schedule", "bogus"),
    ("--sample-steps", "0"), ("--stage", "3"), ("--batch-size", "x"),
])
def test_bad_option_values(files, tmp_path, capsys, flag, value):
    code, _, err = _run(_train(files, tmp_path / "run", flag, value), capsys)
    line = _error(err)
    assert code == 2 and (flag in line or flag[2:].replace("-", "_") in line), line
    assert not (tmp_path / "run").exists()


def _config(d, name, obj):
    (d / name).write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return d / name


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "bogus", "no such config file"),
    (lambda d: _config(d, "unknown.json", {"bogus": 1}), "unknown setting"),
    (lambda d: _config(d, "huge.json", {"model": {"unet": {"base_channels": 4096}}}), "unet channels"),
    (lambda d: _config(d, "notjson.json", "{x"), "cannot read config"),
    (lambda d: _config(d, "list.json", [1, 2]), "one JSON object"),
    (lambda d: _config(d, "other.json", {"method": "avatar", "config": {}}), "not a 'diffusion' one"),
])
def test_bad_config_files(files, tmp_path, capsys, make, problem):
    path = make(tmp_path)
    code, _, err = _run(_train(files, tmp_path / "run", "--config", str(path)), capsys)
    line = _error(err)
    assert code == 2 and str(path) in line and problem in line, line


def _cache(src, dst, tensors=None, meta=None):
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        md = dict(f.metadata())
    arrays = load_file(str(src))
    arrays.update(tensors or {})
    md.update(meta or {})
    save_file({k: v for k, v in arrays.items() if v is not None}, str(dst),
              metadata={k: v for k, v in md.items() if v is not None})
    return dst


def _bad_caches(data, d):
    a = load_file(str(data))
    n = a["offsets"].numel() - 1
    nan = a["params.expression"].clone()
    nan[0, 0] = float("nan")
    return {
        "offsets_past_end": _cache(data, d / "o1.safetensors", {"offsets": a["offsets"] + 10}),
        "offsets_short": _cache(data, d / "o2.safetensors", {"offsets": a["offsets"][:-1]}),
        "offsets_decreasing": _cache(data, d / "o3.safetensors", {"offsets": a["offsets"].flip(0)}),
        "group_out_of_range": _cache(data, d / "g.safetensors", {"group": torch.full((n,), 99)}),
        "nan_params": _cache(data, d / "nan.safetensors", {"params.expression": nan}),
        "no_jpeg": _cache(data, d / "nj.safetensors", {"jpeg": None}),
        "bad_ids": _cache(data, d / "ids.safetensors", meta={"ids": "[1,"}),
        "no_groups": _cache(data, d / "ng.safetensors", meta={"groups": None}),
        "garbage": (d / "garbage.safetensors").write_bytes(b"\0" * 64) and d / "garbage.safetensors",
        "missing": d / "missing.safetensors",
    }


def test_damaged_caches_name_the_file(files, tmp_path, capsys):
    d, data, _ = files
    for name, path in _bad_caches(data, tmp_path).items():
        args = _train(files, tmp_path / "run")
        args[2] = str(path)
        code, _, err = _run(args, capsys)
        line = _error(err)
        assert code == 2 and str(path) in line, (name, line)


def _model_copy(src, dst, config=None, weights=None):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if config:
        config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(src / "model.safetensors"))
    if weights:
        weights(w)
    save_file(w, str(dst / "model.safetensors"))
    return dst


def _set(path, value):
    def edit(cfg):
        node = cfg["config"]
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


def _first(w, fn):
    k = sorted(k for k, v in w.items() if v.is_floating_point() and v.ndim > 1)[0]
    w[k] = fn(w[k])


@pytest.mark.parametrize("name, config, weights", [
    ("huge", _set(("unet", "base_channels"), 4096), None),
    ("unknown_key", _set(("bogus",), 1), None),
    ("wrong_shape", None, lambda w: _first(w, lambda t: t[:1])),
    ("other_method", lambda c: c.update(method="nope"), None),
])
def test_hostile_init_model_folders(files, tmp_path, capsys, name, config, weights):
    _, _, model = files
    bad = _model_copy(model, tmp_path / name, config, weights)
    code, _, err = _run(_train(files, tmp_path / "run", "--init", str(bad)), capsys)
    line = _error(err)
    assert code == 2 and str(bad) in line, line


def test_nan_init_weights_are_refused_naming_the_init_folder(files, tmp_path, capsys):
    _, _, model = files
    bad = _model_copy(model, tmp_path / "nan", None, lambda w: _first(w, lambda t: t * float("nan")))
    code, _, err = _run(_train(files, tmp_path / "run", "--init", str(bad)), capsys)
    line = _error(err)
    assert code == 2 and "non-finite" in line and str(bad) in line, line
    assert not list((tmp_path / "run").rglob("*.safetensors"))


def test_output_folder_problems_and_orphans(files, tmp_path, capsys):
    code, _, err = _run(_train(files, "/proc/1/x"), capsys)
    assert code == 2 and "/proc/1/x" in _error(err)
    (tmp_path / "file").write_text("x")
    code, _, err = _run(_train(files, tmp_path / "file" / "run"), capsys)
    assert code == 2 and str(tmp_path / "file") in _error(err)
    run = tmp_path / "run"
    run.mkdir()
    orphan = run / ".run.json.tmp-abcd1234.json"
    orphan.write_text("{")
    os.utime(orphan, (time.time() - 7200,) * 2)
    code, out, _ = _run(_train(files, run), capsys)
    assert code == 0 and (run / "model" / "model.safetensors").is_file() and not orphan.exists()
