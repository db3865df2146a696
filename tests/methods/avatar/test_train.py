"""Tiny avatar training on a synthetic rendered head (loss falls, exact resume, model folder
round trip) and the render job end to end on the CPU."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from portraitrig.apps.avatarjob import AvatarJobConfig, drive, orbit_views, run_avatar
from portraitrig.config import to_dict
from portraitrig.errors import InputError
from portraitrig.methods import avatar
from portraitrig.neural.frames import Frames, synthetic_frames
from portraitrig.methods.avatar.method import AvatarMethod
from portraitrig.methods.avatar.renderer import MAX_YAW, AvatarRenderer
from portraitrig.training import checkpoint as ck
from portraitrig.training.loop import train


def _config(steps):
    cfg = avatar.PRESETS["tiny"]()
    cfg.train.steps = steps
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("avatar")
    data = avatar.tiny_data(d)
    cfg = _config(40)
    m = AvatarMethod.create(cfg, data, "cpu", say=None)
    model_dir = train(m, cfg.train, d / "run", config=to_dict(cfg), progress=False)
    log = [json.loads(line) for line in (d / "run" / "log.jsonl").read_text().splitlines()]
    return {"dir": d, "data": data, "model": model_dir, "log": log, "method": m}


def test_training_loss_falls(trained):
    losses = [r["loss"] for r in trained["log"] if "loss" in r]
    assert len(losses) >= 30
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8])


def test_holdout_split_and_frames_file(trained):
    fr = Frames.load(trained["data"])
    assert len(fr) == 8 and fr.split(0.2) == (list(range(6)), [6, 7])
    m = trained["method"]
    assert m.num_items() == 6 and len(m.held) == 2
    assert Frames(fr.images[:1], fr.masks[:1], fr.params[:1]).split(0.2) == ([0], [])


def test_frames_file_of_another_kind_is_refused(tmp_path):
    p = synthetic_frames(2, 16).params
    path = p.save(tmp_path / "params.safetensors")
    with pytest.raises(InputError, match="not an avatar frames file"):
        Frames.load(path)


def test_model_folder_round_trip_renders_the_same(trained):
    r = AvatarRenderer.from_pretrained(trained["model"])
    assert r.size == 32 and r.method == "avatar"
    fr = Frames.load(trained["data"])
    a = r.render(fr.params[6:8])
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    r.save_pretrained(trained["dir"] / "copy")
    b = AvatarRenderer.from_pretrained(trained["dir"] / "copy").render(fr.params[6:8])
    assert torch.allclose(a, b, atol=1e-6)
    rgba = r.render(fr.params[6:7], rgba=True, background="none")
    assert rgba.shape == (1, 4, 32, 32)
    # trained towards the person mask: more opacity on the person than off it
    mask = fr.masks[6].float() / 255
    alpha = rgba[0, 3]
    assert alpha[mask > 0.5].mean() > alpha[mask < 0.5].mean() + 0.1
    # the occupancy grid skips empty space without changing the picture much
    dense = r.render(fr.params[6:7], occupancy=False)
    assert (dense - a[:1]).abs().mean() < 0.02


def test_exact_resume(tmp_path):
    data = avatar.tiny_data(tmp_path)
    cfg = _config(3)
    torch.manual_seed(0)
    straight = train(AvatarMethod.create(cfg, data, "cpu", say=None), cfg.train, tmp_path / "a",
                     config=to_dict(cfg), progress=False)
    a_state = AvatarRenderer.from_pretrained(straight).model.state_dict()
    torch.manual_seed(0)
    train(AvatarMethod.create(cfg, data, "cpu", say=None), cfg.train, tmp_path / "b", config=to_dict(cfg),
          progress=False, stop_after=1)
    assert ck.list_checkpoints(tmp_path / "b")
    resumed = train(AvatarMethod.create(cfg, data, "cpu", say=None), cfg.train, tmp_path / "b",
                    config=to_dict(cfg), progress=False)
    b_state = AvatarRenderer.from_pretrained(resumed).model.state_dict()
    for k in a_state:
        assert torch.allclose(a_state[k].float(), b_state[k].float(), atol=1e-6), k


def test_job_writes_pngs_and_manifest(trained, tmp_path):
    out = tmp_path / "out"
    s = run_avatar(trained["model"], out, AvatarJobConfig(orbit=3, size=48), spec="smile=0.8", say=None)
    assert s.exit_code == 0 and len(s.written) == 3
    man = json.loads((out / "manifest.json").read_text())
    assert [it["id"] for it in man["items"]] == ["000000", "000001", "000002"]
    for it in man["items"]:
        assert np.asarray(Image.open(out / it["generated"])).shape == (48, 48, 3)
        assert (out / it["requested_params"]).is_file()
    views = [it["view"] for it in man["items"]]
    assert views[0] == [0.0, 0.0] and views[1][0] != 0


def test_job_rgba_and_clamped_view(trained, tmp_path):
    s = run_avatar(trained["model"], tmp_path / "o", AvatarJobConfig(yaw=150.0, rgba=True, compile=True),
                   spec="yaw=50", say=None)
    assert s.exit_code == 0
    img = np.asarray(Image.open(tmp_path / "o" / "frames" / "000000.png"))
    assert img.shape == (32, 32, 4)
    assert any("clamped" in n for n in s.notes)
    assert any("Gaussian avatars" in n for n in s.notes)   # --compile is the Gaussians' only: said
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["items"][0]["view"] == [MAX_YAW, 0.0]


def test_job_refuses_another_methods_folder(trained, tmp_path):
    from portraitrig.neural.modelio import write_model_folder

    other = write_model_folder(tmp_path / "other", "diffusion", 1, {}, torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="not an avatar"):
        run_avatar(other, tmp_path / "o", say=None)


def test_drive_relative_and_absolute():
    fr = synthetic_frames(4, 16)
    ref, drv = fr.params[0:1], fr.params[1:4]
    rel = drive(ref, drv, relative=True)
    assert torch.allclose(rel.expression[0], ref.expression[0])          # the driver's first frame: no change
    assert torch.allclose(rel.expression[2] - rel.expression[0], drv.expression[2] - drv.expression[0], atol=1e-6)
    assert torch.allclose(rel.rotation[0], ref.rotation[0], atol=1e-5)
    ab = drive(ref, drv, relative=False)
    assert torch.equal(ab.expression, drv.expression) and torch.equal(ab.identity, ref.identity.expand(3, -1))


def test_orbit_views_reach_the_requested_turns():
    v = np.array(orbit_views(8, 30, 15))
    assert v[0].tolist() == [0.0, 0.0]
    assert v[:, 0].max() == pytest.approx(30) and v[:, 0].min() == pytest.approx(-30)
    assert np.abs(v[:, 1]).max() == pytest.approx(15)


def test_run_train_through_the_registry(tmp_path, monkeypatch):
    from portraitrig import methods
    from portraitrig.apps.trainjob import run_train

    monkeypatch.setitem(methods.METHODS, "avatar", methods.MethodSpec("avatar", "portraitrig.methods.avatar", "avatar"))
    cfg = avatar.PRESETS["tiny"]()
    model = run_train("avatar", avatar.tiny_data(tmp_path), tmp_path / "run", cfg, device="cpu", progress=False)
    r = methods.load_renderer(model)
    assert isinstance(r, AvatarRenderer)
    assert r.render(Frames.load(tmp_path / "avatar_frames.safetensors").params[:1]).shape == (1, 3, 32, 32)


def test_job_writes_an_mp4(trained, tmp_path):
    pytest.importorskip("av")
    s = run_avatar(trained["model"], tmp_path / "v", AvatarJobConfig(orbit=4, video=True), say=None)
    assert s.exit_code == 0 and (tmp_path / "v" / "avatar.mp4").stat().st_size > 0
    man = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert man["items"] == [{"id": "avatar", "generated": "avatar.mp4"}]


def test_sample_picture_and_missing_video(trained, tmp_path):
    m = trained["method"]
    pic = m.samples(m.model, 0)
    assert pic.shape == (32, 64, 3) and 0 <= pic.min() and pic.max() <= 1   # [render | held-out frame]
    with pytest.raises(InputError, match="no such video"):
        AvatarMethod.create(avatar.PRESETS["tiny"](), tmp_path / "nope.mp4", "cpu", say=None)
