"""RigParams: the batched parameters of the portrait rig, the contract between fit, render,
edits and the neural renderers.

Camera model: weak perspective (scaled orthographic), as DECA / DiffusionRig use. A canonical
head-space point X (model units, head frontal, x to image right, y down, z away from the
camera) maps to normalised crop coordinates ("NDC", -1..1 across the crop, x right, y down) by

    p = scale * R(rotation) @ X;   ndc_xy = p_xy + translation;   depth = p_z

and to crop pixels by ``px = (ndc + 1) / 2 * crop_size``. NDC makes the parameters independent
of the crop resolution (256, 512, 1024 render the same face).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

TENSOR_FIELDS = ("scale", "rotation", "translation", "identity", "expression", "gaze", "light", "albedo")
FORMAT = "portraitrig.RigParams"
FORMAT_VERSION = "1"
MAX_CROP_SIZE = 8192  # largest crop_size a parameter file may name (renders default to it)
# per-item shape of each tensor field; None: any size (the face model's dimension)
_ITEM_SHAPES = {"scale": (1,), "rotation": (3,), "translation": (2,), "identity": (None,),
                "expression": (None,), "gaze": (2, 2), "light": (9, 3), "albedo": (None, 3)}


@dataclass
class RigParams:
    """Batched rig parameters. Every tensor field has the batch size B as its first dimension.

    scale: (B, 1) weak-perspective scale (model units -> NDC).
    rotation: (B, 3) axis-angle (radians), head space -> camera space.
    translation: (B, 2) NDC translation.
    identity: (B, n_id) identity coefficients (unit variance prior).
    expression: (B, n_expr) expression coefficients (unit variance prior).
    gaze: (B, 2, 2) per eye [subject's right, subject's left] x [yaw, pitch], radians, head frame;
        positive yaw turns the eye towards image right, positive pitch looks down.
    light: (B, 9, 3) order-2 spherical-harmonics irradiance coefficients per RGB channel
        (see portraitrig.light.sh for the basis and normalisation).
    albedo: (B, V, 3) per-vertex albedo in [0, 1] (gamma-encoded like the images).
    model: face model id, e.g. "portraitrig-mp478@1".
    crop_size: pixel size of the crop the fit was made on (informational; NDC is size-free).
    sources: per-item source description (file path, "video.mp4#frame=12", ...).
    """

    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    identity: torch.Tensor
    expression: torch.Tensor
    gaze: torch.Tensor
    light: torch.Tensor
    albedo: torch.Tensor
    model: str = "portraitrig-mp478@1"
    crop_size: int = 256
    sources: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def neutral(cls, model, batch: int = 1, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, crop_size: int = 256) -> "RigParams":
        """Frontal, mean identity, neutral expression, eyes forward, ambient white light,
        the model's mean albedo; the face fills the crop like an FFHQ alignment."""
        V = model.n_vertices
        kw = dict(device=device, dtype=dtype)
        light = torch.zeros(batch, 9, 3, **kw)
        light[:, 0, :] = 1.0  # see portraitrig.light.sh: L0 = 1 gives unit ambient shading
        albedo = model.mean_albedo.to(**kw).expand(batch, V, 3).clone()
        return cls(
            scale=torch.full((batch, 1), float(model.default_scale), **kw),
            rotation=torch.zeros(batch, 3, **kw),
            translation=torch.zeros(batch, 2, **kw) + torch.as_tensor(model.default_translation, **kw),
            identity=torch.zeros(batch, model.n_id, **kw),
            expression=torch.zeros(batch, model.n_expr, **kw),
            gaze=torch.zeros(batch, 2, 2, **kw),
            light=light,
            albedo=albedo,
            model=model.id,
            crop_size=crop_size,
            sources=[""] * batch,
        )

    # ------------------------------------------------------------------ batch helpers
    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in TENSOR_FIELDS}

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    @property
    def batch_size(self) -> int:
        return len(self)

    @property
    def device(self) -> torch.device:
        return self.scale.device

    def replace(self, **changes: Any) -> "RigParams":
        """A copy with some fields replaced (tensors are not cloned)."""
        return dataclasses.replace(self, **changes)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "RigParams":
        kw = {}
        if device is not None:
            kw["device"] = device
        if dtype is not None:
            kw["dtype"] = dtype
        return self.replace(**{k: v.to(**kw) for k, v in self.tensors().items()})

    def clone(self) -> "RigParams":
        return self.replace(**{k: v.clone() for k, v in self.tensors().items()}, sources=list(self.sources))

    def detach(self) -> "RigParams":
        return self.replace(**{k: v.detach() for k, v in self.tensors().items()})

    def __getitem__(self, idx) -> "RigParams":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        out = {k: v[idx] for k, v in self.tensors().items()}
        srcs = self.sources or [""] * len(self)
        if isinstance(idx, slice):
            sources = list(srcs[idx])
        else:
            ii = torch.as_tensor(idx).reshape(-1)
            if ii.dtype == torch.bool:
                ii = ii.nonzero().reshape(-1)
            sources = [srcs[int(i)] for i in ii]
        return self.replace(**out, sources=sources)

    def repeat(self, n: int) -> "RigParams":
        """Each item repeated n times (item-major: a a a b b b)."""
        out = {k: v.repeat_interleave(n, dim=0) for k, v in self.tensors().items()}
        srcs = self.sources or [""] * len(self)
        return self.replace(**out, sources=[s for s in srcs for _ in range(n)])

    @classmethod
    def cat(cls, items: Sequence["RigParams"]) -> "RigParams":
        if not items:
            raise ValueError("RigParams.cat needs at least one item")
        first = items[0]
        for p in items[1:]:
            if p.model != first.model:
                raise ValueError(f"cannot concatenate parameters of models {first.model!r} and {p.model!r}")
        out = {k: torch.cat([getattr(p, k) for p in items], 0) for k in TENSOR_FIELDS}
        sources = [s for p in items for s in (p.sources or [""] * len(p))]
        return first.replace(**out, sources=sources)

    # ------------------------------------------------------------------ geometry helpers
    def rotation_matrix(self) -> torch.Tensor:
        """(B, 3, 3) rotation matrices."""
        return axis_angle_to_matrix(self.rotation)

    def euler_degrees(self) -> torch.Tensor:
        """(B, 3) yaw, pitch, roll in degrees (see :func:`matrix_to_euler`)."""
        return torch.rad2deg(matrix_to_euler(self.rotation_matrix()))

    # ------------------------------------------------------------------ checks
    def check(self, what: str | Path | None = None, model=None) -> "RigParams":
        """Raise InputError(what, ...) unless every tensor has its documented shape (one batch
        size, floating point), every value is finite, ``sources`` has one entry per item (or
        none), and - with a ``model`` (a FaceModel) - the parameters are that model's.
        Returns ``self``."""
        from portraitrig.errors import InputError

        B = None
        for k in TENSOR_FIELDS:
            v = getattr(self, k)
            want = _ITEM_SHAPES[k]
            if not torch.is_tensor(v) or not v.is_floating_point():
                kind = f"dtype {v.dtype}" if torch.is_tensor(v) else type(v).__name__
                raise InputError(what, f"{k} must be a floating-point tensor, not {kind}")
            if v.ndim != 1 + len(want) or any(w is not None and w != n for w, n in zip(want, v.shape[1:])):
                shape = "(B, " + ", ".join("n" if w is None else str(w) for w in want) + ")"
                raise InputError(what, f"{k} has shape {tuple(v.shape)}, expected {shape}")
            if B is None:
                B = int(v.shape[0])
            elif v.shape[0] != B:
                raise InputError(what, f"{k} has {v.shape[0]} items, scale has {B}")
        if self.sources and len(self.sources) != B:
            raise InputError(what, f"{len(self.sources)} sources for {B} items")
        self.check_finite(what)
        if model is not None:
            self.check_model(model, what)
        return self

    def check_finite(self, what: str | Path | None = None) -> "RigParams":
        """Raise ``InputError(what, "non-finite values in <field>")`` when a tensor holds NaN
        or inf. Returns ``self``."""
        from portraitrig.errors import InputError

        for k in TENSOR_FIELDS:
            v = getattr(self, k)
            if not bool(torch.isfinite(v).all()):
                raise InputError(what, f"non-finite values in {k} ({_count_bad(v)} of {v.numel()})")
        return self

    def check_model(self, model, what: str | Path | None = None) -> "RigParams":
        """Raise InputError(what, ...) unless these parameters were made for ``model`` (its id,
        identity / expression sizes and vertex count). Returns ``self``."""
        from portraitrig.errors import InputError

        if self.model != model.id:
            raise InputError(what, f"made for face model {self.model!r}, this model is {model.id!r}")
        for k, n, unit in (("identity", model.n_id, "coefficients"), ("expression", model.n_expr, "coefficients"),
                           ("albedo", model.n_vertices, "vertices")):
            got = int(getattr(self, k).shape[1])
            if got != n:
                raise InputError(what, f"{k} has {got} {unit}, this model has {n}")
        return self

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "crop_size": str(self.crop_size),
            "sources": json.dumps(list(self.sources)),
        }

    def save(self, path: str | Path, extras: dict[str, torch.Tensor | np.ndarray] | None = None,
             meta: dict[str, Any] | None = None) -> Path:
        """Write to ``.safetensors`` (metadata in its header) or ``.npz`` (metadata as a JSON
        string entry ``__meta__``), atomically. ``extras`` are extra named arrays saved beside
        (e.g. the crop affine, image-space vertices)."""
        from portraitrig.io.atomic import atomic_path

        path = Path(path)
        md = self.metadata()
        if meta:
            md["extra"] = json.dumps(meta)
        arrays = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        for k, v in (extras or {}).items():
            arrays[f"extra.{k}"] = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).detach().cpu().contiguous()
        with atomic_path(path) as tmp:
            if path.suffix == ".npz":
                np.savez_compressed(tmp, __meta__=np.array(json.dumps(md)),
                                    **{k: v.numpy() for k, v in arrays.items()})
            elif path.suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file(arrays, str(tmp), metadata=md)
            else:
                raise ValueError(f"{path}: unknown parameter file type (use .safetensors or .npz)")
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             with_extras: bool = False, model=None):
        """Read a file written by :meth:`save`. Returns ``params`` or ``(params, extras, meta)``.

        Every problem is an InputError naming the file: unreadable or not a parameter file,
        another format version, malformed metadata, wrong shapes, NaN / inf (in extras too),
        and - with a ``model`` (a FaceModel) - parameters made for another model
        (see :meth:`check`)."""
        from portraitrig.errors import InputError

        path = Path(path)
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    if "__meta__" not in z.files:
                        raise InputError(path, "not a portraitrig parameter file (no metadata)")
                    md = json.loads(str(z["__meta__"]))
                    arrays = {k: torch.from_numpy(z[k]) for k in z.files if k != "__meta__"}
            elif path.suffix == ".safetensors":
                from portraitrig.io.tensorfile import read_safetensors

                arrays, md = read_safetensors(path, "parameter file")
            else:
                raise InputError(path, "unknown parameter file type (use .safetensors or .npz)")
        except InputError:
            raise
        except Exception as exc:  # corrupt or truncated file
            raise InputError(path, f"cannot read parameter file ({exc.__class__.__name__}: {exc})") from exc
        if not isinstance(md, dict) or md.get("format") != FORMAT:
            raise InputError(path, "not a portraitrig parameter file")
        version = md.get("format_version")
        if version != FORMAT_VERSION:
            raise InputError(path, f"parameter file format version {version!r} is not supported "
                                   f"(this portraitrig reads version {FORMAT_VERSION})")
        missing = [k for k in TENSOR_FIELDS if k not in arrays]
        if missing:
            raise InputError(path, f"parameter file lacks {', '.join(missing)}")
        model_id, crop_size, sources, meta = _parse_metadata(md, path)
        params = cls(**{k: arrays[k] for k in TENSOR_FIELDS}, model=model_id, crop_size=crop_size, sources=sources)
        params.check(path, model)
        extras = {k[len("extra."):]: v for k, v in arrays.items() if k.startswith("extra.")}
        for k, v in extras.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise InputError(path, f"non-finite values in extra {k} ({_count_bad(v)} of {v.numel()})")
        params = params.to(device)
        return (params, extras, meta) if with_extras else params


def _parse_metadata(md: dict, path: Path) -> tuple[str, int, list[str], dict]:
    """(model id, crop size, sources, extra meta) from a parameter file's metadata;
    InputError naming ``path`` when a field is missing or malformed."""
    from portraitrig.errors import InputError

    model_id = md.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise InputError(path, "parameter file names no face model")
    try:
        crop_size = int(md.get("crop_size", 256))
    except (TypeError, ValueError):
        raise InputError(path, f"crop_size {md.get('crop_size')!r} is not a whole number") from None
    if not 1 <= crop_size <= MAX_CROP_SIZE:
        raise InputError(path, f"crop_size {crop_size} is outside 1..{MAX_CROP_SIZE}")
    try:
        sources = json.loads(md.get("sources", "[]"))
        meta = json.loads(md["extra"]) if "extra" in md else {}
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"malformed metadata ({exc})") from None
    if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
        raise InputError(path, "malformed metadata: sources must be a list of strings")
    if not isinstance(meta, dict):
        raise InputError(path, "malformed metadata: extra must be a JSON object")
    return model_id, crop_size, sources, meta


def _count_bad(v: torch.Tensor) -> int:
    return int((~torch.isfinite(v)).sum())


# ---------------------------------------------------------------------- rotations
def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix (Rodrigues, safe at 0)."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-12
    # sin(t)/t and (1-cos t)/t^2 with Taylor fallbacks near zero
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle (via quaternions, stable)."""
    q = matrix_to_quaternion(R)
    w, xyz = q[..., :1], q[..., 1:]
    n = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(n, w)
    scale = torch.where(n > 1e-8, angle / n.clamp_min(1e-12), 2.0 / w.clamp_min(1e-12))
    return xyz * scale


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0."""
    m = R
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + t, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # (..., 4, 4): each row is 4*q*q_i for the i-th largest-component choice
    diag = torch.stack([1 + t, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation from yaw (about y), pitch (about x), roll (about z), radians: R = Ry @ Rx @ Rz.

    Axes are the camera's (x right, y down, z away from the camera); the face looks along -z.
    Signs follow the right-hand rule about each axis.
    """
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    Ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(yaw.shape + (3, 3))
    Rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(yaw.shape + (3, 3))
    Rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).reshape(yaw.shape + (3, 3))
    return Ry @ Rx @ Rz


def matrix_to_euler(R: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_matrix`: (..., 3, 3) -> (..., 3) yaw, pitch, roll (radians)."""
    # R = Ry Rx Rz: R[1,2] = -sin(pitch); R[0,2] = sin(yaw)cos(pitch); R[2,2] = cos(yaw)cos(pitch)
    # R[1,0] = cos(pitch)sin(roll); R[1,1] = cos(pitch)cos(roll)
    pitch = torch.asin((-R[..., 1, 2]).clamp(-1, 1))
    yaw = torch.atan2(R[..., 0, 2], R[..., 2, 2])
    roll = torch.atan2(R[..., 1, 0], R[..., 1, 1])
    return torch.stack([yaw, pitch, roll], -1)


def rotation_angle_degrees(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations, degrees (via quaternions: exact near 0, unlike acos)."""
    q = matrix_to_quaternion(R1.transpose(-1, -2) @ R2)
    return torch.rad2deg(2 * torch.atan2(q[..., 1:].norm(dim=-1), q[..., 0].abs()))


__all__ = ["RigParams", "TENSOR_FIELDS", "FORMAT", "FORMAT_VERSION", "MAX_CROP_SIZE", "axis_angle_to_matrix", "matrix_to_axis_angle",
           "matrix_to_quaternion", "euler_to_matrix", "matrix_to_euler", "rotation_angle_degrees"]
