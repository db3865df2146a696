"""GroupNorm from per-channel statistics (the compiled form, editing and training), checked
against PyTorch's GroupNorm, eager and through a real Inductor compile."""
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from portraitrig.accel import norms as M
from portraitrig.accel.inductor import compile_module
from portraitrig.methods.diffusionrig.config import preset
from portraitrig.methods.diffusionrig.model import DiffusionRigModel


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    # per-channel offsets well away from zero: the group variance must include the spread of
    # the channel means, not just the mean of the channel variances
    return torch.randn(*shape, generator=g) * 2 + torch.randn(1, shape[1], *([1] * (len(shape) - 2)), generator=g) * 4


@pytest.mark.parametrize("shape", [(3, 64, 9, 7), (2, 32, 5), (2, 16, 3, 4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_group_norm(shape, affine):
    x = _x(*shape)
    C = shape[1]
    w = torch.randn(C) if affine else None
    b = torch.randn(C) if affine else None
    ref = F.group_norm(x.double(), 8, None if w is None else w.double(), None if b is None else b.double(), 1e-6)
    out = M.group_norm_by_channels(x, 8, w, b, 1e-6)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.allclose(out.double(), ref, atol=2e-5)


def test_channels_last_stays_channels_last_and_bf16_is_as_close_as_stock():
    x = _x(4, 128, 8, 8).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(128), torch.randn(128)
    out = M.group_norm_by_channels(x, 32, w, b)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = F.group_norm(x, 32, w, b)
    assert torch.allclose(out, ref, atol=2e-5)
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    err = (M.group_norm_by_channels(xb, 32, wb, bb).float() - ref).abs().max()
    stock = (F.group_norm(xb, 32, wb, bb).float() - ref).abs().max()
    assert err <= 1.5 * stock + 1e-3


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="groups"):
        M.group_norm_by_channels(torch.zeros(1, 10, 2, 2), 4)


def test_compile_swaps_every_group_norm_keeping_parameters():
    model = DiffusionRigModel(preset("tiny"))
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is nn.GroupNorm for m in norms)  # the plain model is the reference
    compile_module(model.denoise, modules=(model.unet,))  # lazy: nothing is traced until called
    assert all(type(m) is M.ChannelStatsGroupNorm for m in norms)
    stock = nn.Sequential(nn.GroupNorm(4, 16), nn.Conv2d(16, 16, 1))
    before = {k: v.clone() for k, v in stock.state_dict().items()}
    assert M.use_channel_stats_group_norm(stock) == 1
    assert type(stock[0]) is M.ChannelStatsGroupNorm and type(stock[1]) is nn.Conv2d
    assert all(torch.equal(before[k], v) for k, v in stock.state_dict().items())


def test_only_compiled_code_takes_the_channel_form(monkeypatch):
    calls = []
    real = M.group_norm_by_channels
    monkeypatch.setattr(M, "group_norm_by_channels", lambda *a, **k: calls.append(1) or real(*a, **k))
    gn = nn.GroupNorm(4, 16)
    nn.init.normal_(gn.weight)
    M.use_channel_stats_group_norm(nn.Sequential(gn))
    x = _x(2, 16, 5, 5)
    ref = F.group_norm(x, 4, gn.weight, gn.bias, gn.eps)
    with torch.no_grad():
        gn(x)
    gn(x)
    assert calls == []  # eager: PyTorch's kernel
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = gn(x)  # compiled training
    assert calls == [1] and torch.allclose(out, ref, atol=1e-5)
    with torch.no_grad():  # compiled inference (the edit engine)
        out = gn(x)
        assert calls == [1, 1] and torch.allclose(out, ref, atol=1e-5)
        gn.by_channels = False
        gn(x)
    assert calls == [1, 1]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="Inductor's CPU backend needs a C++ compiler")
def test_really_compiled_inference_takes_the_channel_form_and_matches_eager(monkeypatch):
    # the real torch.compile path (Inductor on the CPU), not a patched is_compiling
    import torch._dynamo

    torch.manual_seed(0)
    net = nn.Sequential(nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 8, 3, padding=1))
    nn.init.normal_(net[0].weight)
    nn.init.normal_(net[0].bias)
    M.use_channel_stats_group_norm(net)
    calls = []
    real = M.group_norm_by_channels
    monkeypatch.setattr(M, "group_norm_by_channels", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = _x(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            ref = net(x)
            out = torch.compile(net, dynamic=False)(x)
    finally:
        torch._dynamo.reset()
    assert calls == [1]  # traced once, through the channel form
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="Inductor's CPU backend needs a C++ compiler")
def test_compiled_training_of_the_unet_matches_eager_gradients():
    # the denoiser as training compiles it (channel-form GroupNorm, channels-last concatenation
    # pass): loss and every gradient as in eager
    import torch._dynamo

    torch.manual_seed(0)
    m = DiffusionRigModel(preset("tiny")).train().to(memory_format=torch.channels_last)
    S = m.config.image_size
    cl = dict(memory_format=torch.channels_last)
    x = torch.randn(2, 3, S, S).contiguous(**cl)
    buf = torch.randn(2, m.config.buffer_channels, S, S).contiguous(**cl)
    cond = torch.randn(2, m.latent_proj.out_features)
    t = torch.tensor([10, 700])

    def grads(f):
        m.zero_grad(set_to_none=True)
        loss = f(x, t, buf, cond).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    l0, g0 = grads(m.denoise)
    torch._dynamo.reset()
    try:
        l1, g1 = grads(compile_module(m.denoise, channels_last=True, modules=(m.unet,), dynamic=False))
    finally:
        torch._dynamo.reset()
    assert torch.allclose(l0, l1, rtol=1e-5)
    assert g0.keys() == g1.keys()
    scale = max(g.abs().max() for g in g0.values())
    for n, g in g0.items():
        assert (g1[n] - g).abs().max() <= 1e-4 * scale + 1e-4 * g.abs().max(), n
