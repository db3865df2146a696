"""Typed configs: JSON round trips (strict), generated command-line flags, presets as defaults."""
import argparse
import json
from dataclasses import dataclass, field

import pytest

from portraitrig.config import add_config_arguments, apply_arguments, from_dict, load_json, to_dict
from portraitrig.errors import InputError
from portraitrig.training.config import TrainConfig


@dataclass
class Inner:
    width: int = 8
    sizes: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None
    rate: float = field(default=0.5, metadata={"help": "a rate"})

    def validate(self):
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be in [0, 1]")


def test_json_round_trip_and_strictness(tmp_path):
    c = Outer(inner=Inner(width=3, sizes=(4,)), name="x")
    assert from_dict(Outer, json.loads(json.dumps(to_dict(c)))) == c
    for bad, msg in [({"bogus": 1}, "unknown setting.*bogus"), ({"inner": {"width": "8"}}, "inner.width"),
                     ({"rate": 2.0}, "rate must be"), ({"train": {"lr": float("nan")}}, "finite"),
                     ({"inner": {"width": True}}, "whole number"), ({"inner": []}, "object")]:
        with pytest.raises(InputError, match=msg):
            from_dict(Outer, bad, "cfg.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(InputError, match="c.json"):
        load_json(Outer, tmp_path / "c.json")
    with pytest.raises(InputError, match="no such config"):
        load_json(Outer, tmp_path / "missing.json")


def test_generated_flags_override_only_what_is_given():
    ap = argparse.ArgumentParser()
    add_config_arguments(ap, Outer, defaults=Outer())
    base = Outer(train=TrainConfig(steps=7, compile=True))
    args = ap.parse_args(["--steps", "3", "--inner.width", "5", "--inner.sizes", "6,7", "--no-compile",
                          "--name", "none"])
    c = apply_arguments(base, args)
    assert c.train.steps == 3 and c.inner.width == 5 and c.inner.sizes == (6, 7) and c.train.compile is False
    assert c.train.lr == base.train.lr and c.name is None  # not given: the preset's value stays
    assert apply_arguments(base, ap.parse_args([])) == base
    for bad in (["--steps", "x"], ["--lr", "inf"], ["--precision", "fp8"]):
        with pytest.raises(SystemExit):
            ap.parse_args(bad)
    with pytest.raises(ValueError, match="at least 1"):
        apply_arguments(base, ap.parse_args(["--batch-size", "0"]))


def test_train_cli_maps_flags_and_presets(tmp_path, capsys):
    from portraitrig.cli import build_parser, main

    ap = build_parser()
    args = ap.parse_args(["train", "diffusion", "c.safetensors", "-o", "out", "--preset", "stage2-256",
                          "--compile", "--time-limit", "2.5", "--group", "katie"])
    from portraitrig.apps.trainjob import method_config

    cfg = apply_arguments(method_config("diffusion", args.preset), args)
    assert cfg.stage == 2 and cfg.train.compile and cfg.train.time_limit == 2.5 and cfg.group == ("katie",)
    assert cfg.train.lr == 5e-5 and cfg.train.batch_size == 16  # the stage-2 recipe
    for argv, msg in [(["--batch-size", "0"], "at least 1"), (["--light-augment", "2"], "[0, 1]"),
                      (["--preset", "bogus"], "invalid choice")]:
        with pytest.raises(SystemExit) as e:
            main(["train", "diffusion", "c.safetensors", "-o", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text(json.dumps({"method": "diffusion", "config": {"stage": 3}}))
    assert main(["train", "diffusion", "c.safetensors", "-o", str(tmp_path / "o"), "--config",
                 str(tmp_path / "bad.json")]) == 2
    assert "stage must be 1 or 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_settings_from_text_reach_nested_fields_and_are_checked():
    import pytest

    from portraitrig.config import set_from_text
    from portraitrig.methods.splat.config import PRESETS

    base = PRESETS["256"]()
    cfg = set_from_text(base, {"model.body": "2000", "train.lr": "5e-3", "ssim_weight": "0.3",
                               "model.use_prior": "0"})
    assert (cfg.model.body, cfg.train.lr, cfg.ssim_weight, cfg.model.use_prior) == (2000, 5e-3, 0.3, False)
    assert base.model.body == 0 and base.model.use_prior                      # a copy: the preset is untouched
    for settings, problem in (({"model.nothing": "1"}, "no setting 'model.nothing'"),
                              ({"model.body": "many"}, "model.body"),
                              ({"model.use_prior": "maybe"}, "wants 1 or 0"),
                              ({"model.body": "-1"}, "body")):
        with pytest.raises(ValueError, match=problem):
            set_from_text(base, settings)
