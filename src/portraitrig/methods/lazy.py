"""Lazy ``Method`` / ``Renderer`` exports of a method package: the network code (torch models,
diffusers) is imported on first use, so the CLI can list methods without it."""
from __future__ import annotations

import importlib


def lazy_classes(package: str, **names: str):
    """A module ``__getattr__`` for ``package``: ``NAME="module:Class"`` returns
    ``package.module.Class`` when ``NAME`` is first looked up."""
    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(name)
        module, cls = names[name].split(":")
        return getattr(importlib.import_module(f"{package}.{module}"), cls)

    return __getattr__


__all__ = ["lazy_classes"]
