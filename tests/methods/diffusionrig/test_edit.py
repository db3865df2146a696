"""DiffusionRig end to end: prepare -> train -> edit on a real photo (scikit-image's astronaut),
the edit API's batching, and paste-back."""
import json

import numpy as np
import pytest
import torch

from portraitrig.cli import main
from portraitrig.methods.diffusionrig.config import preset
from portraitrig.methods.diffusionrig.model import DiffusionRigModel
from portraitrig.methods.diffusionrig.renderer import DiffusionRenderer, Edit, Subject
from portraitrig.edits import relight, set_gaze
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    return p


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model") / "tiny"
    DiffusionRigModel(preset("tiny")).save_pretrained(d)
    return d


def test_edit_cli_on_a_photo(photo, tiny_model, tmp_path):
    out = tmp_path / "out"
    rc = main(["edit", str(tiny_model), str(photo), "-o", str(out), "--light", "30,20", "--smile", "0.8",
               "--yaw", "10", "--gaze-yaw", "10", "--light-sweep", "2", "--steps", "3"])
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    item = man["photos"][0]
    assert list(item["edits"]) == ["reconstruction", "edit", "light00", "light01"] and item["pasted"]
    assert [it["edit"] for it in man["items"]] == ["reconstruction", "edit", "light00", "light01"]
    from PIL import Image

    orig = np.asarray(Image.open(photo))
    full = np.asarray(Image.open(out / "astronaut.edit.full.png"))
    crop = np.asarray(Image.open(out / "astronaut.edit.png"))
    sheet = np.asarray(Image.open(out / "astronaut.sheet.png"))
    assert full.shape == orig.shape and crop.shape == (256, 256, 3) and sheet.shape == (256, 256 * 5, 3)
    assert np.array_equal(full[-20:], orig[-20:])          # far from the face: untouched
    assert np.abs(full.astype(int) - orig).mean() > 0.5    # the face region was replaced
    # relative relighting by default: the requested light keeps the photo's exposure
    from portraitrig.light import sh

    rec = RigParams.load(out / "astronaut.reconstruction.safetensors")
    for name in ("edit", "light00", "light01"):
        req = RigParams.load(out / f"astronaut.{name}.safetensors")
        assert torch.allclose(sh.mean_front_shading(req.light), sh.mean_front_shading(rec.light), rtol=1e-4)
        assert not torch.allclose(req.light, rec.light)
    out2 = tmp_path / "abs"
    assert main(["edit", str(tiny_model), str(photo), "-o", str(out2), "--light", "left", "--absolute-light",
                 "--steps", "1"]) == 0
    assert torch.allclose(RigParams.load(out2 / "astronaut.edit.safetensors").light[0], sh.preset("left"))


def test_prepare_train_edit_pipeline(photo, tmp_path):
    """fit --save-crops -> prepare -> train (tiny, real rig buffers) -> edit a precomputed fit."""
    assert main(["fit", str(photo), "-o", str(tmp_path / "fits"), "--save-crops", "-q"]) == 0
    cache = tmp_path / "cache.safetensors"
    assert main(["prepare", str(tmp_path / "fits"), "-o", str(cache), "--size", "32"]) == 0
    run = tmp_path / "run"
    assert main(["train", "diffusion", str(cache), "-o", str(run), "--preset", "tiny", "--steps", "2", "--batch-size", "2",
                 "--precision", "fp32", "--sample-every", "2", "--ckpt-every", "1", "--keep", "1", "-q"]) == 0
    assert (run / "model" / "model.safetensors").exists() and (run / "samples" / "step-00000002.png").exists()
    s2 = tmp_path / "run2"
    assert main(["train", "diffusion", str(cache), "-o", str(s2), "--preset", "tiny-stage2", "--init", str(run),
                 "--steps", "1", "--batch-size", "1", "--precision", "fp32", "--sample-every", "0", "-q"]) == 0
    fit = next((tmp_path / "fits").glob("*.safetensors"))
    out = tmp_path / "edits"
    assert main(["edit", str(s2 / "model"), str(fit), "-o", str(out), "--light", "left", "--steps", "2",
                 "--no-inversion", "--seed", "3"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["inversion"] is False and list(man["photos"][0]["edits"]) == ["reconstruction", "edit"]
    assert man["photos"][0]["pasted"]  # the fit file points at the photo and holds the crop affine


def _subject(seed, model):
    g = torch.Generator().manual_seed(seed)
    img = (torch.rand(32, 32, 3, generator=g) * 255).byte().numpy()
    p = RigParams.neutral(model)
    p = p.replace(rotation=torch.randn(1, 3, generator=g) * 0.1)
    return Subject(f"s{seed}", img, p)


def test_batched_edits_match_single_runs(tiny_model):
    fm = load_default_model()
    r = DiffusionRenderer.from_pretrained(tiny_model, max_batch=3)
    subs = [_subject(1, fm), _subject(2, fm)]
    latent = torch.randn(preset("tiny").encoder.latent_dim)
    edits = [Edit("rec"), Edit("light", lambda p: relight(p, "left")), Edit("gaze", lambda p: set_gaze(p, 15, 0)),
             Edit("look", None, latent)]
    both = r.edit(subs, edits, steps=4)
    assert [res.names for res in both] == [["rec", "light", "gaze", "look"]] * 2
    for k, s in enumerate(subs):
        one = r.edit(s, edits, steps=4)
        for a, b in zip(one.crops, both[k].crops):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert one.pasted == [None] * 4  # no original known
    assert np.abs(both[0].crops[0].astype(int) - both[0].crops[1].astype(int)).mean() > 0.1  # edits differ
    assert np.abs(both[0].crops[0].astype(int) - both[0].crops[3].astype(int)).mean() > 0.1


def test_edit_batch_goes_on_past_a_photo_without_a_face(photo, tiny_model, tmp_path):
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(noise)
    out = tmp_path / "out"
    assert main(["edit", str(tiny_model), str(noise), str(photo), "-o", str(out), "--smile", "0.5",
                 "--steps", "2"]) == 1
    man = json.loads((out / "manifest.json").read_text())
    assert [p.get("status", "ok") for p in man["photos"]] == ["ok", "error"]
    assert "noise.png" in man["photos"][1]["message"]
    assert (out / "astronaut.edit.png").exists()
