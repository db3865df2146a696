"""The reenactment job end to end on a generated synthetic 'talking' video (the rig's own
render of a face with a varying expression and pose, placed in a larger frame, with a tone as
its audio). MediaPipe does not find synthetic faces, so the training data is built from the
known RigParams, and driver videos / photos are fitted by a tracker that returns known answers."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from portraitrig.apps.reenactjob import (ReenactConfig, border_mask, light_path, paste_frame, run_reenact)
from portraitrig.capture.types import Crop
from portraitrig.config import to_dict
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.io.media import VideoWriter, read_audio
from portraitrig.io.video import iter_video_frames, video_info
from portraitrig.methods import video
from portraitrig.methods.video.data import crop_frame, from_frames
from portraitrig.methods.video.method import VideoMethod
from portraitrig.training.loop import train

FPS = 25
N = 10


def tone(seconds: float, rate: int = 16000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None]


def place(crops):
    """32 px crops in 64 x 48 frames (edge-padded), and that crop."""
    frames = [np.pad(c, ((8, 8), (16, 16), (0, 0)), mode="edge") for c in crops]
    return frames, Crop(np.array([[1.0, 0.0, -16.0], [0.0, 1.0, -8.0]]), 32, (64, 48))


def write_video(path, frames, audio=None):
    with VideoWriter(path, FPS, audio=None if audio is None else (audio, 16000), crf=10) as w:
        for f in frames:
            w.write(f)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reenact")
    crops, params, masks = video.synthetic_frames(N, 32)
    frames, crop = place(crops)
    target = write_video(tmp / "target.mp4", frames, tone(N / FPS))
    data = from_frames(crops, params, masks, fps=FPS, crop=crop, video=str(target))
    cfg = video.PRESETS["tiny"]()
    cfg.train.steps = 3
    folder = train(VideoMethod(cfg, data, "cpu", say=None), cfg.train, tmp / "run", config=to_dict(cfg),
                   progress=False)
    return SimpleNamespace(folder=folder, tmp=tmp, params=params, frames=frames, crop=crop, target=target)


def driver_params(n, seed=1):
    crops, params, _ = video.synthetic_frames(n, 32, seed=seed)
    return params


def test_params_driver_longer_than_target_loops_the_background(model, tmp_path):
    from portraitrig.eval.results import read_items

    drv = tmp_path / "drv.safetensors"
    driver_params(14).save(drv)
    s = run_reenact(model.folder, drv, tmp_path / "out", ReenactConfig(), progress=False, say=None)
    assert s.exit_code == 0 and s.frames == 14 and "looped" in s.background
    info = video_info(tmp_path / "out" / "result.mp4")
    assert (info.width, info.height) == (64, 48) and info.frame_count == 14 and not info.has_audio
    assert video_info(tmp_path / "out" / "compare.mp4").frame_count == 14
    assert len(RigParams.load(tmp_path / "out" / "params.safetensors")) == 14
    items, _ = read_items(tmp_path / "out")
    assert len(items) == 1 and items[0]["generated"].endswith("result.mp4")
    # outside the crop the target's frames are untouched (frame 12 shows target frame 2 again)
    out = [f.image for f in iter_video_frames(tmp_path / "out" / "result.mp4")]
    far = np.zeros((48, 64), bool)
    far[:, :6] = far[:, -6:] = True
    assert np.abs(out[12].astype(int) - model.frames[2].astype(int))[far].mean() < 6
    held = run_reenact(model.folder, drv, tmp_path / "hold", ReenactConfig(background="hold"), progress=False, say=None)
    assert "held" in held.background


def test_audio_of_the_target_is_muxed(model, tmp_path):
    drv = tmp_path / "drv.safetensors"
    driver_params(6).save(drv)
    s = run_reenact(model.folder, drv, tmp_path / "out", ReenactConfig(audio="target"), progress=False, say=None)
    assert s.audio.startswith("target")
    wave, rate = read_audio(tmp_path / "out" / "result.mp4")
    assert rate == 16000 and wave.shape[1] == pytest.approx(6 / FPS * rate, rel=0.1)
    assert float(np.abs(wave).max()) > 0.1


def test_driver_video_with_faceless_frames_and_its_audio(model, tmp_path):
    dp = driver_params(8, seed=3)
    frames, crop = place(video.synthetic_frames(8, 32, seed=3)[0])
    frames[2] = np.zeros_like(frames[2])                  # no face here
    path = write_video(tmp_path / "driver.mp4", frames, tone(8 / FPS, hz=660))

    class Tracker:
        def fit_video(self, p, max_frames=None):
            return [SimpleNamespace(source=f"{p}#frame={i}", crop=crop, params=dp[i]) for i in range(8) if i != 2]

    s = run_reenact(model.folder, path, tmp_path / "out", ReenactConfig(motion="absolute"), rigger=Tracker(),
                    progress=False, say=None)
    assert s.held_frames == 1 and s.frames == 8 and s.audio.startswith("driver")
    assert read_audio(tmp_path / "out" / "result.mp4") is not None
    p = RigParams.load(tmp_path / "out" / "driver_params.safetensors")
    torch.testing.assert_close(p.expression[2], p.expression[1])     # held
    out = RigParams.load(tmp_path / "out" / "params.safetensors")
    torch.testing.assert_close(out.expression, dp.expression[[0, 1, 1, 3, 4, 5, 6, 7]])   # absolute: copied


def test_photo_driver_folder_and_one_frame_driver(model, tmp_path):
    from portraitrig.io.atomic import write_image

    crops, params, _ = video.synthetic_frames(3, 32, seed=4)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, c in enumerate(crops):
        write_image(folder / f"p{i}.png", c)

    class Tracker:
        def fit_image(self, img, source):
            i = int(source[-5])
            if i == 1:
                raise InputError(source, "no face found")
            return SimpleNamespace(source=source, crop=Crop(np.eye(2, 3), 32, (32, 32)), params=params[i])

    s = run_reenact(model.folder, folder, tmp_path / "out", ReenactConfig(), rigger=Tracker(), progress=False, say=None)
    assert s.held_frames == 1 and s.frames == 3
    one = tmp_path / "one.safetensors"
    params[0].save(one)
    s1 = run_reenact(model.folder, one, tmp_path / "one", ReenactConfig(), progress=False, say=None)
    assert s1.frames == N and any("one-frame" in n for n in s1.notes)


def test_self_drive_relights_over_time(model, tmp_path):
    s = run_reenact(model.folder, None, tmp_path / "out", ReenactConfig(self_drive=True, light="left", light_orbit=0.2),
                    progress=False, say=None)
    assert s.frames == N
    lights = RigParams.load(tmp_path / "out" / "params.safetensors").light
    assert not torch.allclose(lights[0], lights[2])
    assert torch.allclose(lights[0], lights[5], atol=1e-4)       # 5 frames = 0.2 s: one orbit
    plain = run_reenact(model.folder, None, tmp_path / "plain", ReenactConfig(self_drive=True), progress=False,
                        say=None)
    import json

    item = json.loads((tmp_path / "plain" / "manifest.json").read_text())["items"][0]
    assert item["reference"].endswith("target.mp4") and plain.frames == N


def test_self_drive_follows_another_videos_light(model, tmp_path):
    from portraitrig.light import sh

    n = 6
    lp = driver_params(n, seed=5)
    lp = lp.replace(light=torch.stack([sh.light_from_direction(torch.tensor([a, 10.0])) for a in
                                       np.linspace(-80, 80, n)]).to(lp.light))
    frames, crop = place(video.synthetic_frames(n, 32, seed=5)[0])
    frames[3] = np.zeros_like(frames[3])                                 # no face: its light is held
    path = write_video(tmp_path / "light.mp4", frames)

    class Tracker:
        def fit_video(self, p, max_frames=None):
            return [SimpleNamespace(source=f"{p}#frame={i}", crop=crop, params=lp[i]) for i in range(n) if i != 3]

    s = run_reenact(model.folder, None, tmp_path / "out", ReenactConfig(self_drive=True, light=str(path),
                    absolute_light=True), rigger=Tracker(), progress=False, say=None)
    assert s.frames == N and s.exit_code == 0
    assert any("light.mp4: 6 frames at 25 fps" in m and "final 4 frame(s)" in m for m in s.notes)
    assert any("1 frame(s) without a face" in m for m in s.notes)
    got = RigParams.load(tmp_path / "out" / "params.safetensors").light
    want = lp.light[[0, 1, 2, 2, 4, 5, 5, 5, 5, 5]]                      # frame 3 held, then the last held
    torch.testing.assert_close(got, want.to(got), atol=1e-4, rtol=1e-4)
    assert (tmp_path / "out" / "result.mp4").is_file()


def test_background_gain_and_relight():
    from portraitrig.apps.reenactjob import background_gain, relight_background
    from portraitrig.light import sh

    old = sh.preset("front")[None].expand(3, 9, 3)
    new = old * torch.tensor([2.0, 1.0, 0.5])                       # brighter red, darker blue
    np.testing.assert_allclose(background_gain(new, old), [[2.0, 1.0, 0.5]] * 3, rtol=1e-5)
    np.testing.assert_allclose(background_gain(old * 100, old), 8.0)  # within the limit
    frame = np.full((4, 6, 3), 100, np.uint8)
    person = np.zeros((4, 6), np.float32)
    person[:, :3] = 1
    out = relight_background(frame, person, np.array([2.0, 1.0, 0.5], np.float32))
    assert (out[:, :3] == 100).all() and (out[:, 3:] == [200, 100, 50]).all()


def test_background_takes_the_new_light_when_asked(model, tmp_path):
    from portraitrig.apps.reenactjob import background_gain

    runs = {}
    for mode in ("keep", "match"):
        cfg = ReenactConfig(self_drive=True, light="0,60", absolute_light=True, background_light=mode, crf=0)
        runs[mode] = run_reenact(model.folder, None, tmp_path / mode, cfg, progress=False, say=None)
        assert runs[mode].frames == N
    assert any("background relit" in m for m in runs["match"].notes)
    keep = np.stack([f.image for f in iter_video_frames(tmp_path / "keep" / "result.mp4")]).astype(np.float32)
    match = np.stack([f.image for f in iter_video_frames(tmp_path / "match" / "result.mp4")]).astype(np.float32)
    out = RigParams.load(tmp_path / "match" / "params.safetensors").light
    gain = background_gain(out, model.params.light[:N])                 # from the target's own lights
    assert np.abs(gain - 1).max() > 0.1                                  # the light from above changes the wall
    far = (slice(None), slice(0, 6), slice(None))                        # left of the crop: background only
    ratio = match[far].mean((1, 2)) / np.maximum(keep[far].mean((1, 2)), 1)
    expect = np.minimum(gain * keep[far].mean((1, 2)), 255) / np.maximum(keep[far].mean((1, 2)), 1)
    np.testing.assert_allclose(ratio, expect, atol=0.06)


def test_light_path():
    base = RigParams.neutral(__import__("portraitrig.face.model", fromlist=["x"]).load_default_model(), 8).light
    assert light_path(base, ReenactConfig(), 4) is base
    fixed = light_path(base, ReenactConfig(light="30,10"), 4)
    torch.testing.assert_close(fixed[0], fixed[7])
    half = light_path(base, ReenactConfig(light="left", light_strength=0.0), 4)
    torch.testing.assert_close(half, base)
    with pytest.raises(InputError, match="AZ,EL"):
        light_path(base, ReenactConfig(light="a,b"), 4)


def test_light_turns_at_the_asked_rate_and_follows_a_light_video(tmp_path):
    from portraitrig.light import sh

    base = RigParams.neutral(__import__("portraitrig.face.model", fromlist=["x"]).load_default_model(), 12).light
    orbit = light_path(base, ReenactConfig(light="left", light_orbit=2.0, absolute_light=True), 6)
    turn = light_path(base, ReenactConfig(light="left", env_rotate=180.0, absolute_light=True), 6)
    torch.testing.assert_close(orbit, turn)                       # one turn per 2 s = 180 degrees per second
    back = light_path(base, ReenactConfig(light="left", env_rotate=-180.0, absolute_light=True), 6)
    torch.testing.assert_close(back[6], turn[6], atol=1e-5, rtol=0)   # half a turn either way: the same
    assert not torch.allclose(back[3], turn[3], atol=1e-3)           # a quarter: mirror images
    torch.testing.assert_close(turn[0], sh.preset("left").to(turn))
    with pytest.raises(ValueError, match="not both"):
        ReenactConfig(light_orbit=2.0, env_rotate=10.0).validate()
    # a light video of 5 frames at 2.5 fps (2 s), played against 18 output frames at 6 fps (3 s): then held
    base = RigParams.neutral(__import__("portraitrig.face.model", fromlist=["x"]).load_default_model(), 18).light
    lights = torch.stack([sh.light_from_direction(torch.tensor([az, 0.0])) for az in (-60, -30, 0, 30, 60)])
    seq = RigParams.neutral(__import__("portraitrig.face.model", fromlist=["x"]).load_default_model(), 5)
    seq = seq.replace(light=lights.to(seq.light))
    asked = []
    notes = []
    got = light_path(base, ReenactConfig(light=str(tmp_path / "lights.mp4"), absolute_light=True), 6,
                     load_light=lambda p: asked.append(p) or (seq, 2.5), notes=notes)
    assert asked == [str(tmp_path / "lights.mp4")]
    from portraitrig.io.media import resample_indices

    idx = resample_indices(5, 2.5, 6)
    assert len(idx) == 12
    want = lights[torch.as_tensor((idx + [idx[-1]] * 6))]
    torch.testing.assert_close(got, want.to(got))
    assert "lights.mp4: 5 frames at 2.5 fps" in notes[0] and "held for the final 6 frame(s)" in notes[0]
    one = light_path(base, ReenactConfig(light="photo.jpg", absolute_light=True), 6,
                     load_light=lambda p: (seq[2:3], 6.0))
    torch.testing.assert_close(one, lights[2:3].expand(18, 9, 3).to(one))     # a photo's light, held
    with pytest.raises(InputError, match="needs a fitter"):
        light_path(base, ReenactConfig(light="photo.jpg"), 6)
    with pytest.raises(InputError, match="no such environment map"):
        light_path(base, ReenactConfig(light="env:" + str(tmp_path / "none.png")), 6)


def test_paste_back_round_trip(model):
    frame = model.frames[3]
    mask = border_mask(32, 0.1)
    ring = ((mask > 0.02) & (mask < 0.6)).astype(np.float32)
    back = paste_frame(frame, crop_frame(frame, model.crop), model.crop, mask, ring)
    assert back.shape == frame.shape and np.abs(back.astype(int) - frame.astype(int)).max() <= 2


def test_bad_inputs(model, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(InputError, match="broken.mp4"):
        run_reenact(model.folder, bad, tmp_path / "o1", ReenactConfig(), rigger=SimpleNamespace(), progress=False,
                    say=None)
    from portraitrig.neural.modelio import write_model_folder

    other = write_model_folder(tmp_path / "diff", "diffusion", 1, {}, torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="diff.*'diffusion' model"):
        run_reenact(other, None, tmp_path / "o2", ReenactConfig(self_drive=True), progress=False, say=None)
    with pytest.raises(InputError, match="gone.mp4"):
        run_reenact(model.folder, None, tmp_path / "o3", ReenactConfig(self_drive=True,
                    target_video=str(tmp_path / "gone.mp4")), progress=False, say=None)
    with pytest.raises(InputError, match="DRIVER"):
        run_reenact(model.folder, None, tmp_path / "o4", ReenactConfig(), progress=False, say=None)
    assert not (tmp_path / "o1" / "result.mp4").exists()


def test_driver_is_resampled_to_the_targets_frame_rate(model, tmp_path):
    drv = tmp_path / "fast.safetensors"
    p = driver_params(20)
    p.save(drv, meta={"fps": 50.0})                       # 0.4 s at 50 fps -> 10 frames at 25 fps
    s = run_reenact(model.folder, drv, tmp_path / "out", ReenactConfig(motion="absolute"), progress=False, say=None)
    assert s.frames == 10
    out = RigParams.load(tmp_path / "out" / "params.safetensors")
    torch.testing.assert_close(out.expression, p.expression[0::2])


def test_diffusion_renderer_reenacts_each_target_frame_by_inversion(model, tmp_path, monkeypatch):
    from portraitrig.methods import diffusionrig
    from portraitrig.methods.diffusionrig.method import DiffusionRigMethod

    crops, params, masks = video.synthetic_frames(N, 32)
    cache = from_frames(crops, params, masks, fps=FPS, crop=model.crop, video=str(model.target)).cache
    cfg = diffusionrig.PRESETS["tiny"]()
    dfolder = train(DiffusionRigMethod.create(cfg, cache, "cpu", say=None), cfg.train, tmp_path / "drun",
                    config=to_dict(cfg), progress=False)
    with pytest.raises(ValueError, match="diffusion-model"):
        ReenactConfig(renderer="diffusion").validate()
    with pytest.raises(InputError, match="'video' model"):
        run_reenact(model.folder, None, tmp_path / "bad", ReenactConfig(self_drive=True, renderer="diffusion",
                    diffusion_model=str(model.folder)), progress=False, say=None)
    cfg_d = ReenactConfig(self_drive=True, light="left", renderer="diffusion", diffusion_model=str(dfolder),
                          diffusion_steps=2, max_frames=3)
    s = run_reenact(model.folder, None, tmp_path / "out", cfg_d, progress=False, say=None)
    assert s.frames == 3
    got = np.stack([f.image for f in iter_video_frames(tmp_path / "out" / "result.mp4")])
    import json

    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["renderer"] == "diffusion"
    run_reenact(model.folder, None, tmp_path / "vid", ReenactConfig(self_drive=True, light="left", max_frames=3),
                progress=False, say=None)
    ref = np.stack([f.image for f in iter_video_frames(tmp_path / "vid" / "result.mp4")])
    assert got.shape == ref.shape == (3, 48, 64, 3)
    inside = (slice(None), slice(8, 40), slice(16, 48))            # the crop: where the renderers differ
    assert np.abs(got[inside].astype(int) - ref[inside].astype(int)).mean() > 2
    # --no-fast asks DiffusionRig for its plain path too (its compiled loop compiles ~2 min on a GPU)
    import dataclasses

    import portraitrig.methods as methods

    asked, load = [], methods.load_renderer
    monkeypatch.setattr(methods, "load_renderer", lambda d, **kw: asked.append(kw.get("fast", "unset")) or load(d, **kw))
    for fast in (True, False):
        run_reenact(model.folder, None, tmp_path / f"fast{fast}", dataclasses.replace(cfg_d, fast=fast, max_frames=1),
                    progress=False, say=None)
    assert asked == [None, False]
    outside = (slice(None), slice(0, 4), slice(None))               # above the crop: the target's frame
    assert np.abs(got[outside].astype(int) - ref[outside].astype(int)).mean() < 3   # (H.264 blocks bleed a little)


def test_reenact_settings_are_checked():
    for bad in (dict(workers=0), dict(diffusion_steps=0), dict(renderer="gan")):
        with pytest.raises(ValueError):
            ReenactConfig(**bad).validate()


def test_paste_masks_cover_the_person_and_fall_off_around_them():
    from portraitrig.apps.reenactjob import paste_masks

    S = 64
    yy, xx = np.mgrid[:S, :S]
    disc = torch.from_numpy(((yy - 32) ** 2 + (xx - 32) ** 2 <= 10 ** 2).astype(np.float32))[None, None]
    border = border_mask(S, 0.05)
    m = paste_masks(torch.cat([disc, disc * 0.005]), border, 0.05)     # reach: 3 px, ramp over 6
    assert m.shape == (2, S, S) and m.dtype == np.float32
    r = np.hypot(yy - 32, xx - 32)
    assert (m[0][r <= 10] == 1).all() and (m[0][r >= 19] == 0).all()     # the person; beyond the ramp (square)
    ramp = m[0][(r > 10) & (r < 19)]
    assert ((ramp > 0) & (ramp < 1)).any()
    assert m[1].max() == 0                                                # below 1 %: nobody there
    whole = paste_masks(torch.ones(1, 1, S, S), border, 0.05)[0]
    np.testing.assert_allclose(whole, border)                             # the crop's own edge stays soft


def test_colour_match_compares_the_still_background_only():
    """still_rings: the colour match's border ring loses the pixels where the person may be. A
    render whose wall is 12 levels too dark, its person crossing the ring at another place than in
    the target's frame: matched on the whole ring the wall is off by the person's share of it;
    on the still ring it is put right. Where the person would cover nearly all the ring, the whole
    ring stays."""
    from portraitrig.apps.reenactjob import colour_match, still_rings

    S = 64
    border = border_mask(S, 0.1)
    ring = ((border > 0.02) & (border < 0.6)).astype(np.float32)
    actual = np.full((S, S, 3), 120, np.uint8)
    rendered = np.full((S, S, 3), 108, np.uint8)
    person_actual = np.zeros((S, S), np.float32); person_actual[40:, 10:30] = 1     # the shoulders: bottom left
    person_render = np.zeros((S, S), np.float32); person_render[40:, 34:44] = 1     # driven: further right, turned
    actual[person_actual > 0] = 30
    rendered[person_render > 0] = 30 - 12
    region = torch.from_numpy(np.maximum(person_actual, person_render))[None, None]
    still = still_rings(ring, region)[0]
    assert still.shape == ring.shape and (still <= ring).all() and still[60, 20] == 0 and still[2, 2] == ring[2, 2]
    wall = person_actual + person_render == 0
    whole = colour_match(rendered, actual, ring)[wall].astype(int) - 120
    right = colour_match(rendered, actual, still)[wall].astype(int) - 120
    assert np.abs(whole).min() > 3 and (right == 0).all()
    everywhere = still_rings(ring, torch.ones(1, 1, S, S))[0]
    assert (everywhere == ring).all()


def test_the_still_background_stays_the_target_frame(model, tmp_path):
    """Pasting the person only (without the model's matte): outside where the renderer may draw
    them, the result is the target's own frame (the tiny renderer's copy of the wall is not); the
    whole crop differs."""
    got = {}
    for paste in ("person", "crop"):
        cfg = ReenactConfig(self_drive=True, paste=paste, crf=0, feather=0.05, matte=False)
        run_reenact(model.folder, None, tmp_path / paste, cfg, progress=False, say=None)
        got[paste] = np.stack([f.image for f in iter_video_frames(tmp_path / paste / "result.mp4")]).astype(float)
    from portraitrig.methods.video.renderer import VideoRenderer

    r = VideoRenderer.from_pretrained(model.folder, device="cpu")
    # beyond the paste's soft margin (2 x 1 px, diagonals of the square dilation included) around
    # where any training frame's person reached, and inside the crop's own soft edge
    near = torch.nn.functional.max_pool2d((r.cond.prior > 0).float(), 7, stride=1, padding=3)
    far = (near[0, 0].numpy() == 0) & (border_mask(32, 0.05) > 0.99)
    assert far.sum() > 20
    real = np.stack([crop_frame(f.image, model.crop) for f in iter_video_frames(model.target)]).astype(float)

    def crop_of(video):
        return np.stack([crop_frame(f.astype(np.uint8), model.crop) for f in video]).astype(float)

    assert np.abs(crop_of(got["person"]) - real)[:, far].mean() < 2.5      # crf 0: colour conversion only
    assert np.abs(crop_of(got["crop"]) - real)[:, far].mean() > 5


def test_the_models_matte_says_where_the_driven_person_is_pasted(model, tmp_path):
    """With a model that renders the person's matte, the paste follows it: a matte of no one
    leaves the target's own frame everywhere beyond where that frame may show the person (and the
    small margin), the driven head included; a matte of the whole crop pastes the whole crop."""
    from portraitrig.methods.video.renderer import VideoRenderer

    real = np.stack([crop_frame(f.image, model.crop) for f in iter_video_frames(model.target)]).astype(float)
    drv = tmp_path / "driver.safetensors"
    driver_params(N, seed=3).save(drv, meta={"fps": FPS})
    r = VideoRenderer.from_pretrained(model.folder, device="cpu")
    assert r.config.matte
    near = torch.nn.functional.max_pool2d((r.cond.prior > 0).float(), 7, stride=1, padding=3)
    far = (near[0, 0].numpy() == 0) & (border_mask(32, 0.05) > 0.99)
    assert far.sum() > 20
    err = {}
    for name, level in (("no one", 0.0), ("everything", 1.0)):
        with torch.no_grad():   # the matte channel: a constant (the output is 0.5 + the head's)
            r.net.head.weight[3:] = 0
            r.net.head.bias[3:] = level - 0.5
        folder = r.save_pretrained(tmp_path / name / "model")
        cfg = ReenactConfig(crf=0, feather=0.05, margin=0.03)
        run_reenact(folder, drv, tmp_path / name, cfg, progress=False, say=None)
        out = np.stack([crop_frame(f.image, model.crop) for f in iter_video_frames(tmp_path / name / "result.mp4")])
        err[name] = np.abs(out.astype(float) - real[np.arange(len(out)) % len(real)])[:, far].mean()
    assert err["no one"] < 2.5 and err["everything"] > 5
