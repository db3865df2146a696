"""DiffusionRig model: configs, save/load, conditioning, DDIM inversion round trip."""
import json

import pytest
import torch

from portraitrig.methods.diffusionrig.config import SIZES, DiffusionConfig, preset
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
from portraitrig.render.spec import to_network as buffers_to_tensor
from portraitrig.methods.diffusionrig.sampling import DDIMPlan, NoiseSchedule, ddim_invert, ddim_sample
from portraitrig.errors import InputError


def _inputs(cfg, B=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = cfg.image_size
    return (torch.rand(B, 3, S, S, generator=g, dtype=dtype) * 2 - 1,
            torch.rand(B, cfg.buffer_channels, S, S, generator=g, dtype=dtype) * 2 - 1)


@pytest.mark.parametrize("name", SIZES)
def test_presets_round_trip_json(name):
    cfg = preset(name)
    cfg.validate()
    back = DiffusionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert cfg.in_channels == 3 + cfg.buffer_channels


def test_reference_unet_size():
    cfg = preset("256")
    with torch.device("meta"):
        n = DiffusionRigModel(cfg).num_parameters()
    assert 115e6 < n["unet"] < 135e6          # DiffusionRig's ~133M-class denoiser
    assert 11.0e6 < n["encoder"] < 11.5e6     # ResNet-18 trunk + fc -> 64


def test_save_load_identical_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    m = DiffusionRigModel(cfg).eval()
    x, b = _inputs(cfg)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        y = m(x, t, b, x)
    m.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    m2 = DiffusionRigModel.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        y2 = m2(x, t, b, x)
    assert torch.equal(y, y2)
    with pytest.raises(InputError):
        DiffusionRigModel.from_pretrained(tmp_path)


def test_latent_conditions_the_output():
    torch.manual_seed(0)
    cfg = preset("tiny")
    m = DiffusionRigModel(cfg).eval()
    x, b = _inputs(cfg)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        c = m.condition(torch.randn(2, cfg.encoder.latent_dim))
        y1 = m.denoise(x, t, b, c)
        y2 = m.denoise(x, t, b, c + 1.0)
        y3 = m.denoise(x, t, -b, c)
    assert (y1 - y2).abs().mean() > 1e-3  # latent reaches the residual blocks
    assert (y1 - y3).abs().mean() > 1e-3  # so do the buffers


def test_buffers_to_tensor_scaling():
    bufs = {"normal": -torch.ones(1, 3, 4, 4), "albedo": torch.ones(1, 3, 4, 4), "shaded": torch.zeros(1, 3, 4, 4),
            "regions": torch.zeros(1, 4, 4, 4)}
    t = buffers_to_tensor(bufs, ("normal", "albedo", "shaded", "regions"))
    assert t.shape == (1, 13, 4, 4)
    assert t[:, :3].eq(-1).all() and t[:, 3:6].eq(1).all() and t[:, 6:].eq(-1).all()
    with pytest.raises(ValueError):
        buffers_to_tensor({"normal": torch.zeros(1, 1, 4, 4)}, ("normal",))


def test_p2_weights_and_noise():
    cfg = preset("tiny")
    s = NoiseSchedule(cfg)
    w = s.p2_weight
    assert w.shape == (1000,) and w[0] < w[-1] and w[-1] <= 1.0  # high-SNR steps weigh less
    x0 = torch.zeros(2, 3, 4, 4)
    n = torch.randn(2, 3, 4, 4)
    xt = s.add_noise(x0, n, torch.tensor([999, 999]))
    assert torch.allclose(xt, n * (1 - s.alphas_cumprod[999]).sqrt().float(), atol=1e-6)


def test_ddim_plan():
    p = DDIMPlan.make(preset("tiny"), 20)
    assert len(p) == 20 and p.timesteps[0] == 999 and bool((p.timesteps[:-1] > p.timesteps[1:]).all())
    assert p.a[-1] == 1.0 and bool((p.a[:-1] < p.a[1:]).all())
    with pytest.raises(ValueError):
        DDIMPlan.make(preset("tiny"), 0)


def test_ddim_sample_clip_keeps_range():
    plan = DDIMPlan.make(preset("tiny"), 5)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    wild = lambda x, t: -3 * x  # noqa: E731  (an eps that drives x0 far out of range)
    assert ddim_sample(wild, x, plan).abs().max() > 1.5
    assert ddim_sample(wild, x, plan, clip=True).abs().max() <= 1.0 + 1e-6


def test_ddim_inversion_reconstructs_input():
    """Deterministic inversion (with fixed-point refinement) then decoding under the same
    buffers gives the input back; plain inversion at 20 steps is far coarser."""
    torch.manual_seed(1)
    cfg = preset("tiny")
    m = DiffusionRigModel(cfg).double().eval()
    x0, b = _inputs(cfg, B=1, dtype=torch.float64, seed=3)
    plan = DDIMPlan.make(cfg, 20, dtype=torch.float64)
    psnr = {}
    with torch.no_grad():
        c = m.condition(m.encode(x0))
        f = lambda x, t: m.denoise(x, t, b, c)  # noqa: E731
        for refine in (0, 3):
            xT = ddim_invert(f, x0, plan, refine=refine)
            xr = ddim_sample(f, xT, plan)
            psnr[refine] = float(10 * torch.log10(4 / (xr - x0).pow(2).mean()))
            assert (xT - x0).abs().mean() > 0.3  # it really went to noise and back
    assert psnr[3] > 40, psnr
    assert psnr[3] > psnr[0] + 10, psnr


def test_fast_engine_leaves_the_shared_encoder_in_float32():
    """The bf16 fast path casts only the denoiser: the renderer's encoder (and so the latent of
    every later edit) keeps its precision."""
    from portraitrig.methods.diffusionrig.engine import DDIMEngine

    torch.manual_seed(0)
    model = DiffusionRigModel(preset("tiny")).eval()
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    before = model.encode(img)
    DDIMEngine(model, steps=2, fast=True, compile=False, cuda_graph=False)
    assert next(model.encoder.parameters()).dtype == torch.float32
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    assert torch.equal(model.encode(img), before)


def test_damaged_model_folders_are_refused_before_allocating(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    DiffusionRigModel(preset("tiny")).save_pretrained(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    state["unet.conv_out.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(InputError, match="non-finite weights"):
        DiffusionRigModel.from_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["config"]["unet"]["base_channels"] = 4096  # a hostile config: refused, nothing allocated
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="channels"):
        DiffusionRigModel.from_pretrained(tmp_path / "m")
    cfg["config"]["unet"]["base_channels"] = 32  # valid but not these weights
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="do not match"):
        DiffusionRigModel.from_pretrained(tmp_path / "m")
