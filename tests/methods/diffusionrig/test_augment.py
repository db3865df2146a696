"""Lighting augmentation (ratio-image relighting of training items) and its use in training."""
import json

import pytest
import torch

from portraitrig.training import checkpoint as ck
from portraitrig.methods.diffusionrig.augment import LightAugment, random_lights, relight_batch
from portraitrig.methods.diffusionrig.config import preset
from portraitrig.render.spec import to_network as buffers_to_tensor
from portraitrig.face.params import RigParams
from portraitrig.light import sh
from portraitrig.render.buffers import render_buffers
from synth_face import SynthFace
from synth_data import _cfg, cache, synth_buffers, train  # noqa: F401  (cache is a fixture)

NAMES = ("normal", "albedo", "shaded", "regions")
S = 48


@pytest.fixture(scope="module")
def face():
    model = SynthFace(rings=12, segments=24)
    p = RigParams.neutral(model, 3)
    g = torch.Generator().manual_seed(3)
    light = torch.stack([sh.preset("front"), sh.preset("studio"), sh.preset("ambient") * 0.8])
    p = p.replace(light=light, albedo=0.3 + 0.5 * torch.rand(p.albedo.shape, generator=g))
    buffers = buffers_to_tensor(render_buffers(p, model, S, NAMES), NAMES)
    # a "photo": the rig's image model on the face, a flat grey background around it
    b = render_buffers(p, model, S, ("shaded", "mask"))
    photo = (b["shaded"] * b["mask"] + 0.4 * (1 - b["mask"])).clamp(0, 1) * 2 - 1
    return model, p, buffers, photo, b["mask"]


def test_directional_lights_batched_matches_single():
    dirs = torch.stack([sh.direction_from_angles(-70, 10), sh.direction_from_angles(25, -5)]).double()
    L = sh.directional_lights(dirs, torch.tensor([1.0, 0.4]).double(), torch.tensor([[0.3], [0.1]]).double())
    assert L.shape == (2, 9, 3)
    assert torch.allclose(L[0].float(), sh.preset("left"), atol=1e-6)
    assert torch.allclose(L[1].float(), sh.light_from_direction((25, -5), intensity=0.4, ambient=0.1), atol=1e-6)


def test_random_lights_keep_exposure_and_untouched_items():
    light = torch.stack([sh.preset("front"), sh.preset("warm"), sh.preset("studio"), sh.preset("ambient")] * 4)
    g = torch.Generator().manual_seed(0)
    new = random_lights(light, LightAugment(prob=1.0), g)
    assert new.shape == light.shape and not torch.equal(new, light)
    # relative lights: the camera-facing mean shading (exposure and colour) is the photo's
    assert torch.allclose(sh.mean_front_shading(new), sh.mean_front_shading(light), atol=1e-4)
    # ... while the shading's direction changed: the first-order coefficients differ
    assert (new[:, 1:4] - light[:, 1:4]).abs().amax() > 0.1
    assert torch.equal(random_lights(light, LightAugment(prob=0.0), g), light)
    # same generator state, same lights (resume depends on it); about `prob` of the items relit
    a = random_lights(light, LightAugment(prob=0.5), torch.Generator().manual_seed(5))
    b = random_lights(light, LightAugment(prob=0.5), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    relit = (a != light).flatten(1).any(1)
    assert 0 < int(relit.sum()) < len(light)


def test_relight_batch_matches_the_renderer(face):
    model, p, buffers, photo, mask = face
    new_light = torch.stack([sh.match_exposure(sh.preset("left"), p.light[0]), p.light[1],
                             sh.match_exposure(sh.preset("right"), p.light[2])])
    x, b = relight_batch(photo, buffers, p.light, new_light, NAMES)
    # the recomputed shaded buffer is what the renderer gives for the new light
    want = buffers_to_tensor(render_buffers(p.replace(light=new_light), model, S, NAMES), NAMES)
    assert torch.allclose(b, want, atol=1e-5)
    # the item whose light did not change comes back bit for bit
    assert torch.equal(x[1], photo[1]) and torch.equal(b[1], buffers[1])
    # outside the (dilated) face nothing changes; inside, the photo follows the ratio image
    far = torch.nn.functional.max_pool2d(mask, 9, stride=1, padding=4) == 0
    assert torch.equal(x.masked_select(far.expand_as(x)), photo.masked_select(far.expand_as(x)))
    xs, ps = (x + 1) / 2, (photo + 1) / 2
    left, right = (slice(None), slice(None), slice(S // 2 - 4, S // 2 + 4), slice(S // 2 - 12, S // 2 - 6)), \
        (slice(None), slice(None), slice(S // 2 - 4, S // 2 + 4), slice(S // 2 + 6, S // 2 + 12))
    # image-left light: the left cheek brightens relative to the right one, and the other way round
    assert (xs[0][left[1:]].mean() / ps[0][left[1:]].mean()) > 1.05 * (xs[0][right[1:]].mean() / ps[0][right[1:]].mean())
    assert (xs[2][right[1:]].mean() / ps[2][right[1:]].mean()) > 1.05 * (xs[2][left[1:]].mean() / ps[2][left[1:]].mean())
    # the relit photo agrees with the rig's image model under the new light in the face's middle
    core = torch.nn.functional.avg_pool2d(mask, 13, stride=1, padding=6) > 0.999
    rel = ((xs - (b[:, 6:9] + 1) / 2).abs() * core).sum() / (core.sum() * 3)
    assert rel < 0.03, float(rel)


def test_relight_batch_needs_the_buffers(face):
    _, p, buffers, photo, _ = face
    with pytest.raises(ValueError, match="shaded"):
        relight_batch(photo, buffers[:, :6], p.light, p.light, ("normal", "albedo"))


def test_encoder_sees_the_original_photo(cache):  # noqa: F811
    """With lighting augmentation the appearance encoder gets the unaugmented photo, the
    denoiser the relit one."""
    from portraitrig.methods.diffusionrig.method import DiffusionRigMethod

    denoiser_inputs = []
    for cfg in (_cfg(light_augment=1.0), _cfg()):
        m = DiffusionRigMethod(cfg, cache, "cpu", buffer_fn=synth_buffers, say=None)
        seen = []
        m.model.encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
        m.model.unet.register_forward_hook(lambda mod, args, out: denoiser_inputs.append(args[0][:, :3].detach()))
        idx = torch.arange(4)
        m.loss(m.model, idx, 0, torch.Generator().manual_seed(0))
        assert torch.equal(seen[0], m.images[idx].float() / 127.5 - 1)
    assert not torch.allclose(denoiser_inputs[0], denoiser_inputs[1])  # relit vs original, same noise


def test_training_with_light_augment_resumes_exactly(cache, tmp_path):  # noqa: F811
    cfg = _cfg(steps=6, light_augment=0.5)
    train(cache, tmp_path / "a", cfg)
    train(cache, tmp_path / "b", cfg, stop_after=3)
    train(cache, tmp_path / "b", cfg)
    train(cache, tmp_path / "plain", _cfg(steps=6))
    ta, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "a", 6))
    tb, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "b", 6))
    tp, _ = ck.load_checkpoint(ck.checkpoint_path(tmp_path / "plain", 6))
    keys = [k for k in ta if k.startswith(("model.", "ema."))]
    assert all(torch.equal(ta[k], tb[k]) for k in keys)
    assert any(not torch.equal(ta[k], tp[k]) for k in keys)  # the augmentation changed training
    logs = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(logs) == 6 and all(r["loss"] == r["loss"] for r in logs)


def test_light_augment_is_checked(cache, tmp_path):  # noqa: F811
    from portraitrig.config import validate

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        validate(_cfg(light_augment=1.5))
    model = preset("tiny")
    model.buffers = ("normal", "regions")
    with pytest.raises(ValueError, match="albedo"):
        validate(_cfg(light_augment=0.5, model=model))
