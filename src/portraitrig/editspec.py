"""One parser from user text to rig edits, shared by the CLI, the demo, evaluation and the web app.

An edit spec is a list of ``key=value`` words (separated by spaces or ``;``)::

    light=left strength=0.5                 a light preset (``portraitrig.light.sh.PRESETS``)
    light=-60,20                            a direction: azimuth, elevation in degrees
    light=sky.hdr   light=env:room.png      an environment map (.hdr/.exr/.pic, or any image after env:)
    light=other.jpg                         copy another photo's (or fit file's) light
    absolute=1                              the light as given (default: keep the photo's exposure
                                            and colour balance, only the direction changes)
    colour=1,0.8,0.6                        tint the new light (R, G, B multipliers; warm here)
    smile=0.8 jaw_open=0.3                  named expression controls (``face.controls``)
    expression=other.jpg                    copy another photo's expression
    yaw=15 pitch=-5 roll=0                  head turn in degrees (head space)
    gaze=10,-5                              both eyes' yaw, pitch in degrees (head space)
    appearance=other.jpg                    another photo's appearance (renderers that have one)

:class:`EditSpec` holds the parsed values; :meth:`EditSpec.params_fn` turns it into a pure
``RigParams -> RigParams`` function of :mod:`portraitrig.edits`. The CLI's edit flags are made by
:func:`add_edit_arguments` from the same table, so a flag and a spec word cannot disagree.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from portraitrig.errors import InputError

ENV_SUFFIXES = (".hdr", ".exr", ".pic")
CONTROLS = ("smile", "jaw_open", "brows_raised", "eye_closed_left", "eye_closed_right", "pucker", "frown")


@dataclass
class EditSpec:
    light: str | None = field(default=None, metadata={
        "help": "preset name, 'AZ,EL' degrees, an HDR map (.hdr/.exr), env:IMAGE for any environment map, "
                "or a photo / fit file to copy the light from"})
    strength: float = field(default=1.0, metadata={"help": "blend from the photo's own light (0) to the new one (1)",
                                                   "flag": "light-strength"})
    colour: tuple[float, float, float] | None = field(default=None, metadata={
        "help": "tint the new light: R,G,B multipliers in 0..4 (e.g. 1,0.8,0.6 warm)", "flag": "light-colour"})
    absolute: bool = field(default=False, metadata={
        "help": "use the light as given; default: keep the photo's exposure (and, for white light, its colour "
                "balance): relative relighting, only where the light comes from changes", "flag": "absolute-light"})
    controls: dict[str, float] = field(default_factory=dict)
    expression: str | None = field(default=None, metadata={"help": "photo whose expression to copy",
                                                           "flag": "expression-from"})
    yaw: float = field(default=0.0, metadata={"help": "head turn, degrees"})
    pitch: float = field(default=0.0, metadata={"help": "head tilt, degrees (positive: chin down)"})
    roll: float = field(default=0.0, metadata={"help": "head roll, degrees"})
    gaze: tuple[float, float] | None = field(default=None, metadata={"help": "gaze YAW,PITCH in degrees (head space)"})
    appearance: str | None = field(default=None, metadata={
        "help": "photo whose appearance (hair, clothes, background) to use", "flag": "appearance-from"})

    def __post_init__(self):
        for k in ("strength", "yaw", "pitch", "roll"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{k} must be a finite number, got {v!r}")
        for k, v in self.controls.items():
            if not math.isfinite(v):
                raise ValueError(f"control {k} must be a finite number, got {v!r}")
        if self.gaze is not None and (len(self.gaze) != 2 or not all(map(math.isfinite, self.gaze))):
            raise ValueError(f"gaze wants YAW,PITCH in degrees, got {self.gaze!r}")
        if self.colour is not None and (len(self.colour) != 3 or not all(
                math.isfinite(c) and 0 <= c <= 4 for c in self.colour)):
            raise ValueError(f"colour wants R,G,B multipliers in 0..4, got {self.colour!r}")
        if (self.strength != 1.0 or self.absolute or self.colour is not None) and self.light is None:
            raise ValueError("strength / absolute / colour of a light need a light")

    @property
    def changes_rig(self) -> bool:
        return any((self.light, self.controls, self.expression, self.yaw, self.pitch, self.roll,
                    self.gaze is not None))

    def text(self) -> str:
        """The spec as text that :func:`parse` reads back."""
        words = []
        if self.light is not None:
            words.append(f"light={self.light}")
            if self.strength != 1.0:
                words.append(f"strength={self.strength:g}")
            if self.colour is not None:
                words.append("colour=" + ",".join(f"{c:g}" for c in self.colour))
            if self.absolute:
                words.append("absolute=1")
        words += [f"{k}={v:g}" for k, v in self.controls.items()]
        if self.expression:
            words.append(f"expression={self.expression}")
        words += [f"{k}={getattr(self, k):g}" for k in ("yaw", "pitch", "roll") if getattr(self, k)]
        if self.gaze is not None:
            words.append(f"gaze={self.gaze[0]:g},{self.gaze[1]:g}")
        if self.appearance:
            words.append(f"appearance={self.appearance}")
        return " ".join(words)

    def params_fn(self, face_model=None, load_params: Callable[[str], object] | None = None):
        """The pure ``RigParams -> RigParams`` function of this spec (None when it changes
        nothing of the rig). ``load_params(path)`` fits a photo (or reads a fit file) for
        ``light=PHOTO`` and ``expression=PHOTO``; ``face_model`` centres head turns."""
        from portraitrig import edits

        fns = []
        if self.light is not None:
            light = self._light_source(load_params)
            if self.colour is not None:
                import torch

                tint = torch.tensor(self.colour, dtype=torch.float32)
                light = edits.resolve_light(light, 1) * tint
            how = {"keep_exposure": not self.absolute, "strength": self.strength}
            fns.append(lambda p: edits.relight(p, light, **how))
        if self.expression:
            ep = _need(load_params, self.expression)(self.expression)
            fns.append(lambda p: edits.set_expression(p, from_params=ep))
        if self.controls:
            controls = dict(self.controls)
            from portraitrig.face.controls import control_names

            unknown = sorted(set(controls) - set(control_names(face_model)))
            if unknown:
                raise ValueError(f"unknown expression control(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(control_names(face_model))}")
            fns.append(lambda p: edits.set_expression(p, model=face_model, **controls))
        if self.yaw or self.pitch or self.roll:
            fns.append(lambda p: edits.rotate_head(p, self.yaw, self.pitch, self.roll,
                                                   model=face_model.to(p.device) if face_model is not None else None))
        if self.gaze is not None:
            fns.append(lambda p: edits.set_gaze(p, self.gaze[0], self.gaze[1]))
        if not fns:
            return None

        def apply(p):
            for fn in fns:
                p = fn(p)
            return p

        return apply

    def _light_source(self, load_params):
        """What :func:`portraitrig.edits.relight` takes for ``self.light``."""
        return light_source(self.light, load_params)


def light_source(spec: str, load_params: Callable[[str], object] | None = None):
    """A light word (the edit spec's ``light=``, ``reenact --light``) as what
    :func:`portraitrig.edits.resolve_light` takes: a preset name, ``AZ,EL`` degrees, an
    environment map (.hdr/.exr/.pic, or ``env:IMAGE`` for an LDR one), else a photo or fit file
    whose light is copied (``load_params(path)`` fits it)."""
    from portraitrig.light import sh

    if spec in sh.PRESETS:
        return spec
    az_el = _floats(spec, 2)
    if az_el is not None:
        return az_el
    if "," in spec and not Path(spec).exists():
        raise InputError(None, f"light {spec!r}: AZ,EL must be two numbers in degrees")
    if spec.startswith("env:"):
        return _existing(spec[4:], "environment map")
    if Path(spec).suffix.lower() in ENV_SUFFIXES:
        return _existing(spec, "environment map")
    return _need(load_params, spec)(spec)  # a photo or fit file to copy the light from


def _existing(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise InputError(path, f"no such {what}")
    return path


def _need(load_params, what: str):
    if load_params is None:
        raise InputError(what, "this edit needs a photo to be fitted, and no fitter was given")

    def load(path: str):
        fitted = load_params(path)  # once: fitting a photo is not free
        return getattr(fitted, "params", fitted)

    return load


def _floats(text: str, n: int) -> tuple[float, ...] | None:
    parts = text.split(",")
    if len(parts) != n:
        return None
    try:
        vals = tuple(float(v) for v in parts)
    except ValueError:
        return None
    return vals if all(math.isfinite(v) for v in vals) else None


_ALIASES = {"light-strength": "strength", "absolute-light": "absolute", "light-colour": "colour", "color": "colour",
            "light-color": "colour", "expression-from": "expression",
            "appearance-from": "appearance", "latent-from": "appearance"}


def _apply(kw: dict, key: str, value: str) -> None:
    """One ``key=value`` of a spec into the EditSpec keywords ``kw``."""
    key = _ALIASES.get(key.replace("_", "-"), key.replace("-", "_"))
    if key in ("light", "expression", "appearance"):
        kw[key] = value
    elif key == "absolute":
        kw[key] = value.lower() in ("1", "true", "yes", "on")
    elif key == "colour":
        c = _floats(value, 3)
        if c is None:
            raise ValueError(f"colour wants R,G,B multipliers, got {value!r}")
        kw[key] = c
    elif key == "gaze":
        g = _floats(value, 2)
        if g is None:
            raise ValueError(f"gaze wants YAW,PITCH in degrees, got {value!r}")
        kw[key] = g
    elif key in ("strength", "yaw", "pitch", "roll") or key in CONTROLS or key.startswith("control:"):
        v = _floats(value, 1)
        if v is None:
            raise ValueError(f"{key} wants a number, got {value!r}")
        if key in ("strength", "yaw", "pitch", "roll"):
            kw[key] = v[0]
        else:
            kw.setdefault("controls", {})[key.split(":", 1)[-1]] = v[0]
    else:
        raise ValueError(f"unknown edit {key!r} (light, strength, colour, absolute, {', '.join(CONTROLS)}, "
                         "control:NAME, expression, yaw, pitch, roll, gaze, appearance)")


def parse(text: str) -> EditSpec:
    """An :class:`EditSpec` from ``key=value`` words (module docstring). ValueError with the
    offending word on anything it does not understand."""
    kw: dict = {}
    for word in text.replace(";", " ").split():
        if "=" not in word:
            raise ValueError(f"edit spec words are key=value, got {word!r}")
        _apply(kw, *word.split("=", 1))
    return EditSpec(**kw)


# ---------------------------------------------------------------------------- command line
def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    """The edit flags (``--light``, ``--smile``, ``--yaw``, ``--gaze``, ``--edit SPEC``...)."""
    g = parser.add_argument_group("edit (rig changes; or --edit with a spec, see `portraitrig.editspec`)")
    g.add_argument("--edit", dest="edit_spec", default=None, metavar="SPEC",
                   help="an edit spec, e.g. 'light=left smile=0.8 yaw=15' (flags below add to it)")
    for f in fields(EditSpec):
        if f.name == "controls":
            continue
        flag = "--" + f.metadata.get("flag", f.name)
        if f.type in ("bool",) or f.default is False:
            g.add_argument(flag, dest=f"edit:{f.name}", action="store_true", default=None, help=f.metadata["help"])
        else:
            g.add_argument(flag, dest=f"edit:{f.name}", default=None, help=f.metadata["help"],
                           metavar={"gaze": "YAW,PITCH", "colour": "R,G,B"}.get(f.name, f.name.upper()))
    g.add_argument("--light-env", dest="edit:light_env", default=None, help="environment map of any image type")
    g.add_argument("--gaze-yaw", dest="edit:gaze_yaw", default=None, metavar="DEG", help="gaze yaw alone (pitch 0)")
    g.add_argument("--gaze-pitch", dest="edit:gaze_pitch", default=None, metavar="DEG", help="gaze pitch alone (yaw 0)")
    for c in CONTROLS:
        g.add_argument("--" + c.replace("_", "-"), dest=f"edit:control:{c}", default=None, metavar="AMOUNT",
                       help=f"expression control {c}")
    g.add_argument("--control", dest="edit:controls", action="append", default=[], metavar="NAME=AMOUNT",
                   help="any named control")


def from_args(args: argparse.Namespace) -> EditSpec:
    """The EditSpec of the edit flags (``--edit SPEC`` first, the other flags over it)."""
    kw: dict = {}
    if getattr(args, "edit_spec", None):
        for word in args.edit_spec.replace(";", " ").split():
            if "=" not in word:
                raise ValueError(f"edit spec words are key=value, got {word!r}")
            _apply(kw, *word.split("=", 1))
    v = vars(args)
    for f in fields(EditSpec):
        val = v.get(f"edit:{f.name}")
        if f.name != "controls" and val not in (None, False):
            _apply(kw, f.name, "1" if val is True else str(val))
    if v.get("edit:light_env"):
        _apply(kw, "light", "env:" + v["edit:light_env"])
    if v.get("edit:gaze_yaw") is not None or v.get("edit:gaze_pitch") is not None:
        _apply(kw, "gaze", f"{v.get('edit:gaze_yaw') or 0},{v.get('edit:gaze_pitch') or 0}")
    for c in CONTROLS:
        if v.get(f"edit:control:{c}") is not None:
            _apply(kw, c, v[f"edit:control:{c}"])
    for pair in v.get("edit:controls") or []:
        if "=" not in pair:
            raise ValueError(f"--control wants NAME=AMOUNT, got {pair!r}")
        name, amount = pair.split("=", 1)
        _apply(kw, "control:" + name, amount)
    return EditSpec(**kw)


__all__ = ["EditSpec", "parse", "add_edit_arguments", "from_args", "light_source", "CONTROLS"]
