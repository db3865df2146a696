"""Typed configs: dataclasses are the single source of every default.

A config is a (possibly nested) ``@dataclass``; a field's help text lives in
``field(metadata={"help": "..."})`` or, for fields with plain defaults, nowhere (the name must say
it). This module turns configs into JSON and back (strictly: an unknown or mistyped key is an
error naming the file), and into command-line flags: :func:`add_config_arguments` adds one flag per
scalar field (nested fields as ``--outer.inner``; ``_`` becomes ``-``), :func:`apply_arguments`
writes the flags the user gave over a config (a preset's). So a default exists once: in the
dataclass, or in the named preset that overrides it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from portraitrig.errors import InputError

T = TypeVar("T")

_SCALARS = (bool, int, float, str)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp) -> tuple[Any, bool]:
    """(inner type, optional?) of ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def to_dict(cfg) -> dict:
    """A config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value, tp, where: str):
    """``value`` (from JSON) as type ``tp``; ValueError naming ``where`` if it does not fit."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where} must not be null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object")
        return _from_mapping(tp, value, where + ".")
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be text, got {value!r}")
        return value
    return value


def _from_mapping(cls, data: dict, prefix: str = ""):
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(prefix + u for u in unknown)} "
                         f"(known: {', '.join(sorted(names))})")
    kw = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kw)


def from_dict(cls: type[T], data: dict, path: str | Path | None = None) -> T:
    """A config from JSON data: unknown keys and wrong types raise InputError(path, ...);
    then the config's own ``validate()`` (if any) runs."""
    try:
        cfg = _from_mapping(cls, data)
        validate(cfg)
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"invalid configuration: {exc}") from None
    return cfg


class DictConfig:
    """Mixin for a model config dataclass: ``to_dict`` (``dataclasses.asdict``) and the strict
    ``from_dict`` of this module (``path`` names the file in errors)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], d: dict, path: str | Path | None = None) -> T:
        return from_dict(cls, d, path)


def validate(cfg) -> None:
    """Run ``validate()`` of the config and of every nested config (ValueError on a bad value)."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            validate(v)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def load_json(cls: type[T], path: str | Path, key: str | None = None) -> T:
    """A config from a JSON file (``key``: the object under that key)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such config file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"cannot read config ({exc.__class__.__name__}: {exc})") from None
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise InputError(path, f"no {key!r} object in this file")
        data = data[key]
    if not isinstance(data, dict):
        raise InputError(path, "a config file holds one JSON object")
    return from_dict(cls, data, path)


# ---------------------------------------------------------------------------- command line
def _flag(path: str) -> str:
    return "--" + path.replace("_", "-")


def _scalar_fields(cls, prefix: str = ""):
    """(dotted path, field, type) of every scalar / tuple-of-scalars field, nested included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            yield from _scalar_fields(tp, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hints[f.name]


def finite_float(text: str) -> float:
    """argparse type: a finite number (bad values are usage errors, exit 2)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _parser_for(tp, flag: str) -> Callable[[str], Any]:
    inner, optional = _unwrap_optional(tp)

    def parse(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        if inner is int:
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if inner is float:
            return finite_float(text)
        if typing.get_origin(inner) in (tuple, list):
            args = [a for a in typing.get_args(inner) if a is not Ellipsis]
            item = _parser_for(args[0] if args else str, flag)
            return tuple(item(t) for t in text.split(",") if t != "")
        return text

    return parse


def _get(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser, cls, defaults=None, title: str | None = None,
                         skip: tuple[str, ...] = (), flatten: tuple[str, ...] = ("train",)) -> None:
    """One flag per scalar field of ``cls`` (nested: ``--outer.inner``, but the sections named in
    ``flatten`` without their prefix: ``--steps`` for ``train.steps``). Every flag defaults to
    "not given" (None); the help shows the value in ``defaults`` (a config instance, e.g. the
    default preset). Booleans get ``--flag`` / ``--no-flag``."""
    group = parser.add_argument_group(title) if title else parser
    for path, f, tp in _scalar_fields(cls):
        if path in skip:
            continue
        head, _, rest = path.partition(".")
        name = rest if rest and head in flatten else path
        help_text = f.metadata.get("help", "")
        if defaults is not None:
            shown = _get(defaults, path)
            if isinstance(shown, tuple):
                shown = ",".join(map(str, shown))
            help_text = f"{help_text} (default: {shown})".strip()
        help_text = help_text.replace("%", "%%")  # argparse formats help with %: "5 % of" is text here
        dest = "cfg:" + path
        inner, _ = _unwrap_optional(tp)
        if inner is bool:
            group.add_argument(_flag(name), dest=dest, action="store_const", const=True, default=None,
                               help=help_text + " (--no-" + name.rsplit(".", 1)[-1].replace("_", "-") + ": off)")
            parent, _, last = name.rpartition(".")
            group.add_argument(_flag((parent + "." if parent else "") + "no-" + last), dest=dest,
                               action="store_const", const=False, help=argparse.SUPPRESS)
            continue
        choices = f.metadata.get("choices")
        group.add_argument(_flag(name), dest=dest, type=_parser_for(tp, _flag(name)), default=None,
                           choices=choices, metavar=f.metadata.get("metavar", inner.__name__.upper()
                                                                   if isinstance(inner, type) else "VALUE"),
                           help=help_text)


def given_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags the user gave: {dotted path: value}."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}


def replace_path(cfg: T, path: str, value) -> T:
    """A copy of ``cfg`` with the (dotted) field replaced."""
    head, _, rest = path.partition(".")
    if rest:
        return dataclasses.replace(cfg, **{head: replace_path(getattr(cfg, head), rest, value)})
    return dataclasses.replace(cfg, **{head: value})


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def set_from_text(cfg: T, settings: dict[str, str]) -> T:
    """``cfg`` with ``{dotted path: text}`` settings written over it, each parsed as its field's
    type (booleans: 1/0, true/false, yes/no, on/off), any nested field included (also those with
    no CLI flag, e.g. ``model.body``), then validated. ValueError naming the setting otherwise."""
    for path, text in settings.items():
        node, tp = cfg, None
        for part in path.split("."):
            hints = _hints(type(node)) if dataclasses.is_dataclass(node) else {}
            if part not in hints:
                raise ValueError(f"no setting {path!r}")
            tp, node = hints[part], getattr(node, part)
        inner, _ = _unwrap_optional(tp)
        try:
            value = _BOOLS[text.lower()] if inner is bool else _parser_for(tp, path)(text)
        except KeyError:
            raise ValueError(f"{path} wants 1 or 0 (true / false), got {text!r}") from None
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{path}: {exc}") from None
        cfg = replace_path(cfg, path, value)
    validate(cfg)
    return cfg


def apply_arguments(cfg: T, args: argparse.Namespace) -> T:
    """``cfg`` with every given config flag written over it, then validated (ValueError)."""
    for path, value in given_arguments(args).items():
        cfg = replace_path(cfg, path, value)
    validate(cfg)
    return cfg


__all__ = ["to_dict", "from_dict", "load_json", "validate", "finite_float", "add_config_arguments", "apply_arguments",
           "given_arguments", "replace_path", "set_from_text"]
