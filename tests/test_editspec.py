"""One edit-spec parser: text and flags to the same rig edits."""
import argparse

import pytest
import torch

from portraitrig.editspec import EditSpec, add_edit_arguments, from_args, parse
from portraitrig.errors import InputError
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.light import sh


@pytest.fixture(scope="module")
def model():
    return load_default_model()


def test_text_round_trip():
    s = parse("light=-60,20 strength=0.5 smile=0.8 control:frown=0.2 yaw=15 gaze=10,-5; appearance=a.jpg")
    assert s == EditSpec(light="-60,20", strength=0.5, controls={"smile": 0.8, "frown": 0.2}, yaw=15.0,
                         gaze=(10.0, -5.0), appearance="a.jpg")
    assert parse(s.text()) == s and parse("") == EditSpec() and not EditSpec().changes_rig


@pytest.mark.parametrize("bad", ["smile", "smile=x", "gaze=1", "turbo=1", "yaw=nan", "strength=0.5", "colour=1,1,1",
                                 "light=left colour=1,1", "light=left colour=1,-1,1", "light=left colour=9,1,1"])
def test_bad_specs_say_what_is_wrong(bad):
    with pytest.raises(ValueError):
        parse(bad)


def test_flags_and_text_give_the_same_edit(model):
    ap = argparse.ArgumentParser()
    add_edit_arguments(ap)
    flags = from_args(ap.parse_args(["--light", "left", "--absolute-light", "--smile", "0.5", "--yaw", "10",
                                     "--gaze-yaw", "5", "--control", "pucker=0.3"]))
    assert flags == parse("light=left absolute=1 smile=0.5 yaw=10 gaze=5,0 control:pucker=0.3")
    mixed = from_args(ap.parse_args(["--edit", "light=right smile=0.2", "--smile", "0.9"]))
    assert mixed.light == "right" and mixed.controls == {"smile": 0.9}
    with pytest.raises(ValueError, match="NAME=AMOUNT"):
        from_args(ap.parse_args(["--control", "smile"]))


def test_params_fn_applies_the_edits(model, tmp_path):
    p = RigParams.neutral(model, 2)
    q = parse("light=left absolute=1 smile=1 yaw=20 gaze=10,0").params_fn(model)(p)
    assert torch.allclose(q.light[0], sh.preset("left")) and torch.allclose(q.euler_degrees()[:, 0], torch.tensor(20.0))
    assert torch.allclose(q.gaze, torch.deg2rad(torch.tensor([10.0, 0.0])).expand(2, 2, 2))
    assert not torch.equal(q.expression, p.expression) and torch.equal(p.rotation, torch.zeros(2, 3))  # pure
    rel = parse("light=left").params_fn(model)(p)  # relative: the photo's exposure is kept
    assert torch.allclose(sh.mean_front_shading(rel.light), sh.mean_front_shading(p.light), rtol=1e-4)
    other = p.replace(light=sh.preset("rim").expand(2, 9, 3).clone())
    copied = parse("light=other.jpg absolute=1").params_fn(model, lambda path: other[0])(p)
    assert torch.allclose(copied.light, other.light)
    assert parse("smile=0").params_fn(model) is not None and EditSpec().params_fn(model) is None
    with pytest.raises(ValueError, match="unknown expression control"):
        parse("control:bogus=1").params_fn(model)
    with pytest.raises(InputError, match="no such environment map"):
        parse(f"light=env:{tmp_path}/missing.png").params_fn(model)


def test_light_colour_tints_the_new_light(model):
    p = RigParams.neutral(model, 1)
    s = parse("light=left colour=1,0.8,0.6 absolute=1")
    assert parse(s.text()) == s and s.colour == (1.0, 0.8, 0.6)
    q = s.params_fn(model)(p)
    assert torch.allclose(q.light[0], sh.preset("left") * torch.tensor([1.0, 0.8, 0.6]))
    ap = argparse.ArgumentParser()
    add_edit_arguments(ap)
    assert from_args(ap.parse_args(["--light", "left", "--light-colour", "1,0.8,0.6", "--absolute-light"])) == s
