"""`portraitrig eval --refit`: rig consistency measured by fitting the rig on generated crops,
and the whole path from `portraitrig edit` output to an eval report."""
import json

import cv2
import pytest
import torch
from PIL import Image
from skimage import data

from portraitrig.cli import main
from portraitrig.edits import rotate_head
from portraitrig.pipeline import Rigger


@pytest.fixture(scope="module")
def astro_fit():
    return Rigger(crop_size=256).fit_image(data.astronaut(), "astronaut")


def test_refit_measures_pose_faithfulness(astro_fit, tmp_path):
    """Generated = the real crop rolled 10 degrees in the image. Requested roll +10 is met
    (small pose error); requesting no roll is off by about 10 degrees; the floor (the real crop
    re-fitted against its own fit) is small."""
    crop = astro_fit.crop_image
    Image.fromarray(crop).save(tmp_path / "real.png")
    rolled = cv2.warpAffine(crop, cv2.getRotationMatrix2D((128, 128), -10, 1.0), (256, 256),
                            borderMode=cv2.BORDER_REFLECT_101)
    Image.fromarray(rolled).save(tmp_path / "rolled.png")
    astro_fit.params.save(tmp_path / "source.safetensors")
    rotate_head(astro_fit.params, roll=10).save(tmp_path / "asked_roll.safetensors")
    items = [{"id": "asked_roll", "generated": "rolled.png", "reference": "real.png",
              "requested_params": "asked_roll.safetensors", "reference_params": "source.safetensors"},
             {"id": "asked_none", "generated": "rolled.png", "reference": "real.png",
              "requested_params": "source.safetensors", "reference_params": "source.safetensors"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"items": items}))
    assert main(["eval", str(tmp_path), "-o", str(tmp_path / "ev"), "--kind", "rig", "--refit"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    per = {r["id"]: r["metrics"] for r in m["items"]}
    assert per["asked_roll"]["pose_deg"] < 3.0
    assert 7.0 < per["asked_none"]["pose_deg"] < 13.0
    assert m["summary"]["rig"]["floor"]["pose_deg"]["mean"] < 1.5


def test_edit_output_is_an_eval_results_folder(tmp_path):
    """A tiny random diffusion model's edits go straight into `portraitrig eval`."""
    from portraitrig.methods.diffusionrig.config import preset
    from portraitrig.methods.diffusionrig.model import DiffusionRigModel

    torch.manual_seed(0)
    DiffusionRigModel(preset("tiny")).save_pretrained(tmp_path / "tiny")
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    out = tmp_path / "edits"
    assert main(["edit", str(tmp_path / "tiny"), str(tmp_path / "astronaut.png"), "-o", str(out),
                 "--smile", "0.5", "--steps", "2"]) == 0
    assert main(["eval", str(out), "--kind", "image"]) == 0
    m = json.loads((out / "eval" / "metrics.json").read_text())
    text = json.dumps(m)
    assert "astronaut.reconstruction" in text and "astronaut.edit" in text
    assert (out / "eval" / "report.html").exists()
