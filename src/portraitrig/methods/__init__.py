"""The registry of neural-renderer methods: one line each.

A method lives in its own package (``portraitrig.methods.<package>``) that defines:

- ``Config``: the typed dataclass of everything ``portraitrig train NAME`` takes (with a
  ``train: TrainConfig`` section), and ``PRESETS``: {name: zero-argument function -> Config},
  ``DEFAULT_PRESET``;
- ``Method``: its :class:`~portraitrig.training.method.TrainingMethod`, built by
  ``Method.create(config, data, device, init=None)``;
- ``Renderer``: its :class:`~portraitrig.neural.contract.NeuralRenderer`;
- ``DATA``: what ``train`` reads (one line of help), ``TINY_DATA``: a function making tiny
  synthetic training data for the contract test (tests/neural/test_contract.py runs every
  registered method on its ``tiny`` preset).

Imports are lazy: the CLI lists methods without importing diffusers or torch models.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class MethodSpec:
    name: str
    package: str
    summary: str

    def module(self) -> ModuleType:
        return importlib.import_module(self.package)


METHODS: dict[str, MethodSpec] = {
    "diffusion": MethodSpec("diffusion", "portraitrig.methods.diffusionrig",
                            "DiffusionRig: a diffusion model conditioned on rig buffers; photo edits by DDIM inversion"),
    "video": MethodSpec("video", "portraitrig.methods.video",
                        "video portraits: a feed-forward renderer trained on the target's video; reenactment and "
                        "relighting"),
    "avatar": MethodSpec("avatar", "portraitrig.methods.avatar",
                         "avatar: a deformable, expression-controlled radiance field of one person's head from a "
                         "short video (novel views and expressions)"),
    "splat": MethodSpec("splat", "portraitrig.methods.splat",
                        "Gaussian avatar: 3D Gaussians rigged to the face mesh, from a short video; real-time "
                        "novel views and expressions (portraitrig avatar renders it)"),
}


def get(name: str) -> MethodSpec:
    if name not in METHODS:
        from portraitrig.errors import InputError

        raise InputError(None, f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def load_renderer(directory, device="cpu", **options):
    """The renderer of any method's model folder (the folder's config names the method)."""
    from portraitrig.errors import InputError
    from portraitrig.neural.modelio import CONFIG, read_model_config

    method, _, _ = read_model_config(directory)
    if method not in METHODS:
        raise InputError(f"{directory}/{CONFIG}", f"model of unknown method {method!r}")
    return get(method).module().Renderer.from_pretrained(directory, device=device, **options)


__all__ = ["MethodSpec", "METHODS", "get", "load_renderer"]
