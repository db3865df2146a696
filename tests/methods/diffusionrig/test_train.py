"""DiffusionRig training: data cache, loss falls, exact resume, frozen encoder in stage 2."""
import json

import numpy as np
import pytest
import torch

from portraitrig.training import checkpoint as ck
from portraitrig.methods.diffusionrig.config import preset
from portraitrig.neural.cache import FaceCache, build_cache, group_of
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams

from synth_data import S, _cfg, cache, synth_buffers, train  # noqa: F401  (cache is a fixture)


def test_cache_round_trip_and_selection(cache, tmp_path):
    assert group_of("/a/b/clip0.mp4#frame=3") == "clip0" and group_of("/a/p.jpg") == "p"
    cache.save(tmp_path / "c.safetensors")
    c = FaceCache.load(tmp_path / "c.safetensors")
    assert len(c) == 8 and c.groups == ["clip0", "clip1"] and c.size == S
    assert np.abs(c.image(3).astype(int) - cache.image(3).astype(int)).max() == 0
    assert torch.equal(c.params.light, cache.params.light) and c.sources == cache.sources
    assert c.images().shape == (8, 3, S, S) and c.images().dtype == torch.uint8
    assert c.bytes_per_item() < S * S * 3  # compact: JPEG + params, no float buffers
    idx = c.indices_of(exclude=["clip1"])
    assert idx == [0, 2, 4, 6]
    train_idx, held = c.split_group("clip1", 2)
    assert len(train_idx) == 2 and len(held) == 2 and not set(train_idx) & set(held)
    sub = c.subset(held)
    assert len(sub) == 2 and sub.ids == [c.ids[i] for i in held]
    assert np.array_equal(sub.image(1), c.image(held[1]))
    with pytest.raises(InputError):
        c.indices_of(["nobody"])
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError):
        FaceCache.load(tmp_path / "bad.safetensors")


def test_optimizer_state_flatten_round_trip():
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([w], lr=1e-2)
    w.grad = torch.randn(3, 2)
    opt.step()
    tensors, rest = ck.flatten_optimizer(opt.state_dict())
    json.dumps(rest)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(w.detach().clone())], lr=1.0)
    opt2.load_state_dict(ck.unflatten_optimizer(tensors, json.loads(json.dumps(rest))))
    for k in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(opt2.state_dict()["state"][0][k], opt.state_dict()["state"][0][k])
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.999)


def test_loss_falls(cache, tmp_path):
    train(cache, tmp_path / "run", _cfg(steps=40, log_every=4, ckpt_every=20, keep=1,
                                                         sample_every=40))
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(logs) == 10
    first, last = logs[0]["loss"], np.mean([r["loss"] for r in logs[-3:]])
    assert last < 0.7 * first, (first, last)
    assert [p.name for p in ck.list_checkpoints(tmp_path / "run")] == ["ckpt-00000040.safetensors"]
    assert (tmp_path / "run" / "samples" / "step-00000040.png").exists()
    m = DiffusionRigModel.from_pretrained(tmp_path / "run" / "model")
    assert m.config == preset("tiny")


@pytest.mark.parametrize("bank_gb", [8.0, 0.0])  # buffers rendered once, or every step
def test_resume_is_exact(cache, tmp_path, bank_gb):
    cfg = _cfg(steps=6, buffer_memory_gb=bank_gb)
    train(cache, tmp_path / "a", cfg)
    train(cache, tmp_path / "b", cfg, stop_after=3)
    assert [p.name for p in ck.list_checkpoints(tmp_path / "b")] == ["ckpt-00000003.safetensors"]
    assert not (tmp_path / "b" / "model").exists()  # killed before the end
    train(cache, tmp_path / "b", cfg)
    ta, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "a", 6))
    tb, hb = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "b", 6))
    assert hb["step"] == 6
    keys = [k for k in ta if k.startswith(("model.", "ema.", "optim."))]
    assert keys and set(keys) == {k for k in tb if k.startswith(("model.", "ema.", "optim."))}
    for k in keys:
        assert torch.equal(ta[k], tb[k]), k
    # and training really changed the weights
    t0, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "b", 3))
    assert not torch.equal(t0["model.unet.conv_out.weight"], ta["model.unet.conv_out.weight"])


def test_buffer_bank_trains_like_per_step_rendering(cache, tmp_path):
    """Buffers rendered once into device memory (the default when they fit) or per step
    (buffer_memory_gb=0): the same weights, and the bank renders each item once."""
    calls = []

    def counting(p):
        calls.append(p.batch_size)
        return synth_buffers(p)

    train(cache, tmp_path / "bank", _cfg(steps=4), buffer_fn=counting)
    assert sum(calls) == len(cache)  # one render of every item, none per step
    calls.clear()
    train(cache, tmp_path / "step", _cfg(steps=4, buffer_memory_gb=0.0), buffer_fn=counting)
    assert sum(calls) == 4 * 4  # 4 steps x batch 4
    ta, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "bank", 4))
    tb, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "step", 4))
    # the same computation in another order of floating-point reductions (vectorised kernels
    # differ between CPUs): equal to rounding, not bit for bit. Adam's first steps blow rounding
    # up where a gradient is near zero (2.5e-5 on an AMD EPYC); other buffers would move the
    # weights apart by the steps themselves (lr 1e-3 x 4 steps), far above the 2e-4 allowed
    for k in ta:
        if k.startswith(("model.", "ema.")) and ta[k].is_floating_point():
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=2e-4, msg=k)


def test_resume_refuses_another_run_and_reports_changes(cache, tmp_path, capsys):
    run = tmp_path / "r"
    train(cache, run, _cfg(steps=4), indices=[0, 1, 2, 3], stop_after=2)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(InputError, match="different run .*items"):
        train(cache, run, _cfg(steps=4), indices=[4, 5, 6, 7])
    with pytest.raises(InputError, match="different run .*model.unet.base_channels"):
        other = preset("tiny")
        other.unet.base_channels = 8
        train(cache, run, _cfg(steps=4, model=other), indices=[0, 1, 2, 3])
    with pytest.raises(InputError, match="different run .*stage"):
        train(cache, run, _cfg(steps=4, stage=2), indices=[0, 1, 2, 3])
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written by the refused runs
    capsys.readouterr()
    train(cache, run, _cfg(steps=4, batch_size=2, time_limit=100.0), indices=[0, 1, 2, 3])
    said = capsys.readouterr().out
    assert "changed settings: train.batch_size 4 -> 2" in said and "time_limit" not in said
    assert ck.list_checkpoints(run)[-1].name == "ckpt-00000004.safetensors"


@pytest.mark.parametrize("from_scratch", [False, True])
def test_stage2_keeps_encoder_frozen(cache, tmp_path, from_scratch):
    torch.manual_seed(5)
    init = None
    start = DiffusionRigModel(preset("tiny"))
    if not from_scratch:
        with torch.no_grad():  # a "stage-1" model with non-trivial BN statistics
            for mod in start.encoder.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
        start.save_pretrained(tmp_path / "stage1")
        init = tmp_path / "stage1"
    out = train(cache, tmp_path / "s2", _cfg(stage=2, steps=3), indices=[0, 2, 4, 6], init=init,
                buffer_fn=synth_buffers)
    tensors, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "s2", 3))
    after = DiffusionRigModel.from_pretrained(out)
    if from_scratch:  # the run's own random start (train() seeds with TrainConfig.seed = 0)
        torch.manual_seed(0)
        start = DiffusionRigModel(preset("tiny"))
    for k, v in start.encoder.state_dict().items():
        assert torch.equal(v, ck.prefixed(tensors, "model.encoder.")[k]), k
        assert torch.equal(v, after.encoder.state_dict()[k]), k
    assert not torch.equal(start.unet.conv_out.weight, after.unet.conv_out.weight)
    n_trainable = sum(p.numel() for p in start.parameters()) - sum(p.numel() for p in start.encoder.parameters())
    n_opt = sum(v.numel() for k, v in tensors.items() if k.startswith("optim.state.") and k.endswith(".exp_avg"))
    assert n_opt == n_trainable  # the optimizer never saw the encoder


def test_bad_inputs(cache, tmp_path):
    with pytest.raises(InputError):
        train(cache, tmp_path / "x", _cfg(model=preset("64")))
    with pytest.raises(InputError):
        train(cache, tmp_path / "x", _cfg(), indices=[])
