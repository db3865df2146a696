"""Every registered method on its tiny preset, through the same entry points as the CLI: trains 2
steps on the CPU, resumes exactly, writes a model folder that loads back and renders the same,
renders the right shapes, and refuses another method's folder. A new method is tested by adding it
to the registry."""
import json
import subprocess
import sys

import pytest
import torch

from portraitrig.apps.trainjob import method_config, run_train
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.methods import METHODS, load_renderer
from portraitrig.training import checkpoint as ck


@pytest.fixture(scope="module", params=sorted(METHODS))
def trained(request, tmp_path_factory):
    name = request.param
    mod = METHODS[name].module()
    tmp = tmp_path_factory.mktemp(name)
    data = mod.tiny_data(tmp)
    cfg = method_config(name, "tiny")
    model = run_train(name, data, tmp / "a", cfg, device="cpu", progress=False)
    return name, mod, data, cfg, tmp, model


def test_tiny_preset_trains_and_writes_a_model_folder(trained):
    name, mod, _, cfg, tmp, model = trained
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()
    meta = json.loads((model / "config.json").read_text())
    assert meta["method"] == name and isinstance(meta["version"], int)
    run = json.loads((tmp / "a" / "run.json").read_text())
    assert run["method"] == name and run["config"]["train"]["steps"] == cfg.train.steps
    logs = (tmp / "a" / "log.jsonl").read_text().splitlines()
    assert len(logs) == cfg.train.steps and all(json.loads(line)["loss"] is not None for line in logs)


def test_resume_is_exact(trained):
    name, _, data, cfg, tmp, _ = trained
    run_train(name, data, tmp / "b", cfg, device="cpu", progress=False, stop_after=1)
    assert [p.name for p in ck.list_checkpoints(tmp / "b")] == ["ckpt-00000001.safetensors"]
    run_train(name, data, tmp / "b", cfg, device="cpu", progress=False)
    last = ck.checkpoint_path(tmp / "a", cfg.train.steps).name
    ta, _ = ck.load_checkpoint(tmp / "a" / last)
    tb, _ = ck.load_checkpoint(tmp / "b" / last)
    keys = [k for k in ta if k.startswith(("model.", "ema.", "optim."))]
    assert keys and all(torch.equal(ta[k], tb[k]) for k in keys)


def test_two_processes_train_as_one(trained, tmp_path):
    """`torchrun --nproc_per_node 2 -m portraitrig.cli train NAME ...` (DDP; gloo on a CPU) trains
    the tiny preset end to end: one model folder and log written by rank 0, a checkpoint that
    records 2 processes, and one process resumes it (reporting the change). Catches what DDP
    refuses that one process allows (a parameter no step uses)."""
    name, _, data, cfg, _, _ = trained
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "portraitrig.cli", "train", name, str(data), "-o", str(run), "--preset", "tiny", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (run / "model" / "model.safetensors").is_file()
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs] == list(range(1, cfg.train.steps + 1))
    last = ck.checkpoint_path(run, cfg.train.steps)
    _, meta = ck.load_checkpoint(last)
    assert meta["extra"]["world_size"] == 2
    more = cfg.train.steps + 1
    again = subprocess.run([sys.executable, "-m", "portraitrig.cli", "train", name, str(data), "-o", str(run),
                            "--preset", "tiny", "--device", "cpu", "--steps", str(more)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "GPUs 2 -> 1" in again.stdout + again.stderr and ck.checkpoint_path(run, more).is_file()


def test_save_load_round_trip_renders_the_same(trained):
    name, mod, _, _, tmp, model = trained
    r = load_renderer(model, device="cpu")
    assert isinstance(r, mod.Renderer) and r.method == name
    params = RigParams.neutral(r.face_model, 2)
    with torch.no_grad():
        a = r.render(params)
    assert a.shape == (2, 3, r.size, r.size) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and torch.isfinite(a).all()
    r.save_pretrained(tmp / "copy")
    r2 = mod.Renderer.from_pretrained(tmp / "copy", device="cpu")
    with torch.no_grad():
        b = r2.render(params)
    torch.testing.assert_close(a, b)


def test_another_methods_folder_is_refused(trained, tmp_path):
    name, mod, _, _, tmp, model = trained
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    meta = json.loads((model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**meta, "method": "not-" + name}))
    with pytest.raises(InputError, match="not-" + name):
        mod.Renderer.from_pretrained(other)
    with pytest.raises(InputError, match="unknown method"):
        load_renderer(other)
