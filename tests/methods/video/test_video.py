import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from portraitrig.capture.types import Crop
from portraitrig.errors import InputError
from portraitrig.face.base import posed_vertices
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.methods import video
from portraitrig.methods.video.config import Config, VideoNetConfig
from portraitrig.methods.video.data import (VideoData, fixed_crop, from_frames, params_to_crop, prepare_video,
                                            sidecar_path, split_count)
from portraitrig.methods.video.method import (VideoMethod, background_plate, image_loss, image_theta, median_frame,
                                              move_person, random_lights, random_moves)
from portraitrig.methods.video.model import VideoNet
from portraitrig.methods.video.renderer import VideoRenderer


def test_presets_validate_and_shapes():
    for name, make in video.PRESETS.items():
        cfg = make()
        cfg.validate()
        net = VideoNet(cfg.model) if name == "tiny" else None
        if net is not None:
            x = torch.zeros(2, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
            with torch.no_grad():
                y = net(x)
            assert y.shape == (2, 4, cfg.model.image_size, cfg.model.image_size)   # colour and the matte
            torch.testing.assert_close(y, torch.full_like(y, 0.5))   # starts at mid-grey
    with pytest.raises(ValueError):
        VideoNetConfig(image_size=33, widths=(8, 16)).validate()
    with pytest.raises(ValueError):
        VideoNetConfig(buffers=("albedo",)).validate()
    with pytest.raises(ValueError):
        Config(holdout=1.0).validate()


def scramble(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (a fresh VideoNet starts as a constant grey image, which makes
    any two renders equal)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def test_output_is_linear_so_a_bad_step_cannot_leave_it_saturated():
    net = VideoNet(video.PRESETS["tiny"]().model)
    x = torch.randn(2, net.config.in_channels, 32, 32)
    with torch.no_grad():
        net.head.bias.fill_(10.0)            # far past white (a sigmoid here would have no gradient)
    y = net(x)
    assert float(y.detach().min()) > 1 and float(net(x, clamp=True).detach().max()) == 1.0
    loss, _ = image_loss(y, torch.full_like(y, 0.5), 0.5, 0.5)
    loss.backward()
    assert float(net.head.bias.grad.sum()) > 0.5      # the L1 term pulls it back into range


def test_median_frame_is_the_per_pixel_median_and_an_input_of_the_net():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8, generator=g)
    want = frames.float().median(0).values / 255
    torch.testing.assert_close(median_frame(frames, rows=5)[0], want)
    # at most max_frames evenly spaced frames: the first, middle and last of 7
    torch.testing.assert_close(median_frame(frames, max_frames=3)[0], frames[[0, 3, 6]].float().median(0).values / 255)
    net = scramble(VideoNet(video.PRESETS["tiny"]().model))
    x = torch.randn(1, net.config.in_channels, 32, 32, generator=g)
    with torch.no_grad():
        a = net(x)
        net.reference.fill_(0.9)
        b = net(x)
    assert float((a - b).abs().max()) > 1e-3


def test_tiny_renderer_learns_synthetic_frames(tmp_path):
    data = VideoData.load(video.tiny_data(tmp_path))
    assert data.n_train == split_count(8, 0.2) == 7
    cfg = video.PRESETS["tiny"]()
    cfg.light_augment = 0.0
    torch.manual_seed(0)
    m = VideoMethod(cfg, data, "cpu", say=None)
    opt = torch.optim.Adam(m.model.parameters(), 3e-3)
    idx = torch.arange(7)
    losses = []
    for step in range(25):
        loss, parts = m.loss(m.model, idx, step, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert set(parts) == {"l1", "ssim", "grad", "matte"}
    grid = m.samples(m.model, 0)
    assert grid.shape == (2 * 32, 5 * 32, 3)   # rig, render, its matte over black, relit, frame
    # the exported folder renders sequences and single frames at the right shape
    folder = m.export(m.model, tmp_path / "model")
    r = VideoRenderer.from_pretrained(folder)
    assert r.target is not None and len(r.target.params) == 8 and r.target.n_train == 7
    seq = r.render(data.params[2:6], context=data.params[:2])
    assert seq.shape == (4, 3, 32, 32)
    one = r.render(data.params[2:3], context=data.params[:2])
    torch.testing.assert_close(one[0], seq[0], atol=1e-5, rtol=0)   # the context fills the window
    assert r.render(data.params[:3], sequence=False).shape == (3, 3, 32, 32)
    lit = r.render(data.params[2:3], light=torch.from_numpy(np.zeros((9, 3), np.float32)))
    assert lit.shape == (1, 3, 32, 32)
    # ... with the person's matte, which has learned where the person is (it starts at 0.5)
    colour, matte = r.render_matte(data.params[2:6], context=data.params[:2])
    torch.testing.assert_close(colour, seq)
    assert matte.shape == (4, 1, 32, 32) and float(matte.min()) >= 0 and float(matte.max()) <= 1
    person = data.masks[2:6].float() / 255
    assert float((matte - person).abs().mean()) < 0.6 * float((0.5 - person).abs().mean())
    stream = r.stream()
    stream(data.params[:2])
    torch.testing.assert_close(stream(data.params[2:6]), seq)
    torch.testing.assert_close(stream.last_matte, matte)


def test_light_augmentation_is_seeded_and_exposure_matched():
    old = RigParams.neutral(load_default_model(), 4).light
    a = random_lights(old, torch.Generator().manual_seed(5))
    b = random_lights(old, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert a.shape == (4, 9, 3) and not torch.allclose(a[0], a[1])
    from portraitrig.light.sh import mean_front_shading

    ratio = mean_front_shading(a) / mean_front_shading(old)
    assert float(ratio.min()) > 0.8 * 0.85 - 0.02 and float(ratio.max()) < 1.25 * 1.15 + 0.02
    # a warm fitted light stays warm: the relit targets keep the skin's colour (within the tint)
    warm = old * torch.tensor([1.0, 0.7, 0.45])
    c = mean_front_shading(random_lights(warm, torch.Generator().manual_seed(1)))
    balance = (c / c.sum(-1, keepdim=True)) / (mean_front_shading(warm) / mean_front_shading(warm).sum(-1, keepdim=True))
    assert float(balance.min()) > 0.7 and float(balance.max()) < 1.3


def test_image_loss_is_zero_for_equal_images():
    x = torch.rand(2, 3, 16, 16)
    total, parts = image_loss(x, x, 0.5, 0.5)
    assert float(total) < 1e-5 and float(parts["ssim"]) > 0.999
    worse, _ = image_loss(x, 1 - x, 0.5, 0.5)
    assert float(worse) > 0.3


def test_params_move_between_crops_with_the_mesh():
    fm = load_default_model()
    p = RigParams.neutral(fm, 2).replace(rotation=torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1]]))
    src = Crop(np.array([[0.9, -0.2, 30.0], [0.2, 0.9, -12.0]]), 256, (640, 480))
    dst = Crop(np.array([[0.5, 0.1, 10.0], [-0.1, 0.5, 20.0]]), 128, (640, 480))
    q = params_to_crop(p, src, dst)

    def image_xy(params, crop):
        v = posed_vertices(fm, params)[..., :2].double().numpy()
        return crop.to_image((v + 1) / 2 * crop.size)

    np.testing.assert_allclose(image_xy(q, dst), image_xy(p, src), atol=1e-3)


def test_fixed_crop_is_the_median_crop():
    a = Crop(np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]]), 256, (800, 600))
    b = Crop(np.array([[0.5, 0.0, -14.0], [0.0, 0.5, -20.0]]), 256, (800, 600))
    c = fixed_crop([a, a, b], 256, zoom_out=1.0)
    np.testing.assert_allclose(c.affine, a.affine, atol=1e-9)
    z = fixed_crop([a], 128, zoom_out=2.0)
    np.testing.assert_allclose(z.scale, 0.5 * 0.5 / 2, rtol=1e-9)
    np.testing.assert_allclose(z.to_image(np.array([64.0, 64.0])), a.to_image(np.array([128.0, 128.0])), atol=1e-9)


def test_prepare_video_cuts_one_crop_and_moves_params(tmp_path):
    """A video through prepare_video with a tracker of known answers (MediaPipe does not find
    the synthetic face): one fixed crop, masks, params moved into it, a frame without a face left out."""
    from portraitrig.io.media import VideoWriter

    crops, params, _ = video.synthetic_frames(5, 64)
    frames = [np.pad(c, ((16, 16), (32, 32), (0, 0)), mode="edge") for c in crops]   # 96 x 128 frames
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 25) as w:
        for f in frames:
            w.write(f)
    crop_t = Crop(np.array([[1.0, 0.0, -32.0], [0.0, 1.0, -16.0]]), 64, (128, 96))

    class Tracker:
        last_skipped = [(3, "no face")]

        def fit_video(self, p, max_frames=None):
            return [SimpleNamespace(source=f"{p}#frame={i}", crop=crop_t, params=params[i]) for i in (0, 1, 2, 4)]

    out = prepare_video(path, tmp_path / "data" / "clip.safetensors", size=32, holdout=0.25, rigger=Tracker(),
                        say=None)
    data = VideoData.load(out)
    assert len(data) == 4 and data.frame_index.tolist() == [0, 1, 2, 4] and data.n_train == 3
    assert data.size == 32 and data.masks.shape == (4, 1, 32, 32) and data.fps == pytest.approx(25.0)
    # zoomed out 1.25 times about the face crop's centre; a 64 px crop at 32 px
    assert data.crop.scale == pytest.approx(0.5 / 1.25)
    fm = load_default_model()
    v_old = posed_vertices(fm, params[[0]])[0, :, :2].double().numpy()
    v_new = posed_vertices(fm, data.params[[0]])[0, :, :2].double().numpy()
    np.testing.assert_allclose(data.crop.to_image((v_new + 1) / 2 * 32), crop_t.to_image((v_old + 1) / 2 * 64),
                               atol=1e-3)
    assert sidecar_path(out).is_file()


def test_bad_data_and_folders(tmp_path):
    from portraitrig.neural.cache import FaceCache

    path = video.tiny_data(tmp_path)
    FaceCache.load(path).save(tmp_path / "plain.safetensors")   # a cache without its video sidecar
    with pytest.raises(InputError, match="plain.safetensors"):
        VideoData.load(tmp_path / "plain.safetensors")
    with pytest.raises(InputError, match="no such file"):
        VideoMethod.create(video.PRESETS["tiny"](), tmp_path / "missing.mp4", "cpu", say=None)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)    # no decodable frame
    with pytest.raises(InputError, match="broken.mp4"):
        VideoMethod.create(video.PRESETS["tiny"](), broken, "cpu", say=None, work_dir=tmp_path / "run")
    big = video.PRESETS["256"]()
    with pytest.raises(InputError, match="32 px"):
        VideoMethod.create(big, path, "cpu", say=None)
    from portraitrig.neural.modelio import write_model_folder

    write_model_folder(tmp_path / "diff", "diffusion", 1, {"image_size": 32}, torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="'diffusion' model"):
        VideoRenderer.from_pretrained(tmp_path / "diff")
    cfg = json.loads((tmp_path / "diff" / "config.json").read_text())
    assert cfg["method"] == "diffusion"


def test_person_masks_are_stored_as_png_and_read_back_exactly(tmp_path):
    from safetensors.torch import load_file, save_file

    from portraitrig.methods.video.data import sidecar_path

    path = video.tiny_data(tmp_path)
    data = VideoData.load(path)
    masks = torch.randint(0, 256, data.masks.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data.masks = masks
    data.save(tmp_path / "again.safetensors")
    side = sidecar_path(tmp_path / "again.safetensors")
    arrays = load_file(side)
    assert "masks" not in arrays and arrays["mask_png"].dtype == torch.uint8
    assert torch.equal(VideoData.load(tmp_path / "again.safetensors").masks, masks)
    # a damaged PNG, and offsets past the bytes: errors naming the sidecar
    from safetensors import safe_open

    with safe_open(str(side), "pt") as f:
        meta = f.metadata()
    bad = dict(arrays)
    bad["mask_png"] = arrays["mask_png"].clone()
    bad["mask_png"][: int(arrays["mask_offsets"][1])] = 7
    save_file(bad, str(side), metadata=meta)
    with pytest.raises(InputError, match=r"again\.video\.safetensors.*mask 0"):
        VideoData.load(tmp_path / "again.safetensors")
    bad = dict(arrays)
    bad["mask_offsets"] = arrays["mask_offsets"] * 2
    save_file(bad, str(side), metadata=meta)
    with pytest.raises(InputError, match="mask offsets"):
        VideoData.load(tmp_path / "again.safetensors")


def test_from_frames_default_masks_cover_the_face():
    crops, params, _ = video.synthetic_frames(3, 32)
    d = from_frames(crops, params)
    assert d.masks.shape == (3, 1, 32, 32) and int(d.masks.max()) == 255 and int(d.masks.min()) == 0


@pytest.mark.parametrize("still_body", [0.0, 0.3])
def test_stream_renders_like_the_whole_sequence(tmp_path, still_body):
    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    cfg.model.still_body = still_body
    m = VideoMethod(cfg, data, "cpu", say=None)
    scramble(m.model)
    r = VideoRenderer.from_pretrained(m.export(m.model, tmp_path / "model"))
    assert r.config.still_body == still_body and (r.cond.ellipse is not None) == bool(still_body)
    assert r.cond.ellipse == m.cond.ellipse   # saved with the model
    whole = r.render(data.params[:6])
    assert float((whole[1:] - whole[:1]).abs().max()) > 1e-3   # frames differ: the comparison can fail
    stream = r.stream()
    parts = torch.cat([stream(data.params[0:1]), stream(data.params[1:4]), stream(data.params[4:6])])
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)
    assert r.render(data.params[:0]).shape == (0, 3, 32, 32)


def test_chunks_see_the_frames_before_them(tmp_path):
    """A sequence rendered a few frames per network call gives the frames of one call: each
    chunk's windows reach back into the chunk before it; unrelated items (``sequence=False``)
    see only themselves."""
    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    cfg.model.window = 3
    m = VideoMethod(cfg, data, "cpu", say=None)
    scramble(m.model)
    model = m.export(m.model, tmp_path / "model")
    one, few = VideoRenderer.from_pretrained(model), VideoRenderer.from_pretrained(model, max_batch=2)
    p = data.params[:7]
    whole = one.render(p)
    torch.testing.assert_close(few.render(p), whole, atol=1e-5, rtol=0)
    items = few.render(p, sequence=False)
    torch.testing.assert_close(items, one.render(p, sequence=False), atol=1e-5, rtol=0)
    solo = torch.cat([one.render(p[i:i + 1]) for i in range(len(p))])   # a lone frame's window is itself
    torch.testing.assert_close(items, solo, atol=1e-5, rtol=0)
    assert float((items[3:] - whole[3:]).abs().max()) > 1e-3          # the window matters: this can fail


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("still_body,retrieve,count", [(0.0, 0, 1), (0.3, 0, 1), (0.3, 4, 1), (0.3, 4, 2)])
def test_cuda_graphs_render_as_the_plain_path(tmp_path, still_body, retrieve, count):
    """``fast`` (CUDA graphs of the work after the rasterizer, the default on CUDA) renders what
    the plain path renders: whole sequences in chunks, a stream frame by frame (three batch
    shapes: no context, part of a window, a full one), unrelated items, a new light, the graphs
    sharing one memory pool and replayed in another order than captured; in bf16 too, after which
    the graphs are captured again."""
    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    cfg.model.window, cfg.model.still_body, cfg.model.retrieve = 3, still_body, retrieve
    cfg.model.retrieve_count, cfg.model.retrieve_apart = count, 1
    m = VideoMethod(cfg, data, "cpu", say=None)
    scramble(m.model)
    model = m.export(m.model, tmp_path / "model")
    plain = VideoRenderer.from_pretrained(model, device="cuda", fast=False, max_batch=4)
    fast = VideoRenderer.from_pretrained(model, device="cuda", max_batch=4)
    assert fast.fast and not plain.fast and not VideoRenderer.from_pretrained(model, fast=True).fast   # CPU: plain
    p = data.params[:9]
    light = torch.zeros(9, 3)
    light[0], light[2] = 1.0, 0.6
    for r in (plain, fast):
        r.out = [r.render(p), r.render(p, light=light), r.render(p, sequence=False)]
        s = r.stream()
        r.out.append(torch.cat([s(p[i:i + 1]) for i in range(len(p))]))
        r.out.append(r.render(p))                                           # replayed again: no stale output
    bank = {"retrieve"} if retrieve else set()          # the bank's search and relighting graphed too
    assert set(fast._graphs) == {"heads", "sequence", "items"} | bank and len(fast._graphs["sequence"]) == 5
    for a, b in zip(plain.out, fast.out):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=0)
    assert float((plain.out[0] - plain.out[1]).abs().max()) > 1e-3         # the light changes the frames
    for r in (plain, fast):
        r.use_half()
        r.half_out = r.render(p)
    assert set(fast._graphs) == {"heads", "sequence"} | bank and fast.dtype == torch.bfloat16   # captured again
    if retrieve:
        assert fast.net.bank_keys.dtype == torch.float32      # the retrieval's keys stay float32
    # bf16 kernels may round differently inside a graph than outside (a random network amplifies
    # it): the graphed bf16 frames must be as near the fp32 frames as the plain bf16 ones are
    ref = plain.out[0]
    err_plain, err_fast = [float((x.half_out - ref).abs().mean()) for x in (plain, fast)]
    gap = float((fast.half_out - plain.half_out).abs().mean())
    assert err_fast <= 1.5 * err_plain + 1e-3 and gap <= 2 * err_plain + 1e-3, (err_plain, err_fast, gap)
    assert float(fast.half_out.std()) > 1e-3


def test_neural_texture_is_sampled_at_the_uv_buffer_inside_the_face_only():
    cfg = VideoNetConfig(image_size=16, buffers=("normal", "mask", "uv"), widths=(4, 8), window=2,
                         texture=2, texture_size=8, texture_levels=2)
    cfg.validate()
    net = VideoNet(cfg)
    assert [tuple(t.shape) for t in net.texture] == [(1, 2, 8, 8), (1, 2, 4, 4)]
    with torch.no_grad():
        x = torch.zeros(1, cfg.in_channels, 16, 16)
        assert float(net.sample_texture(x).abs().max()) == 0          # starts at zero
        net.texture[0][0, 0] = torch.arange(64.0).view(8, 8)          # texel (row r, column c) = 8 r + c
        net.texture[1][0, 1] = 5.0                                     # a constant coarse level
        C = cfg.buffer_channels
        base = C                                                       # the last frame of the window of 2
        sl = {"mask": base + 3, "u": base + 4, "v": base + 5}
        x[:, sl["mask"]] = -1                                          # outside the face ...
        x[:, sl["mask"], 4:12, 4:12] = 1                               # ... but a square inside it
        u, v = (2 + 0.5) / 8, (5 + 0.5) / 8                            # the centre of texel (row 5, column 2)
        x[:, sl["u"]], x[:, sl["v"]] = 2 * u - 1, 2 * v - 1
        x[:, 3 + 4:3 + 6] = 0.7                                        # the first frame's uv: not used
        t = net.sample_texture(x)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 4:12] = True
    torch.testing.assert_close(t[0, 0][inside], torch.full((64,), 8.0 * 5 + 2))
    torch.testing.assert_close(t[0, 1][inside], torch.full((64,), 5.0))
    assert float(t[0][:, ~inside].abs().max()) == 0
    with pytest.raises(ValueError, match="uv"):
        VideoNetConfig(buffers=("normal", "mask"), texture=4).validate()
    with pytest.raises(ValueError, match="texture_size"):
        VideoNetConfig(texture=4, texture_size=12, texture_levels=4).validate()


def test_neural_texture_learns_at_its_own_rate_and_round_trips(tmp_path):
    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    assert cfg.model.texture > 0                   # the tiny preset (tests, CLI) runs the texture too
    cfg.light_augment = 0.0
    torch.manual_seed(0)
    m = VideoMethod(cfg, data, "cpu", say=None)
    groups = m.parameter_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, cfg.texture_lr]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in m.model.texture}
    opt = torch.optim.Adam([{"params": g["params"], "lr": 1e-3 * g["lr_scale"]} for g in groups])
    for step in range(3):
        loss, _ = m.loss(m.model, torch.arange(7), step, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m.model.texture[0].detach().abs().max()) > 0     # the texture got gradients
    folder = m.model.save_pretrained(tmp_path / "net")
    back = VideoNet.from_pretrained(folder)
    for a, b in zip(m.model.texture, back.texture):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


def test_a_model_folder_from_before_the_texture_still_loads(tmp_path):
    cfg = VideoNetConfig(image_size=32, buffers=("normal", "mask", "regions"), widths=(8, 16, 16), window=2)
    net = scramble(VideoNet(cfg))
    folder = net.save_pretrained(tmp_path / "old")
    conf = json.loads((folder / "config.json").read_text())
    for key in ("texture", "texture_size", "texture_levels", "shading_band", "proxy_follows_head"):
        conf_model = conf.get("config", conf)                      # written before these fields existed
        conf_model.pop(key, None)
    (folder / "config.json").write_text(json.dumps(conf))
    back = VideoNet.from_pretrained(folder)
    assert back.config.texture == 0 and len(back.texture) == 0
    assert back.config.shading_band == 0 and not back.config.proxy_follows_head   # conditioned as it was trained
    x = torch.randn(1, cfg.in_channels, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x))


def test_a_head_following_model_from_before_still_body_loads_as_it_was(tmp_path):
    """A model saved before still_body (no such key, no head ellipse) loads with the whole
    reference frame following the head, as it was trained, and renders."""
    cfg = VideoNetConfig(image_size=32, buffers=("normal", "mask", "regions", "uv"), widths=(8, 16, 16), window=2,
                         follow_head=True)
    net = scramble(VideoNet(cfg))
    folder = net.save_pretrained(tmp_path / "old")
    conf = json.loads((folder / "config.json").read_text())
    conf.get("config", conf).pop("still_body")
    (folder / "config.json").write_text(json.dumps(conf))
    back = VideoNet.from_pretrained(folder)
    assert back.config.still_body == 0 and not hasattr(back, "head_ellipse")
    r = VideoRenderer(back)
    assert r.cond.ellipse is None
    p = RigParams.neutral(load_default_model(), 2)
    assert r.head_warps(p).shape == (2, 2, 3) and r.render(p).shape == (2, 3, 32, 32)


def test_head_warp_moves_the_prior_with_the_head():
    """The prior warped by head_warp lands where the head went: a mask rendered under the mean
    head pose, warped to a frame shifted, scaled and rolled in the image plane, matches the mask
    rendered under that frame's pose."""
    from portraitrig.face.params import euler_to_matrix, matrix_to_axis_angle
    from portraitrig.methods.video.condition import Conditioner
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    S = 64
    cfg = VideoNetConfig(image_size=S, buffers=("normal", "mask", "uv"), widths=(8, 16), window=1, follow_head=True)
    cfg.validate()
    base = RigParams.neutral(fm, 3)
    roll = torch.tensor([0.0, 0.0, 12.0])
    R = euler_to_matrix(torch.zeros(3), torch.zeros(3), torch.deg2rad(roll))
    frames = base.replace(rotation=matrix_to_axis_angle(R), scale=base.scale * torch.tensor([[1.0], [1.15], [1.0]]),
                          translation=base.translation + torch.tensor([[0.0, 0.0], [0.1, -0.05], [-0.08, 0.1]]))
    cond = Conditioner(cfg, "cpu", fm)
    mean = base[:1]
    prior = render_buffers(mean, fm, size=S, names=("mask",))["mask"]
    cond.set_prior(prior, torch.rand(1, 3, S, S), Conditioner.mean_head_pose(mean))
    theta = cond.head_warp(frames)
    torch.testing.assert_close(theta[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), atol=1e-5, rtol=0)  # no motion
    warped = (cond.follow(theta)[:, 3:] + 1) / 2
    want = render_buffers(frames, fm, size=S, names=("mask",))["mask"]
    for i in range(3):
        a, b = warped[i, 0] > 0.5, want[i, 0] > 0.5
        assert (a & b).sum() / (a | b).sum() > 0.95, i
    # the expression does not move the warp (the head does)
    smiling = frames.replace(expression=frames.expression + 0.8)
    torch.testing.assert_close(cond.head_warp(smiling), theta)
    x = cond.inputs(torch.zeros(3, cfg.buffer_channels, S, S), torch.arange(3)[:, None], torch.zeros(3, 3, S, S),
                    frames.light, torch.zeros(3, 1, S, S), theta)
    assert x.shape == (3, cfg.in_channels, S, S)
    with pytest.raises(ValueError, match="head"):
        cond.inputs(torch.zeros(3, cfg.buffer_channels, S, S), torch.arange(3)[:, None], torch.zeros(3, 3, S, S),
                    frames.light, torch.zeros(3, 1, S, S))
    with pytest.raises(ValueError, match="reference"):
        VideoNetConfig(reference=False, follow_head=True).validate()


def test_still_body_moves_the_head_and_leaves_the_shoulders():
    """With still_body the head warp moves the head (its upper half and the ellipse of its
    lower half) as the plain warp does and leaves what lies beyond the grown ellipse where the
    reference frame has it; a moved training item's body (move_head_warp) moves with the whole
    person's map."""
    from portraitrig.face.params import euler_to_matrix, matrix_to_axis_angle
    from portraitrig.methods.video.condition import Conditioner, warp

    fm = load_default_model()
    S, grow = 64, 0.3
    cfg = VideoNetConfig(image_size=S, buffers=("normal", "mask", "uv"), widths=(8, 16), window=1, follow_head=True,
                         still_body=grow)
    cfg.validate()
    mean = RigParams.neutral(fm, 1)
    mean = mean.replace(scale=mean.scale * 0.6, translation=torch.zeros(1, 2))   # a portrait crop's head
    R = euler_to_matrix(torch.zeros(1), torch.zeros(1), torch.deg2rad(torch.tensor([10.0])))
    frames = mean.replace(rotation=matrix_to_axis_angle(R), translation=mean.translation + torch.tensor([[0.12, -0.1]]))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    reference = torch.stack([xx, yy, xx * yy])[None]                    # every pixel its own colour
    cond = Conditioner(cfg, "cpu", fm)
    hp = Conditioner.mean_head_pose(mean)
    ellipse = Conditioner.head_ellipse(fm, mean, hp)
    with pytest.raises(ValueError, match="ellipse"):
        cond.set_prior(torch.ones(1, 1, S, S), reference, hp)
    cond.set_prior(torch.ones(1, 1, S, S), reference, hp, ellipse)
    cx, cy, a, b = ellipse[0].tolist()
    v = posed_vertices(fm, mean)[0]
    assert abs(cx - float(v[:468, 0].mean())) < 0.05 and abs(cy + b / 1.1 - float(v[152, 1])) < 1e-5   # ends at the chin
    theta = cond.head_warp(frames)
    assert theta.shape == (1, 4, 3)
    torch.testing.assert_close(theta[:, 2:], torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))   # the body stays
    out = (cond.follow(theta)[:, :3] + 1) / 2
    plain = warp(reference, theta[:, :2])                               # the whole frame with the head

    def reach(th):   # each output pixel's distance from the head's centre in the ellipse's radii (0 above it)
        g = torch.nn.functional.affine_grid(th, [1, 1, S, S], align_corners=False)
        return (((g[..., 0] - cx) / a) ** 2 + ((g[..., 1] - cy).clamp_min(0) / b) ** 2).sqrt()

    d, d_body = reach(theta[:, :2]), reach(theta[:, 2:])
    head, body = d < 1, (d > 1 + grow) & (d_body > 1 + grow)
    assert head.sum() > 200 and body.sum() > 100
    assert float((out - plain).abs().amax(1)[head].max()) < 1e-5        # the head moves with it
    assert float((out - reference).abs().amax(1)[body].max()) < 1e-5    # the shoulders stay
    between = ~head & ~body
    assert float((out - plain).abs()[:, :2].amax(1)[between].max()) > 0.02   # a fade, not a cut
    old_place = (d > 1 + grow) & (d_body < 1)                          # where the head was, not where it is
    assert old_place.sum() > 20 and float((out - plain).abs().amax(1)[old_place].max()) < 1e-5   # no ghost
    # a moved item: the whole person moves, the head's warp on top of it
    move = torch.tensor([[[0.95, 0.1, 0.05], [-0.1, 0.95, -0.03]]])
    moved = Conditioner.move_head_warp(theta, move)
    out_m = (cond.follow(moved)[:, :3] + 1) / 2
    body_m = (reach(moved[:, :2]) > 1 + grow) & (reach(moved[:, 2:]) > 1 + grow)
    assert body_m.sum() > 100
    assert float((out_m - warp(reference, move)).abs().amax(1)[body_m].max()) < 1e-5
    # the model needs the head warp to fade
    with pytest.raises(ValueError, match="follow_head"):
        VideoNetConfig(still_body=0.5).validate()


def test_a_moved_person_lands_where_the_moved_rig_draws_it():
    """move_person moves the image's person by the same map move_in_image moves the rig: the
    moved person mask is the mask rendered from the moved parameters, the uncovered background
    comes from the plate, the rest of the background is the frame's own."""
    from portraitrig.edits import move_in_image
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    S = 64
    p = RigParams.neutral(fm, 2)
    p = p.replace(translation=p.translation + torch.tensor([[0.05, 0.0], [-0.05, 0.1]]))
    M, d = random_moves(2, torch.Generator().manual_seed(3), "cpu", 0.15, 20.0, 0.1)
    shift = p.translation + d - (M @ p.translation[..., None])[..., 0]
    mask = render_buffers(p, fm, size=S, names=("mask",))["mask"]
    want = render_buffers(move_in_image(p, M, shift), fm, size=S, names=("mask",))["mask"]
    g = torch.Generator().manual_seed(0)
    person = torch.rand(2, 3, S, S, generator=g)
    frame_bg, plate = torch.rand(2, 3, S, S, generator=g), torch.rand(1, 3, S, S, generator=g)
    image = person * mask + frame_bg * (1 - mask)
    out, m = move_person(image, mask, plate, image_theta(M, shift))
    for i in range(2):
        a, b = m[i, 0] > 0.5, want[i, 0] > 0.5
        assert (a & b).sum() / (a | b).sum() > 0.93, i
    still = (m < 1e-6) & (mask < 1e-6)          # background before and after
    uncovered = (m < 1e-6) & (mask > 1 - 1e-6)   # the person left it
    assert int(uncovered.sum()) > 20
    torch.testing.assert_close(out * still, frame_bg * still)
    torch.testing.assert_close(out * uncovered, plate.expand(2, -1, -1, -1) * uncovered)
    # no move: the frame comes back where the mask is 0 or 1
    same, m0 = move_person(image, mask, plate, image_theta(torch.eye(2).expand(2, 2, 2), torch.zeros(2, 2)))
    hard = ((mask < 1e-6) | (mask > 1 - 1e-6)).expand_as(image)
    torch.testing.assert_close(same[hard], image[hard], atol=1e-5, rtol=0)
    # the moves stay in their ranges and are seeded
    M2, d2 = random_moves(500, torch.Generator().manual_seed(1), "cpu", 0.06, 8.0, 0.05)
    k = torch.linalg.det(M2).sqrt()
    ang = torch.rad2deg(torch.atan2(M2[:, 1, 0], M2[:, 0, 0]))
    assert float(d2.abs().max()) <= 0.06 and float(ang.abs().max()) <= 8.0 + 1e-4 and float(ang.abs().max()) > 7
    assert float((k - 1).abs().max()) <= 0.05 + 1e-6
    torch.testing.assert_close(random_moves(3, torch.Generator().manual_seed(1), "cpu", 0.06, 8.0, 0.05)[0], M2[:3])


def test_background_plate_is_the_background_seen_behind_the_moving_person():
    S = 16
    g = torch.Generator().manual_seed(0)
    bg = torch.randint(0, 256, (3, S, S), generator=g).to(torch.uint8)
    frames, masks = [], []
    for i in range(9):
        m = torch.zeros(1, S, S)
        m[:, 4:12, i:i + 5] = 1                      # a person walking across
        m[:, 14:, :] = 1                             # and a body always at the bottom
        person = torch.randint(0, 256, (3, S, S), generator=g).to(torch.uint8)
        frames.append(torch.where(m.bool(), person, bg))
        masks.append(m)
    images, masks = torch.stack(frames), torch.stack(masks)
    plate = background_plate(images, masks)
    seen = ~(masks.bool().sum(0) >= 9 - 2)[0]        # background in at least 3 frames
    torch.testing.assert_close(plate[0][:, seen], bg[:, seen].float() / 255)
    never = masks.bool().all(0)[0]
    torch.testing.assert_close(plate[0][:, never], images[:, :, never].float().median(0).values / 255)


@pytest.mark.parametrize("still_body,retrieve", [(0.0, 0), (0.3, 0), (0.3, 4)])
def test_move_augmentation_conditions_on_the_moved_rig(tmp_path, still_body, retrieve):
    """With move_augment 1, every item's input is made from the rig moved by the item's map
    and its target is the moved person; the same generator gives the same batch. With
    still_body the head's map is the moved rig's, the body's the whole person's move; with a
    retrieval bank the retrieved frame moves with the person too."""
    from portraitrig.edits import move_in_image
    from portraitrig.methods.video.condition import Conditioner, warp

    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    cfg.model.still_body, cfg.model.retrieve = still_body, retrieve
    cfg.light_augment, cfg.move_augment, cfg.move_shift, cfg.move_roll = 0.0, 1.0, 0.2, 15.0
    m = VideoMethod(cfg, data, "cpu", say=None)
    idx = torch.tensor([1, 4, 6])
    light = m.params.light[idx]
    x0, t0 = m.inputs(idx, light), m.images[idx].float() / 255
    m0 = m.masks[idx].float()
    x, t, mk = m.move(idx, light, x0, t0, m0, torch.Generator().manual_seed(7))
    x2, t2, mk2 = m.move(idx, light, x0, t0, m0, torch.Generator().manual_seed(7))
    torch.testing.assert_close(x, x2)
    torch.testing.assert_close(t, t2)
    torch.testing.assert_close(mk, mk2)
    assert not torch.allclose(x, x0) and not torch.allclose(t, t0) and not torch.allclose(mk, m0)
    # rebuild the input and the target of the items from the drawn maps
    g = torch.Generator().manual_seed(7)
    torch.rand(3, generator=g)
    M, d = random_moves(3, g, "cpu", cfg.move_shift, cfg.move_roll, cfg.move_scale)
    c = m.params.translation[idx]
    shift = c + d - (M @ c[..., None])[..., 0]
    theta = image_theta(M, shift)
    W = cfg.model.window
    win = Conditioner.window_index(idx, W)
    faces = m.cond.move_faces(m.faces[win.reshape(-1)], theta.repeat_interleave(W, 0))
    now = faces[W - 1::W]
    head = Conditioner.move_head_warp(m.heads[idx], theta)
    ret = warp(m.retrieved(m.bank_picks(idx), light), theta) if retrieve else None
    want = m.cond.inputs(faces, torch.arange(3 * W).view(3, W), m.cond.prior_normals(now, head), light,
                         m.cond.cond_mask(now), head, ret)
    torch.testing.assert_close(x, want, atol=1e-5, rtol=0)
    # ... which is what the rig moved by move_in_image shows the network
    moved = move_in_image(m.params[win.reshape(-1)], M.repeat_interleave(W, 0), shift.repeat_interleave(W, 0))
    assert head.shape == (3, 4 if still_body else 2, 3)
    torch.testing.assert_close(Conditioner.move_head_warp(m.heads[idx], theta)[:, :2],
                               m.cond.head_warp(moved[torch.arange(W - 1, 3 * W, W)])[:, :2], atol=1e-4, rtol=0)
    if still_body:
        torch.testing.assert_close(head[:, 2:], theta)   # the body moves with the whole person
    target, person = move_person(t0, m.masks[idx], m.plate, image_theta(M, shift))
    torch.testing.assert_close(t, target)
    torch.testing.assert_close(mk, person)   # the matte's target moves with the person
    if retrieve:   # the moved items keep the retrieved frames given them (the loss's, drawn per item)
        other = torch.zeros_like(m.retrieved(m.bank_picks(idx), light))
        xo, _, _ = m.move(idx, light, x0, t0, m0, torch.Generator().manual_seed(7), retrieved=other)
        torch.testing.assert_close(xo[:, -3:], torch.full_like(xo[:, -3:], -1.0))
        torch.testing.assert_close(xo[:, :-3], x[:, :-3])
    # a step of training with it runs and gives a finite loss
    loss, _ = m.loss(m.model, idx, 0, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss)
    cfg.move_augment = 0.0
    assert VideoMethod(cfg, data, "cpu", say=None).plate is None
    with pytest.raises(ValueError, match="move_augment"):
        Config(move_augment=1.5).validate()


def test_relit_targets_spare_the_face_mesh_from_the_smoothing(tmp_path, monkeypatch):
    """The relit training targets are made with the items' own face-mesh masks (relight_image's
    face_mask: the ratio inside the mesh left unsmoothed), the frames' lights and the drawn ones."""
    import portraitrig.methods.video.method as vm

    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    cfg.light_augment, cfg.move_augment = 1.0, 0.0
    m = VideoMethod(cfg, data, "cpu", say=None)
    seen, original = {}, vm.relight_image

    def spy(image, normals, person, old, new, **kw):
        seen.update(old=old, new=new, **kw)
        return original(image, normals, person, old, new, **kw)

    monkeypatch.setattr(vm, "relight_image", spy)
    idx = torch.tensor([0, 3, 5])
    m.loss(m.model, idx, 0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(seen["face_mask"], m.cond.face_mask(m.faces[idx]).float())
    assert 0 < float(seen["face_mask"].mean()) < 1
    torch.testing.assert_close(seen["old"], m.params.light[idx])
    g = torch.Generator().manual_seed(2)
    torch.rand(3, generator=g)
    torch.testing.assert_close(seen["new"], random_lights(m.params.light[idx], g))


def test_share_count_gives_the_share_exactly_over_steps():
    """The moved items per step: floor((s+1) n p) - floor(s n p), so any run of steps moves the
    share of its items up to one item, and each step moves one of the two nearest counts."""
    from portraitrig.methods.video.method import share_count

    counts = [share_count(s, 8, 0.3) for s in range(1000)]
    assert set(counts) == {2, 3} and sum(counts) == 2400
    assert abs(sum(counts[137:437]) - 0.3 * 8 * 300) <= 1
    assert [share_count(s, 3, 1.0) for s in range(4)] == [3, 3, 3, 3]
    assert [share_count(s, 8, 0.0) for s in range(4)] == [0, 0, 0, 0]


def test_compiled_loss_matches_the_eager_loss(tmp_path):
    """With train.compile the method's image loss is compiled: same loss and gradient."""
    data = VideoData.load(video.tiny_data(tmp_path))
    cfg = video.PRESETS["tiny"]()
    cfg.train.compile = True
    m = VideoMethod(cfg, data, "cpu", say=None)
    assert m.image_loss is not image_loss
    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    b = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (m.image_loss, image_loss):
        total, parts = fn(a, b, cfg.ssim_weight, cfg.grad_weight)
        grads.append((total.detach(), torch.autograd.grad(total, a)[0]))
        assert set(parts) == {"l1", "ssim", "grad"}
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-4)
    cfg.train.compile = False
    assert VideoMethod(cfg, data, "cpu", say=None).image_loss is image_loss


def test_closed_form_inverse_matches_linalg():
    from portraitrig.methods.video.method import inverse_2x2

    M, _ = random_moves(64, torch.Generator().manual_seed(4), "cpu", 0.1, 30.0, 0.2)
    torch.testing.assert_close(inverse_2x2(M), torch.linalg.inv(M), atol=1e-6, rtol=1e-5)


def test_padding_beyond_the_frame_is_taught_the_median_frame(tmp_path):
    """Where the fixed crop reaches past the video frame (mirrored padding that no output
    shows), the training target is the median training frame; inside it, the frame."""
    import dataclasses

    data = VideoData.load(video.tiny_data(tmp_path))
    S = data.size
    cfg = video.PRESETS["tiny"]()
    cfg.light_augment, cfg.move_augment = 0.0, 0.0
    assert bool(data.in_frame().all()) and VideoMethod(cfg, data, "cpu", say=None).padding is None
    w = S * 5 // 8   # a frame narrower than the crop: its right part is padding
    narrow = dataclasses.replace(data, crop=Crop(np.array([[1.0, 0, 0], [0, 1.0, 0]]), S, (w, S)))
    inside = narrow.in_frame()
    assert inside.shape == (1, 1, S, S) and bool(inside[..., :w].all()) and not bool(inside[..., w:].any())
    m = VideoMethod(cfg, narrow, "cpu", say=None)
    idx = torch.tensor([0, 3])
    out = torch.rand(2, 4, S, S, generator=torch.Generator().manual_seed(0))
    loss, parts = m.loss(lambda x: out, idx, 0, torch.Generator().manual_seed(1))
    frames = m.images[idx].float() / 255
    want, _ = image_loss(out[:, :3], torch.where(inside, frames, median_frame(m.images)), cfg.ssim_weight,
                         cfg.grad_weight)
    matte = (out[:, 3:] - m.masks[idx].float() * inside).abs().mean()   # no person in the padding
    torch.testing.assert_close(parts["matte"], matte)
    torch.testing.assert_close(loss, want + cfg.matte_weight * matte)
    mirrored, _ = image_loss(out[:, :3], frames, cfg.ssim_weight, cfg.grad_weight)
    assert abs(float(mirrored) - float(want)) > 1e-4   # the synthetic clip moves a little in the padding


def test_moved_face_buffers_are_the_buffers_of_the_moved_rig():
    """Conditioner.move_faces (the banked buffers resampled, normals turned) gives what the
    rasterizer draws for the rig moved by move_in_image: the same mask, normals and uv."""
    from portraitrig.edits import move_in_image
    from portraitrig.methods.video.condition import Conditioner

    fm = load_default_model()
    S = 96
    cfg = VideoNetConfig(image_size=S, buffers=("normal", "mask", "uv"), widths=(8, 16), window=1)
    cond = Conditioner(cfg, "cpu", fm)
    p = RigParams.neutral(fm, 3).replace(rotation=torch.tensor([[0.1, 0.3, 0.0], [-0.1, -0.2, 0.1], [0.0, 0.1, -0.05]]))
    M, d = random_moves(3, torch.Generator().manual_seed(2), "cpu", 0.1, 15.0, 0.08)
    shift = p.translation + d - (M @ p.translation[..., None])[..., 0]
    got = cond.move_faces(cond.face(p), image_theta(M, shift))
    want = cond.face(move_in_image(p, M, shift))
    sl = cond.slices
    a, b = cond.face_mask(got) > 0.5, cond.face_mask(want) > 0.5
    assert float((a & b).sum() / (a | b).sum()) > 0.95
    inner = (a & b)[:, 0]
    for name, tol in (("normal", 0.03), ("uv", 0.03)):
        diff = (got[:, sl[name]] - want[:, sl[name]]).abs().mean(1)
        assert float(diff[inner].mean()) < tol, name
    # the roll turns the normals: a 20-degree turn left unturned is off several times as much
    th = torch.deg2rad(torch.tensor(20.0))
    R = torch.stack([torch.stack([th.cos(), -th.sin()]), torch.stack([th.sin(), th.cos()])]).expand(3, 2, 2)
    theta = image_theta(R, p.translation - (R @ p.translation[..., None])[..., 0])
    want = cond.face(move_in_image(p, R, p.translation - (R @ p.translation[..., None])[..., 0]))
    grid = torch.nn.functional.affine_grid(theta, [3, 1, S, S], align_corners=False)
    unturned = torch.nn.functional.grid_sample(cond.face(p), grid, mode="nearest", padding_mode="border",
                                               align_corners=False)
    inner = ((cond.face_mask(want) > 0.5) & (cond.face_mask(unturned) > 0.5))[:, 0]
    n = sl["normal"]
    xy = slice(n.start, n.start + 2)

    def err(f):
        return float((f[:, xy] - want[:, xy]).abs().mean(1)[inner].mean())

    assert err(unturned) > 2.5 * err(cond.move_faces(cond.face(p), theta))


def test_drawn_mask_follows_the_head():
    """Where the renderer may draw the person: the prior and the face mesh, and (follow_head)
    the prior moved with the head, so a reenacted head moved aside keeps its hair."""
    from portraitrig.edits import move_in_image
    from portraitrig.methods.video.condition import Conditioner
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    S = 64
    mean = RigParams.neutral(fm, 1)
    prior = torch.nn.functional.max_pool2d(render_buffers(mean, fm, size=S, names=("mask",))["mask"], 9, 1, 4)
    moved = move_in_image(mean, torch.eye(2), torch.tensor([0.4, 0.0]))        # a fifth of the crop to the right
    for follow in (True, False):
        cfg = VideoNetConfig(image_size=S, buffers=("normal", "mask", "uv"), widths=(8, 16), window=1,
                             follow_head=follow)
        cond = Conditioner(cfg, "cpu", fm)
        cond.set_prior(prior, torch.rand(1, 3, S, S), Conditioner.mean_head_pose(mean))
        face = cond.face(moved)
        head = cond.head_warp(moved) if follow else torch.tensor([[[1.0, 0.0, -0.4], [0.0, 1.0, 0.0]]])
        drawn = cond.drawn_mask(face, head)                               # without follow_head: no warp
        base = cond.cond_mask(face)
        assert bool((drawn >= base - 1e-6).all())
        want = torch.roll(prior, S // 5, dims=3) > 0.5                    # the prior where the head went
        if follow:
            assert float((drawn[want > 0] > 0.5).float().mean()) > 0.97
            assert float((base[want > 0] > 0.5).float().mean()) < 0.9     # the unmoved mask misses part of it
        else:
            torch.testing.assert_close(drawn, base.float())


def test_turn_normals_turns_a_warped_proxy_as_the_image_turned():
    """An inflated silhouette's normals, warped by a rotation and shift and turned with it, match
    the normals inflated from the warped silhouette; unturned (or turned the other way) they do not."""
    from portraitrig.methods.video.condition import turn_normals, warp
    from portraitrig.render.portrait import angular_error_deg, inflated_normals

    S = 64
    y, x = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
    blob = (((x / 0.35) ** 2 + ((y - 0.1) / 0.6) ** 2) < 1).float()[None, None]
    a = math.radians(25)
    theta = torch.tensor([[[math.cos(a), -math.sin(a), 0.1], [math.sin(a), math.cos(a), -0.05]]])
    moved = warp(blob, theta, padding="zeros") > 0.5
    want = inflated_normals(moved)
    n = warp(inflated_normals(blob > 0.5), theta, padding="zeros")
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-6)
    both = moved & (want.norm(dim=1, keepdim=True) > 0.5)
    err = {name: float(angular_error_deg(v, want)[both].mean()) for name, v in (
        ("turned", turn_normals(n, theta)), ("unturned", n),
        ("wrong way", turn_normals(n, torch.cat([theta[:, :, :2].transpose(1, 2), theta[:, :, 2:]], 2))))}
    assert err["turned"] < 4 and err["unturned"] > 3 * err["turned"] and err["wrong way"] > 6 * err["turned"], err


def test_proxy_normals_follow_the_head():
    """With proxy_follows_head, a head moved aside gets whole-portrait normals over the prior moved
    with it (hair and skin just past the mesh border keep their shading); without, the unmoved
    prior leaves a hole there. The option needs the head warps, and follow_head."""
    from portraitrig.edits import move_in_image
    from portraitrig.methods.video.condition import Conditioner
    from portraitrig.render.buffers import render_buffers

    fm = load_default_model()
    S = 64
    mean = RigParams.neutral(fm, 1)
    prior = torch.nn.functional.max_pool2d(render_buffers(mean, fm, size=S, names=("mask",))["mask"], 9, 1, 4)
    moved = move_in_image(mean, torch.eye(2), torch.tensor([0.4, 0.0]))        # a fifth of the crop to the right
    want = torch.roll(prior, S // 5, dims=3) > 0.5                            # the prior where the head went
    want = -torch.nn.functional.max_pool2d(-want.float(), 5, 1, 2) > 0.5      # a 2-px margin for the resampling
    cover, still = {}, {}
    for follows in (True, False):
        cfg = VideoNetConfig(image_size=S, buffers=("normal", "mask", "uv"), widths=(8, 16), window=1,
                             follow_head=True, proxy_follows_head=follows)
        cond = Conditioner(cfg, "cpu", fm)
        cond.set_prior(prior, torch.rand(1, 3, S, S), Conditioner.mean_head_pose(mean))
        face = cond.face(moved)
        n = cond.prior_normals(face, cond.head_warp(moved))
        cover[follows] = float((n.norm(dim=1, keepdim=True)[want] > 0.5).float().mean())
        if follows:
            with pytest.raises(ValueError, match="head warps"):
                cond.prior_normals(face)
        # the unmoved head: both ways give the same normals (up to the resampling)
        still[follows] = cond.prior_normals(cond.face(mean), cond.head_warp(mean))
    assert cover[True] > 0.99 and cover[False] < 0.95, cover
    assert float((still[True] - still[False]).norm(dim=1).mean()) < 0.02
    with pytest.raises(ValueError, match="follow_head"):
        VideoNetConfig(proxy_follows_head=True).validate()


def test_input_shading_is_smoothed_along_the_mesh_border_only():
    """shading_band: the network's input shading is smoothed along the face mesh border (where the
    mesh's normals meet the proxy's; the seam measure drops) and left as it is deeper inside the
    mesh; 0 feeds it as it is."""
    from portraitrig.methods.video.condition import Conditioner
    from portraitrig.render.buffers import render_buffers
    from portraitrig.render.portrait import _erode, portrait_shading, seam_score

    fm = load_default_model()
    S = 64
    p = RigParams.neutral(fm, 2)
    prior = torch.nn.functional.max_pool2d(render_buffers(p[:1], fm, size=S, names=("mask",))["mask"], 15, 1, 7)
    light = torch.zeros(2, 9, 3)
    light[:, 0], light[:, 3] = 2.0, torch.tensor([0.6, -0.6])[:, None]      # from one side, from the other
    xs = {}
    for band in (0.0, 1 / 16):
        cfg = VideoNetConfig(image_size=S, buffers=("normal", "mask", "uv"), widths=(8, 16), window=1,
                             shading_band=band)
        cond = Conditioner(cfg, "cpu", fm)
        cond.set_prior(prior)
        face = cond.face(p)
        normals = cond.prior_normals(face)
        x = cond.inputs(face, torch.arange(2)[:, None], normals, light, cond.cond_mask(face))
        C = cfg.buffer_channels
        xs[band] = x[:, C:C + 3]
    fmask = cond.face_mask(face)
    torch.testing.assert_close(xs[0.0], portrait_shading(normals, light))
    deep = _erode((fmask > 0.5).float(), 8) > 0
    torch.testing.assert_close(xs[1 / 16][deep.expand(-1, 3, -1, -1)], xs[0.0][deep.expand(-1, 3, -1, -1)])
    person = (prior > 0.5).float().expand(2, -1, -1, -1)
    raw, soft = (seam_score(xs[b], fmask, person) for b in (0.0, 1 / 16))
    assert bool((soft < 0.8 * raw).all()), (raw, soft)
    assert bool((xs[1 / 16][(normals.norm(dim=1, keepdim=True) < 0.5).expand(-1, 3, -1, -1)] == 0).all())


def test_adversarial_terms_train_a_critic_beside_the_renderer_and_resume_exactly(tmp_path):
    """The optional patch critic: off in the presets; on, the renderer's loss has its terms from
    ``adv_start`` of the steps, the shared loop trains the critic, a killed run resumes to the same
    weights, and the exported model folder is the renderer alone."""
    from portraitrig.methods.video.model import PatchCritic
    from portraitrig.training import checkpoint as ck
    from portraitrig.training.loop import train

    assert all(make().adversarial == 0 and make().feature_matching == 0 for make in video.PRESETS.values())
    data = VideoData.load(video.tiny_data(tmp_path))

    def method(adv=True):
        cfg = video.PRESETS["tiny"]()
        cfg.train.steps, cfg.train.log_every = 6, 1
        if adv:
            cfg.adversarial, cfg.feature_matching, cfg.adv_start = 0.05, 1.0, 0.5
        torch.manual_seed(0)
        return VideoMethod(cfg, data, "cpu", say=None), cfg

    plain, _ = method(adv=False)
    assert plain.critic is None
    m, cfg = method()
    assert isinstance(m.critic, PatchCritic)
    assert [m.adversarial_weight(s) for s in (0, 2, 3)] == [0.0, 0.0, 1 / 500]   # from step 3 of 6, ramped
    critic0 = {k: v.clone() for k, v in m.critic.state_dict().items()}
    train(m, cfg.train, tmp_path / "a", progress=False)
    logs = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert ["fm" in r and "critic_loss" in r for r in logs] == [False] * 3 + [True] * 3
    assert all(r["critic_loss"] > 0 and r["fm"] > 0 for r in logs[3:])
    t, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "a", 6))
    assert any(not torch.equal(t[f"critic.{k}"], v) for k, v in critic0.items())
    # the exported model is the renderer alone: the same parameters as one trained without a critic
    train(plain, plain.config.train, tmp_path / "p", progress=False)
    from safetensors import safe_open

    from portraitrig.neural.modelio import WEIGHTS

    def names(d):
        with safe_open(str(d / "model" / WEIGHTS), "pt") as f:
            return set(f.keys())
    assert names(tmp_path / "a") == names(tmp_path / "p") and not any("critic" in k for k in names(tmp_path / "a"))
    # killed after the critic started, resumed: the same weights
    m2, cfg2 = method()
    train(m2, cfg2.train, tmp_path / "b", progress=False, stop_after=4)
    m3, cfg3 = method()
    train(m3, cfg3.train, tmp_path / "b", progress=False)
    wb, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "b", 6))
    keys = [k for k in t if not k.startswith("rng.")]
    assert all(torch.equal(t[k], wb[k]) for k in keys)
    with pytest.raises(ValueError):
        Config(adversarial=-1.0).validate()


def test_two_processes_train_the_renderer_and_its_critic(tmp_path):
    """DDP (`torchrun --nproc_per_node 2`, gloo on a CPU) with the critic on from the first step:
    the critic called unwrapped in the renderer's step and wrapped by DDP for its own; both steps
    logged, and rank 0's checkpoint holds the critic and its optimizer."""
    import subprocess
    import sys

    from portraitrig.training import checkpoint as ck

    data = video.tiny_data(tmp_path)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "portraitrig.cli", "train", "video", str(data), "-o", str(run), "--preset", "tiny", "--device", "cpu",
           "--steps", "3", "--adversarial", "0.05", "--feature-matching", "0.5", "--adv-start", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs] == [1, 2, 3] and all("critic_loss" in x and "fm" in x for x in logs)
    t, header = ck.load_checkpoint(ck.checkpoint_path(run, 3))
    assert header["extra"]["world_size"] == 2 and header["critic_optimizer"] is not None
    assert any(k.startswith("critic.") for k in t) and (run / "model" / "model.safetensors").is_file()


def test_retrieval_bank_gives_each_frame_its_nearest_training_frame(tmp_path):
    """``model.retrieve``: the model keeps that many training frames (evenly spaced) and their
    landmark keys; a training item gets the nearest bank frame by key outside its own time
    neighbourhood, a rendered frame the nearest of all (a bank frame's own rig retrieves
    itself); with several gaps, training draws one per item; the retrieved frame is an input,
    and the bank travels with the model folder."""
    from portraitrig.methods.video.condition import Conditioner

    data = VideoData.load(video.tiny_data(tmp_path, n=12))
    cfg = video.PRESETS["tiny"]()
    cfg.model.retrieve = 5
    assert cfg.model.in_channels == video.PRESETS["tiny"]().model.in_channels + 3
    m = VideoMethod(cfg, data, "cpu", say=None)
    n = data.n_train
    src = torch.linspace(0, n - 1, 5).round().long()
    keys = m.cond.retrieval_keys(m.params)
    torch.testing.assert_close(m.model.bank_keys, keys[src])
    inside = data.in_frame()[0, 0] > 0.5
    assert torch.equal(m.model.bank[:, :, inside], m.images[src][:, :, inside])   # the padding: the median frame
    assert cfg.retrieve_gaps == (12, 25, 50, 100) and m.picks.shape == (4, n, 1)

    def check(picks, gap):
        for t in range(n):
            allowed = [j for j in range(5) if abs(int(src[j]) - t) > gap]
            d = [float((keys[t] - keys[src[j]]).norm()) for j in allowed]
            assert int(picks[t]) == allowed[int(np.argmin(d))]

    for row, g in zip(m.picks[..., 0], cfg.retrieve_gaps):
        check(row, min(g, n // 4))
    assert n // 4 >= 1
    # several gaps: a row of picks each; training draws a gap per item (the generator's), the
    # samples and the default input take the first
    cfg.retrieve_gaps = (0, 2)
    mg = VideoMethod(cfg, data, "cpu", say=None)
    assert mg.picks.shape == (2, n, 1)
    check(mg.picks[0, :, 0], 0)
    check(mg.picks[1, :, 0], 2)
    assert not torch.equal(mg.picks[0], mg.picks[1])
    every = torch.arange(n).repeat(20)
    drawn = mg.bank_picks(every, torch.Generator().manual_seed(5))
    assert drawn.shape == (len(every), 1)
    drawn, picks = drawn[:, 0], mg.picks[..., 0]
    row = (drawn == picks[1, every]) & (drawn != picks[0, every])
    assert ((drawn == picks[0, every]) | (drawn == picks[1, every])).all()
    assert row.any() and ((drawn == picks[0, every]) & (picks[0, every] != picks[1, every])).any()
    assert torch.equal(drawn, mg.bank_picks(every, torch.Generator().manual_seed(5))[:, 0])
    assert torch.equal(mg.bank_picks(every), mg.picks[0, every])
    loss, _ = mg.loss(mg.model, torch.tensor([0, 3, 5]), 0, torch.Generator().manual_seed(2))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="retrieve_gaps"):
        Config(retrieve_gaps=()).validate()
    with pytest.raises(ValueError, match="retrieve_gaps"):
        Config(retrieve_gaps=(-1,)).validate()
    # everything left out: the nearest of all
    assert Conditioner.nearest(keys[:1], keys[src], torch.ones(1, 5, dtype=torch.bool)).item() == 0
    assert torch.equal(m.model.bank_index, src)
    # the input holds the item's retrieved frame (as 2x - 1 in its last 3 channels), relit from
    # the bank frame's own light to the item's as the relit targets are
    from portraitrig.render.portrait import relight_image

    idx = torch.tensor([0, 3])
    j = src[m.picks[0, idx, 0]]
    lit = random_lights(m.params.light[idx], torch.Generator().manual_seed(3))
    x = m.inputs(idx, lit)
    want = relight_image(m.images[j].float() / 255, m.normals_cond[j].float(), m.cond_masks[j].float(),
                         m.params.light[j], lit, face_mask=m.cond.face_mask(m.faces[j]).float())
    torch.testing.assert_close((x[:, -3:] + 1) / 2, want, atol=1e-5, rtol=0)
    assert float((want - m.images[j].float() / 255).abs().max()) > 1e-3   # another light: the relighting shows
    folder = m.export(scramble(m.model), tmp_path / "model")
    r = VideoRenderer.from_pretrained(folder)
    assert torch.equal(r.net.bank, m.model.bank) and torch.equal(r.net.bank_index, src)
    # a bank frame's own rig retrieves it, under its own light as it is ...
    torch.testing.assert_close(r.retrieve(data.params[src], data.params.light[src]), m.model.bank.float() / 255,
                               atol=1e-5, rtol=0)
    # ... and under another light relit as in training (its relighting made from the saved rigs)
    other = random_lights(data.params.light[src], torch.Generator().manual_seed(4))
    bl = m.bank_light
    torch.testing.assert_close(r.retrieve(data.params[src], other), bl.relight(m.model.bank, torch.arange(5), other),
                               atol=1e-4, rtol=0)
    a = r.render(data.params[2:6], context=data.params[:2])
    s = r.stream()
    s(data.params[:2])
    torch.testing.assert_close(s(data.params[2:6]), a)      # streamed as rendered
    with torch.no_grad():
        r.net.bank.copy_(255 - r.net.bank)
    assert float((r.render(data.params[2:6], context=data.params[:2]) - a).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="retrieve"):
        VideoNetConfig(retrieve=-1).validate()
    # a bank asked larger than the training frames holds each of them once, and says so in the
    # model's configuration (the caller's left as it was)
    big = video.PRESETS["tiny"]()
    big.model.retrieve = 256
    mb = VideoMethod(big, data, "cpu", say=None)
    assert mb.config.model.retrieve == n and mb.model.bank.shape[0] == n and big.model.retrieve == 256
    assert torch.equal(mb.model.bank_index, torch.arange(n))
    assert VideoRenderer.from_pretrained(mb.export(mb.model, tmp_path / "model_big")).config.retrieve == n


def test_nearest_spread_picks_the_nearest_then_other_moments():
    """``Conditioner.nearest_spread``: the nearest bank entry first, then each next one the
    nearest of those more than ``apart`` frames from every entry picked before it; entries left
    out stay out; with nothing far enough left, the nearest remaining (a repeat)."""
    from portraitrig.methods.video.condition import Conditioner

    bank = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]])      # keys on a line
    frames = torch.tensor([0, 1, 2, 20, 40, 41])                            # their video frames
    q = torch.tensor([[0.9], [10.2]])
    got = Conditioner.nearest_spread(q, bank, 3, frames, apart=2)
    # 0.9: entry 1 (frame 1); then not frames 0..3 -> entry 3 (frame 20, key 3); then entry 4 (frame 40)
    # 10.2: entry 4 (frame 40); then not 38..42 -> entry 3 (frame 20); then entry 2 (frame 2)
    assert got.tolist() == [[1, 3, 4], [4, 3, 2]]
    assert torch.equal(got[:, 0], Conditioner.nearest(q, bank))
    assert torch.equal(Conditioner.nearest_spread(q, bank, 1, frames, 2), Conditioner.nearest(q, bank)[:, None])
    # apart 0: the nearest entries in order
    assert Conditioner.nearest_spread(q, bank, 3, frames, 0).tolist() == [[1, 0, 2], [4, 5, 3]]
    # left out stays out; nothing far enough left: the nearest remaining again
    out = torch.tensor([[False, True, False, True, True, True]] * 2)
    assert Conditioner.nearest_spread(q, bank, 3, frames, 2, out).tolist() == [[0, 0, 0], [2, 2, 2]]
    far = torch.tensor([[False, True, True, False, True, True]] * 2)   # entries 0 (frame 0) and 3 (frame 20)
    assert Conditioner.nearest_spread(q, bank, 3, frames, 2, far).tolist() == [[0, 3, 3], [3, 0, 0]]


def test_retrieval_of_several_bank_frames_trains_and_renders(tmp_path):
    """``model.retrieve_count`` 2: the input holds two relit bank frames, the nearest and the
    nearest of another moment (more than ``retrieve_apart`` frames from it), each outside the
    training item's gap; the loss trains on it, and a renderer retrieves the same way from the
    saved model."""
    from portraitrig.methods.video.condition import Conditioner

    data = VideoData.load(video.tiny_data(tmp_path, n=16))
    cfg = video.PRESETS["tiny"]()
    cfg.model.retrieve, cfg.model.retrieve_count, cfg.model.retrieve_apart = 8, 2, 3
    cfg.retrieve_gaps = (0, 2)
    assert cfg.model.in_channels == video.PRESETS["tiny"]().model.in_channels + 6
    m = VideoMethod(cfg, data, "cpu", say=None)
    n = data.n_train
    src = m.model.bank_index
    keys = m.cond.retrieval_keys(m.params)
    assert m.picks.shape == (2, n, 2)
    for g, row in zip((0, 2), m.picks):
        for t in range(n):
            a, b = (int(src[j]) for j in row[t])
            assert abs(a - t) > g and abs(b - t) > g and abs(a - b) > 3
            allowed = [j for j in range(8) if abs(int(src[j]) - t) > g]
            d = [float((keys[t] - keys[src[j]]).norm()) for j in allowed]
            assert int(row[t, 0]) == allowed[int(np.argmin(d))]
            second = [j for j in allowed if abs(int(src[j]) - a) > 3]
            d2 = [float((keys[t] - keys[src[j]]).norm()) for j in second]
            assert int(row[t, 1]) == second[int(np.argmin(d2))]
    idx = torch.tensor([1, 4])
    lit = random_lights(m.params.light[idx], torch.Generator().manual_seed(3))
    x = m.inputs(idx, lit)
    assert x.shape[1] == cfg.model.in_channels
    for k in range(2):   # the k-th retrieved frame, relit, in its three channels
        want = m.bank_light.relight(m.model.bank[m.picks[0, idx, k]], m.picks[0, idx, k], lit)
        torch.testing.assert_close((x[:, x.shape[1] - 6 + 3 * k:x.shape[1] - 3 + 3 * k] + 1) / 2, want,
                                   atol=1e-5, rtol=0)
    opt = torch.optim.Adam(m.model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    batch = torch.arange(n)
    first = float(m.loss(m.model, batch, 0, torch.Generator().manual_seed(1))[0].detach())
    for step in range(25):
        loss, _ = m.loss(m.model, batch, step, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m.loss(m.model, batch, 0, torch.Generator().manual_seed(1))[0].detach()) < first
    r = VideoRenderer.from_pretrained(m.export(m.model, tmp_path / "model"))
    assert (r.config.retrieve_count, r.config.retrieve_apart) == (2, 3)
    p = data.params[n:]
    got = r.retrieve(p, p.light)
    pick = Conditioner.nearest_spread(r.cond.retrieval_keys(p), r.net.bank_keys, 2, r.net.bank_index, 3)
    assert got.shape == (len(p), 6, 32, 32)
    torch.testing.assert_close(got, r.bank_light().retrieved(r.net.bank, pick, p.light), atol=1e-5, rtol=0)
    assert r.render(p, context=data.params[:n]).shape == (len(p), 3, 32, 32)
    for bad in ({"retrieve_count": 0}, {"retrieve_count": 9}, {"retrieve_apart": -1}):
        with pytest.raises(ValueError, match="retrieve_count"):
            VideoNetConfig(**bad).validate()
