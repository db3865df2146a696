"""The shared training loop on a toy method: exact resume, logs, divergence, damaged checkpoints,
refused resumes, time limit, learning-rate schedule."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from portraitrig.errors import InputError
from portraitrig.training import checkpoint as ck
from portraitrig.training.config import TrainConfig
from portraitrig.training.loop import TrainingDiverged, batch_indices, train
from portraitrig.training.method import TrainingMethod


class Toy(TrainingMethod):
    """Linear regression with noise drawn from the step's generator (tests exact resume)."""

    name = "toy"

    def __init__(self, n=12, poison_at=None, tag="a"):
        torch.manual_seed(0)
        self.device = torch.device("cpu")
        self.model = nn.Linear(3, 2)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]) + 0.3
        self.poison_at, self.tag, self.exported = poison_at, tag, []

    def num_items(self):
        return len(self.x)

    def loss(self, net, idx, step, generator):
        noise = torch.randn(len(idx), 2, generator=generator) * 0.01
        loss = (net(self.x[idx]) - self.y[idx] - noise).square().mean()
        if self.poison_at is not None and step >= self.poison_at:
            loss = loss * float("nan")
        return loss, {"abs_err": loss.sqrt()}

    def run_identity(self):
        return {"tag": self.tag, "n": len(self.x)}

    def samples(self, ema, step):
        return np.full((4, 4, 3), min(step, 255), np.uint8)

    def export(self, ema, directory):
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(ema.state_dict(), directory / "weights.pt")
        self.exported.append(directory)
        return directory


class ToyWithCritic(Toy):
    """Toy with an adversary from step 2: the critic scores predictions against targets, the model
    is pushed towards what it scores as real (tests the critic's step, freezing and exact resume)."""

    def __init__(self, critic=True, **kw):
        super().__init__(**kw)
        torch.manual_seed(1)
        self.critic = nn.Linear(2, 1) if critic else None
        self.frozen_in_loss, self.judged = [], None

    def loss(self, net, idx, step, generator):
        loss, extra = super().loss(net, idx, step, generator)
        if self.critic is not None and step >= 2:
            self.frozen_in_loss.append(not any(p.requires_grad for p in self.critic.parameters()))
            pred = net(self.x[idx])
            loss = loss - 0.1 * self.critic(pred).mean()
            self.judged = (pred.detach(), self.y[idx])
        return loss, extra

    def critic_loss(self, critic, step, generator):
        if self.judged is None:
            return None
        fake, real = self.judged
        self.judged = None
        return torch.relu(1 - critic(real)).mean() + torch.relu(1 + critic(fake)).mean(), {"real": critic(real).mean()}


def cfg(**kw):
    base = dict(steps=6, batch_size=4, lr=0.05, warmup_steps=1, precision="fp32", channels_last=False,
                ckpt_every=1000, log_every=1, sample_every=3, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def run(out, c=None, method=None, **kw):
    c = c or cfg()
    return train(method or Toy(), c, out, config={"train": c.__dict__}, progress=False, **kw)


def _weights(path):
    t, _ = ck.load_checkpoint(path)
    return {k: v for k, v in t.items() if k.startswith(("model.", "ema.", "optim."))}


def test_straight_run_writes_everything(tmp_path):
    m = Toy()
    out = run(tmp_path / "r", method=m)
    assert out == tmp_path / "r" / "model" and m.exported == [out]
    logs = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, 7)) and all("abs_err" in r for r in logs)
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert sorted(p.name for p in (tmp_path / "r" / "samples").iterdir()) == ["step-00000003.png",
                                                                             "step-00000006.png"]
    assert [p.name for p in ck.list_checkpoints(tmp_path / "r")] == ["ckpt-00000006.safetensors"]
    _, header = ck.load_checkpoint(tmp_path / "r" / "ckpt-00000006.safetensors", tensors=False)
    assert header["method"] == "toy" and header["extra"]["run"] == {"tag": "a", "n": 12}


def test_resume_is_exact_and_the_log_has_each_step_once(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b", stop_after=3)
    assert not (tmp_path / "b" / "model").exists()  # killed before the end
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # a record torn by the kill, and one from after it
        f.write('{"step": 4, "loss": 0.1}\n{"step": 5, "lo')
    run(tmp_path / "b")
    wa, wb = _weights(ck.checkpoint_path(tmp_path / "a", 6)), _weights(ck.checkpoint_path(tmp_path / "b", 6))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_a_critic_trains_beside_the_model_frozen_in_its_step_and_resumes_exactly(tmp_path, capsys):
    m = ToyWithCritic()
    init = {k: v.clone() for k, v in m.critic.state_dict().items()}
    run(tmp_path / "a", method=m)
    assert m.frozen_in_loss == [True] * 4   # steps 2..5 called the critic, its parameters frozen there
    assert all(p.requires_grad for p in m.critic.parameters())
    logs = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert ["critic_loss" in r for r in logs] == [False, False, True, True, True, True]
    assert all("critic_real" in r for r in logs[2:])
    t, header = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "a", 6))
    assert header["critic_optimizer"] is not None
    assert not torch.equal(t["critic.weight"], init["weight"])           # trained by its own step
    assert any(k.startswith(ck.CRITIC_OPTIM) for k in t) and not any(k.startswith("ema.critic") for k in t)
    assert (tmp_path / "a" / "model" / "weights.pt").exists()             # the export: the model alone
    assert set(torch.load(tmp_path / "a" / "model" / "weights.pt", weights_only=True)) == {"weight", "bias"}
    # killed while the critic trains, resumed: the same weights, critic and its optimizer included
    run(tmp_path / "b", method=ToyWithCritic(), stop_after=3)
    run(tmp_path / "b", method=ToyWithCritic())
    wa, wb = (ck.load_checkpoint(ck.checkpoint_path(tmp_path / d, 6))[0] for d in "ab")
    keys = [k for k in wa if not k.startswith("rng.")]
    assert any(k.startswith("critic.") for k in keys) and all(torch.equal(wa[k], wb[k]) for k in keys)
    # a run resumed with a critic added: the critic starts afresh, said so
    run(tmp_path / "c", method=ToyWithCritic(critic=False), stop_after=3)
    capsys.readouterr()
    run(tmp_path / "c", method=ToyWithCritic())
    assert "holds no critic" in capsys.readouterr().out
    assert "critic.weight" in ck.load_checkpoint(ck.checkpoint_path(tmp_path / "c", 6))[0]


def test_resume_refuses_another_run_and_reports_changed_settings(tmp_path, capsys):
    run(tmp_path / "r", stop_after=2)
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    with pytest.raises(InputError, match="different run .*tag"):
        run(tmp_path / "r", method=Toy(tag="b"))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before
    capsys.readouterr()
    run(tmp_path / "r", c=cfg(batch_size=2, steps=8))
    said = capsys.readouterr().out
    assert "train.batch_size 4 -> 2" in said and "train.steps" not in said


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match="ckpt-00000002"):
        run(tmp_path / "r", c=cfg(ckpt_every=2, steps=8), method=Toy(poison_at=3))
    assert [p.name for p in ck.list_checkpoints(tmp_path / "r")] == ["ckpt-00000002.safetensors"]
    w = _weights(tmp_path / "r" / "ckpt-00000002.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in w.values())
    for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines():
        json.loads(line)  # valid JSON: a NaN loss is logged as null
    assert not (tmp_path / "r" / "model").exists()


def test_a_damaged_newest_checkpoint_is_set_aside(tmp_path, capsys):
    run(tmp_path / "r", c=cfg(ckpt_every=2, keep=3), stop_after=4)
    newest = tmp_path / "r" / "ckpt-00000004.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # torn by a crash
    capsys.readouterr()
    run(tmp_path / "r", c=cfg(ckpt_every=2, keep=3))
    said = capsys.readouterr().out
    assert "set aside" in said and "resumed from" in said and "ckpt-00000002" in said
    assert (tmp_path / "r" / "ckpt-00000004.safetensors.damaged").exists()
    run(tmp_path / "a", c=cfg(ckpt_every=2, keep=3))
    wa, wb = _weights(ck.checkpoint_path(tmp_path / "a", 6)), _weights(ck.checkpoint_path(tmp_path / "r", 6))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_time_limit_exports_the_model(tmp_path):
    m = Toy()
    run(tmp_path / "r", c=cfg(steps=10_000, time_limit=1e-9, log_every=5), method=m)
    assert m.exported and ck.list_checkpoints(tmp_path / "r")[-1].name == "ckpt-00000010.safetensors"


def test_learning_rate_schedules():
    c = cfg(lr=1.0, warmup_steps=4, steps=104, schedule="cosine", min_lr_ratio=0.1)
    assert [c.lr_at(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert c.lr_at(4) == pytest.approx(1.0) and c.lr_at(54) == pytest.approx(0.55) and c.lr_at(104) == pytest.approx(0.1)
    assert cfg(lr=2.0, warmup_steps=0).lr_at(500) == 2.0


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=float("nan")), dict(lr=-1.0), dict(batch_size=0),
                                 dict(ckpt_every=0), dict(ema_decay=1.0), dict(precision="fp8"),
                                 dict(time_limit=0.0), dict(warmup_steps=-1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        cfg(**bad).validate()


def test_batch_indices_shard_and_cover():
    n, bs, world = 10, 3, 2
    seen = []
    for step in range(5):
        seen += [i for r in range(world) for i in batch_indices(step, n, bs, r, world, seed=7).tolist()]
    # the stream is a sequence of permutations: the first 10 items are each item once
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert torch.equal(batch_indices(3, n, bs, 1, world, 7), batch_indices(3, n, bs, 1, world, 7))
