"""Tiny synthetic training data for the neural renderers' tests (made here, no real faces)."""
import pytest
import torch

from portraitrig.face.params import RigParams
from portraitrig.neural.cache import build_cache
from portraitrig.training.config import TrainConfig

S = 32


def _synthetic(n=8, V=10):
    """Blobs whose position follows params.translation and colour params.light[:, 0]."""
    g = torch.Generator().manual_seed(0)
    p = RigParams(scale=torch.rand(n, 1, generator=g), rotation=torch.randn(n, 3, generator=g) * 0.1,
                  translation=torch.randn(n, 2, generator=g) * 0.2, identity=torch.randn(n, 5, generator=g),
                  expression=torch.randn(n, 4, generator=g), gaze=torch.zeros(n, 2, 2),
                  light=torch.randn(n, 9, 3, generator=g), albedo=torch.rand(n, V, 3, generator=g),
                  sources=[f"/x/clip{i % 2}.mp4#frame={i}" for i in range(n)])
    m, sh = _blob(p)
    imgs = ((sh * m + 0.2 * (1 - m)) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return list(imgs), p


def _blob(p):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, S, device=p.device), torch.linspace(-1, 1, S, device=p.device),
                            indexing="ij")
    r = (xx - p.translation[:, 0, None, None]) ** 2 + (yy - p.translation[:, 1, None, None]) ** 2
    m = (r < 0.4).float()[:, None]
    return m, torch.sigmoid(2 * p.light[:, 0, :])[:, :, None, None]


def synth_buffers(p):
    """Stand-in for the rig renderer: 13 channels like normal/albedo/shaded/regions."""
    m, sh = _blob(p)
    return torch.cat([m.expand(-1, 3, -1, -1), (sh * m) * 2 - 1, (sh * m) * 2 - 1, m.expand(-1, 4, -1, -1) * 2 - 1], 1)


@pytest.fixture(scope="module")
def cache():
    imgs, p = _synthetic()
    return build_cache(imgs, p, [f"i{i}" for i in range(len(imgs))], S)


METHOD_FIELDS = ("stage", "light_augment", "buffer_memory_gb", "sample_count", "sample_steps", "grad_checkpointing")


def _cfg(**kw):
    """A tiny DiffusionRig run config; method-level keys (stage, light_augment, ...) and training
    loop keys (steps, batch_size, ...) in one call."""
    from portraitrig.methods.diffusionrig.config import Config, preset

    method = {k: kw.pop(k) for k in list(kw) if k in METHOD_FIELDS}
    model = kw.pop("model", None) or preset("tiny")
    base = dict(steps=6, batch_size=4, precision="fp32", ckpt_every=1000, sample_every=0, log_every=1,
                warmup_steps=1, lr=1e-3, channels_last=False)
    base.update(kw)
    return Config(model=model, train=TrainConfig(**base), **method)


def train(cache, out, cfg, *, indices=None, init=None, buffer_fn=None, stop_after=None):
    """Train DiffusionRig on the common training loop as `portraitrig train diffusion` does (tests)."""
    from portraitrig.config import to_dict
    from portraitrig.methods.diffusionrig.method import DiffusionRigMethod
    from portraitrig.training import loop

    torch.manual_seed(cfg.train.seed)
    sub = cache.subset(indices) if indices is not None else cache
    resuming = loop.latest_checkpoint(out, warn=None) is not None
    method = DiffusionRigMethod(cfg, sub, "cpu", init=None if resuming else init, buffer_fn=buffer_fn or synth_buffers,
                                say=None)
    return loop.train(method, cfg.train, out, config=to_dict(cfg), progress=False, stop_after=stop_after)


