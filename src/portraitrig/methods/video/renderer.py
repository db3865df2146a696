"""Rendering a trained video renderer (the method's
:class:`~portraitrig.neural.contract.NeuralRenderer`).

``render(params, light=...)`` takes a *sequence* of RigParams in the target's fixed crop
(frame t is conditioned on frames t-window+1..t; ``context`` gives frames before the first
one when a long sequence is rendered in chunks) and returns the target's frames in that crop.
A model with a matte (``config.matte``) also renders each frame's person mask
(:meth:`VideoRenderer.render_matte`, ``FrameStream.last_matte``); for older models the person
mask of a rendered frame is the target's mean person mask united with the face mesh's. The
model folder also holds the target video's description (``target.safetensors``): every
frame's parameters, the crop, frame rate and path, which reenactment pastes back into.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from portraitrig.accel.cudagraph import GraphedFunction
from portraitrig.capture.types import Crop
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.methods.video.condition import Conditioner, retrieval_keys_of
from portraitrig.methods.video.method import TARGET, BankLight, write_target
from portraitrig.methods.video.model import METHOD, VERSION, VideoNet
from portraitrig.neural.contract import NeuralRenderer


@dataclass
class Target:
    """The target video: params (batch N, fixed-crop NDC), frame_index (N,) frame numbers,
    crop (the fixed crop), fps, video (its path), n_train (leading training frames)."""

    params: RigParams
    frame_index: torch.Tensor
    crop: Crop
    fps: float
    video: str
    n_train: int

    @classmethod
    def load(cls, path: str | Path) -> "Target":
        params, extras, meta = RigParams.load(path, with_extras=True)
        try:
            crop = Crop(extras["affine"].double().numpy(), int(meta["crop_size"]),
                        tuple(int(v) for v in extras["image_size"].tolist()))
            return cls(params, extras["frame_index"].long(), crop, float(meta["fps"]), str(meta["video"]),
                       int(meta["n_train"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"incomplete target description ({exc})") from None


class VideoRenderer(NeuralRenderer):
    """A trained video renderer. ``max_batch``: frames per network call. ``fast`` (default: on
    CUDA): the per-frame work after the rasterizer (head warps, whole-portrait normals and
    shading, the inputs, the network) is captured once per batch shape as a CUDA graph and
    replayed (:class:`~portraitrig.accel.cudagraph.GraphedFunction`): a batch-1 render
    otherwise waits on the host launching several hundred small kernels. ``fast=False`` is the
    plain path, the reference the tests compare it with."""

    method, version = METHOD, VERSION

    def __init__(self, net: VideoNet, target: Target | None = None, device="cpu", face_model=None,
                 max_batch: int = 16, fast: bool | None = None):
        self.device = torch.device(device)
        # CUDA graphs of the per-frame work after the rasterizer (None: on CUDA; ignored elsewhere)
        self.fast = self.device.type == "cuda" and (fast is None or bool(fast))
        self._graphs: dict[str, GraphedFunction] = {}
        self._pool = None     # one memory pool for all of them (GraphedFunction's ``pool``)
        self.net = net.to(self.device).eval()
        self.config = net.config
        self.size = self.config.image_size
        self.buffers = tuple(self.config.buffers)
        self.cond = Conditioner(self.config, self.device, face_model)
        self.cond.set_prior(self.net.person_prior, getattr(self.net, "reference", None),
                            getattr(self.net, "head_pose", None), getattr(self.net, "head_ellipse", None))
        self.face_model = self.cond.face_model
        self.target = target
        self.max_batch = max(1, int(max_batch))
        self.dtype = torch.float32
        self._bank_light: BankLight | None = None   # made at the first render (with a retrieval bank)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device="cpu", **kw) -> "VideoRenderer":
        net = VideoNet.from_pretrained(directory, device=device)
        tpath = Path(directory) / TARGET
        target = Target.load(tpath) if tpath.is_file() else None
        return cls(net, target, device=device, **kw)

    def save_pretrained(self, directory: str | Path) -> Path:
        d = self.net.save_pretrained(directory)
        t = self.target
        if t is not None:
            write_target(Path(d) / TARGET, t.params, t.frame_index, t.crop, t.fps, t.video, t.n_train)
        return d

    def use_half(self) -> None:
        """bf16 weights and activations on CUDA (faster; output in float)."""
        if self.device.type == "cuda":
            keys = getattr(self.net, "bank_keys", None)
            self.net = self.net.to(torch.bfloat16)
            if keys is not None:     # the retrieval's landmark keys stay float32: no other pick in bf16
                self.net.bank_keys = keys
            self.dtype = torch.bfloat16
            self._graphs.clear()      # they hold the float32 weights
            self._pool = None

    def _graphed(self, name: str, fn) -> "GraphedFunction":
        g = self._graphs.get(name)
        if g is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            g = self._graphs[name] = GraphedFunction(fn, warmup=1, pool=self._pool)
        return g

    # ---------------------------------------------------------------- the contract
    def appearance(self, crops: Sequence[np.ndarray], params: RigParams, **options):
        """A person-specific renderer keeps nothing of other photos: None."""
        return None

    @torch.no_grad()
    def render(self, params: RigParams, appearance=None, light=None, context: RigParams | None = None,
               sequence: bool = True) -> torch.Tensor:
        """Frames (B, 3, size, size) in [0, 1] of the params sequence (batch B).

        light: None (each item's own), or a (9, 3) / (B, 9, 3) SH light. context: frames just
        before the sequence (their buffers fill the first frames' windows). sequence False:
        unrelated items, each one's window is itself."""
        return self._render(params, light, context, sequence)[:, :3]

    @torch.no_grad()
    def render_matte(self, params: RigParams, light=None, context: RigParams | None = None,
                     sequence: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`render`'s frames and their person mattes (B, 1, S, S) in [0, 1] (None for a
        model without a matte)."""
        out = self._render(params, light, context, sequence)
        return out[:, :3], (out[:, 3:] if self.config.matte else None)

    def _render(self, params: RigParams, light, context: RigParams | None, sequence: bool) -> torch.Tensor:
        B = len(params)
        if B == 0:
            return torch.zeros(0, 4 if self.config.matte else 3, self.size, self.size, device=self.device)
        p = params.to(self.device, torch.float32)
        L = p.light if light is None else \
            torch.as_tensor(light, dtype=torch.float32, device=self.device).expand(B, 9, 3)
        k = 0
        if context is not None and sequence and len(context) and self.config.window > 1:
            ctx = context[max(0, len(context) - self.config.window + 1):].to(self.device, torch.float32)
            k = len(ctx)
            p = RigParams.cat([ctx, p])
        faces = torch.cat([self.cond.face(p[i:i + 64]) for i in range(0, len(p), 64)])
        return self.render_buffers(faces, k, L, sequence, self.head_warps(p[k:]), self.retrieve(p[k:], L))

    @torch.no_grad()
    def retrieve(self, params: RigParams, light: torch.Tensor) -> torch.Tensor | None:
        """(B, 3 x retrieve_count, S, S) in [0, 1]: for each frame the retrieval bank's frame whose
        landmarks lie nearest its own (:meth:`~Conditioner.retrieval_keys`; with ``retrieve_count``
        > 1 spread as :meth:`~Conditioner.nearest_spread` does), relit from its own light to the
        frame's ``light`` (B, 9, 3) as in training (:class:`BankLight`, from the bank frames' rigs
        in the target description); None for a model without a bank. With ``fast`` the search
        and the relighting replay as a CUDA graph."""
        if not self.config.retrieve:
            return None
        self.bank_light()          # made once, before any graph
        p = params.to(self.device, torch.float32)
        fn = self._graphed("retrieve", self._retrieved) if self.fast else self._retrieved
        L = light.to(self.device, torch.float32)
        n = self.max_batch        # as the network's chunks: the relighting's working memory is a chunk's
        return torch.cat([fn(*(x[i:i + n] for x in (p.identity, p.expression, p.gaze, p.scale, p.rotation,
                                                    p.translation, L)))
                          for i in range(0, len(p), n)])

    def _retrieved(self, identity, expression, gaze, scale, rotation, translation, light) -> torch.Tensor:
        """:meth:`retrieve` of the frames' rig fields and light: tensors only, no host
        synchronisation."""
        keys = retrieval_keys_of(self.cond.face_model, identity, expression, gaze, scale, rotation, translation)
        c = self.config
        pick = Conditioner.nearest_spread(keys, self.net.bank_keys, c.retrieve_count, self.net.bank_index,
                                          c.retrieve_apart)
        return self._bank_light.retrieved(self.net.bank, pick, light)

    def bank_light(self) -> BankLight:
        """The retrieval bank's :class:`BankLight`, made once from the bank frames' rigs (the
        target description's frames ``bank_index``), as the training made it."""
        if self._bank_light is None:
            if self.target is None:
                raise InputError(None, "this video model has a retrieval bank but no target description "
                                       f"({TARGET}) to relight it with")
            p = self.target.params[self.net.bank_index.cpu()].to(self.device, torch.float32)
            normals, mask, face = [], [], []
            for i in range(0, len(p), 32):
                f = self.cond.face(p[i:i + 32])
                h = self.head_warps(p[i:i + 32])
                normals.append(self.cond.prior_normals(f, h))
                mask.append(self.cond.cond_mask(f).float())
                face.append(self.cond.face_mask(f).float())
            self._bank_light = BankLight(torch.cat(normals), torch.cat(mask), torch.cat(face), p.light)
        return self._bank_light

    def head_warps(self, params: RigParams) -> torch.Tensor | None:
        """The frames' head warps (the conditioner's ``head_warp``) when the model follows the
        head, else None."""
        if not self.config.follow_head:
            return None
        p = params.to(self.device, torch.float32)
        fn = self._graphed("heads", self.cond.head_warp_of) if self.fast else self.cond.head_warp_of
        return torch.cat([fn(p.scale[i:i + 256], p.rotation[i:i + 256], p.translation[i:i + 256],
                             p.identity[i:i + 256]) for i in range(0, len(p), 256)])

    @torch.no_grad()
    def drawn_mask(self, params: RigParams) -> torch.Tensor:
        """(B, 1, S, S) where the renderer may draw the person of frames ``params``: the
        conditioner's :meth:`~Conditioner.drawn_mask` of their face buffers and head warps."""
        p = params.to(self.device, torch.float32)
        return self.cond.drawn_mask(self.cond.face(p), self.head_warps(p))

    @torch.no_grad()
    def render_buffers(self, faces: torch.Tensor, k: int, light: torch.Tensor, sequence: bool = True,
                       heads: torch.Tensor | None = None, retrieved: torch.Tensor | None = None) -> torch.Tensor:
        """Frames of face buffers ``faces[k:]`` (T, C_buf, S, S; ``faces[:k]`` their context)
        under ``light`` (T - k, 9, 3) -> (T - k, 3, S, S) in [0, 1], (T - k, 4, S, S) with the
        matte last for a model with one; ``heads`` (T - k, 2 or 4, 3) the rendered frames' head
        warps (with ``follow_head``; the context's are not needed); ``retrieved`` (T - k, 3 x
        retrieve_count, S, S) their retrieved bank frames (:meth:`retrieve`, with ``retrieve``)."""
        out = []
        B, w = faces.shape[0] - k, self.config.window
        name = "sequence" if sequence else "items"
        fn = self._frames_of_sequence if sequence else self._frames_of_items
        if self.fast:
            fn = self._graphed(name, fn)
        for i in range(0, B, self.max_batch):
            lo, hi = k + i, k + min(B, i + self.max_batch)         # the frames; their windows reach back
            first = max(0, lo - (w - 1)) if sequence else lo
            args = (faces[first:hi], light[i:i + hi - lo])
            out.append(fn(*args, *(a[i:i + hi - lo] for a in (heads, retrieved) if a is not None)))
        return torch.cat(out)

    def _frames_of_sequence(self, faces: torch.Tensor, light: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """The network's output for the last ``light.shape[0]`` frames of ``faces`` (T, C_buf, S,
        S), each conditioned on the window of frames before it (clamped at ``faces[0]``);
        ``extra``: the frames' head warps (with ``follow_head``), then their retrieved frames
        (with ``retrieve``). Tensors only, no host synchronisation (``fast`` replays it as a
        CUDA graph)."""
        T, n = faces.shape[0], light.shape[0]
        t = torch.arange(T - n, T, device=faces.device)
        return self._frames(faces, t, Conditioner.window_index(t, self.config.window), light, *extra)

    def _frames_of_items(self, faces: torch.Tensor, light: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """:meth:`_frames_of_sequence` of unrelated items: each one's window is itself."""
        t = torch.arange(faces.shape[0], device=faces.device)
        return self._frames(faces, t, t[:, None].expand(-1, self.config.window), light, *extra)

    def _frames(self, faces, t, win, light, *extra) -> torch.Tensor:
        extra = list(extra)
        heads = extra.pop(0) if self.config.follow_head else None
        retrieved = extra.pop(0) if self.config.retrieve else None
        f = faces[t]
        x = self.cond.inputs(faces, win, self.cond.prior_normals(f, heads), light, self.cond.cond_mask(f), heads,
                             retrieved)
        return self.net(x.to(self.dtype), clamp=True).float()

    def stream(self) -> "FrameStream":
        """Frame-by-frame rendering of one sequence (keeps the window's buffers)."""
        return FrameStream(self)


class FrameStream:
    """Renders a sequence a few frames at a time: ``stream(params, light=None)`` -> (b, 3, S, S);
    the face buffers of the last window - 1 frames are kept for the next call's windows, and
    those of the frames just rendered in ``last_faces``, their head warps in ``last_heads``
    (where the person may be: :meth:`Conditioner.drawn_mask`) and their mattes in
    ``last_matte`` ((b, 1, S, S); None for a model without a matte)."""

    def __init__(self, renderer: VideoRenderer):
        self.r = renderer
        self.faces: torch.Tensor | None = None
        self.last_faces: torch.Tensor | None = None
        self.last_heads: torch.Tensor | None = None
        self.last_matte: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, params: RigParams, light=None) -> torch.Tensor:
        r = self.r
        p = params.to(r.device, torch.float32)
        L = p.light if light is None else \
            torch.as_tensor(light, dtype=torch.float32, device=r.device).expand(len(p), 9, 3)
        new = r.cond.face(p)
        self.last_faces = new
        faces = new if self.faces is None else torch.cat([self.faces, new])
        self.last_heads = r.head_warps(p)
        k = faces.shape[0] - new.shape[0]
        out = r.render_buffers(faces, k, L, heads=self.last_heads, retrieved=r.retrieve(p, L))
        keep = r.config.window - 1
        self.faces = faces[faces.shape[0] - keep:] if keep > 0 else None
        self.last_matte = out[:, 3:] if r.config.matte else None
        return out[:, :3]


__all__ = ["VideoRenderer", "FrameStream", "Target", "write_target"]
