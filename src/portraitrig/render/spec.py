"""Buffer specs and network conditioning: what each rig buffer holds and how neural renderers
see it.

Every buffer :func:`~portraitrig.render.buffers.render_buffers` makes has a :class:`BufferSpec`
(channels, value range, how it is normalised for a network). :func:`to_network` stacks buffers
into one ``(B, C, H, W)`` tensor of values in about [-1, 1]; :func:`from_network` inverts it;
:class:`BufferStack` renders a params batch straight to that tensor (what every neural renderer
consumes); :func:`preview` turns a stack into viewable RGB columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from portraitrig.face.base import REGIONS


@dataclass(frozen=True)
class BufferSpec:
    """channels; ``unit``: "colour" (values in [0, 1], normalised to ``2x - 1``), "normal"
    (unit vectors, as they are), "depth" (NDC depth, as it is), "index" (region ids; not
    network input)."""

    channels: int
    unit: str

    @property
    def normalised(self) -> bool:
        return self.unit == "colour"


SPECS: dict[str, BufferSpec] = {
    "normal": BufferSpec(3, "normal"),
    "albedo": BufferSpec(3, "colour"),
    "shading": BufferSpec(3, "colour"),
    "shaded": BufferSpec(3, "colour"),
    "mask": BufferSpec(1, "colour"),
    "depth": BufferSpec(1, "depth"),
    "region": BufferSpec(1, "index"),
    "regions": BufferSpec(len(REGIONS), "colour"),
    "uv": BufferSpec(2, "colour"),
}
NETWORK_BUFFERS = tuple(n for n, s in SPECS.items() if s.unit != "index")


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; ValueError for names that are not network buffers."""
    unknown = [n for n in names if n not in NETWORK_BUFFERS]
    if unknown:
        raise ValueError(f"unknown buffer name(s) {unknown}; known: {', '.join(NETWORK_BUFFERS)}")
    return tuple(names)


def channels(names: Sequence[str]) -> int:
    return sum(SPECS[n].channels for n in check_names(names))


def slices(names: Sequence[str]) -> dict[str, slice]:
    """Channel slice of each buffer in a :func:`to_network` stack of ``names``."""
    out, o = {}, 0
    for n in check_names(names):
        out[n] = slice(o, o + SPECS[n].channels)
        o += SPECS[n].channels
    return out


def to_network(buffers: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Stack buffers in ``names`` order, normalised to about [-1, 1]: colours and masks (in
    [0, 1]) as ``2x - 1``, normals and depth as they are. -> (B, C, H, W)."""
    out = []
    for n in check_names(names):
        if n not in buffers:
            raise KeyError(f"buffer {n!r} missing (have {sorted(buffers)})")
        b = buffers[n]
        if b.shape[1] != SPECS[n].channels:
            raise ValueError(f"buffer {n!r} has {b.shape[1]} channels, expected {SPECS[n].channels}")
        out.append(b * 2 - 1 if SPECS[n].normalised else b)
    return torch.cat(out, 1)


def from_network(stack: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_network`: ``{name: (B, C, H, W)}`` in each buffer's own range."""
    out = {}
    for n, s in slices(names).items():
        b = stack[:, s]
        out[n] = (b + 1) / 2 if SPECS[n].normalised else b
    return out


def preview(stack: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
    """One (B, 3, H, W) image in [0, 1] per buffer of a network stack (normals as ``(n+1)/2``,
    one-hot regions as their last three channels, one-channel buffers as grey)."""
    cols = []
    for n, b in from_network(stack.float(), names).items():
        if SPECS[n].unit == "normal":
            b = b * 0.5 + 0.5
        elif n == "regions":
            b = b[:, -3:]
        if b.shape[1] == 2:
            b = torch.cat([b, torch.zeros_like(b[:, :1])], 1)
        cols.append((b if b.shape[1] >= 3 else b[:, :1].expand(-1, 3, -1, -1))[:, :3].clamp(0, 1))
    return cols


class BufferStack:
    """RigParams -> the network stack ``(B, C, S, S)`` of ``names`` (rendered with the batched
    rasterizer on ``device``, no gradients). The conditioning every neural renderer consumes."""

    def __init__(self, names: Sequence[str], size: int, device="cpu", face_model=None):
        from portraitrig.render.buffers import Renderer

        if face_model is None:
            from portraitrig.face.model import load_default_model

            face_model = load_default_model()
        self.names = check_names(names)
        self.size = int(size)
        self.renderer = Renderer(face_model, size=size, device=device, names=self.names)

    @property
    def face_model(self):
        return self.renderer.model

    @property
    def channels(self) -> int:
        return channels(self.names)

    @torch.no_grad()
    def __call__(self, params) -> torch.Tensor:
        return to_network(self.renderer(params), self.names)


__all__ = ["BufferSpec", "SPECS", "NETWORK_BUFFERS", "check_names", "channels", "slices", "to_network",
           "from_network", "preview", "BufferStack"]
