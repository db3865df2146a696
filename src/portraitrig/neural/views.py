"""What the head-avatar renderers (radiance field, Gaussians) share: the model folder (weights,
the network config and the reference rig: the first training frame's parameters, what named
controls and drivers start from) and novel views: the head turned relative to the camera about
its own centre (:func:`portraitrig.edits.rotate_head`), requests clamped to ``MAX_YAW`` /
``MAX_PITCH`` degrees, with a note when a view leaves what the training video covered (the
renderer's ``config.trusted_yaw`` / ``trusted_pitch``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams

MAX_YAW, MAX_PITCH = 60.0, 40.0      # degrees: view requests are clamped to these
REF_FIELDS = ("scale", "rotation", "translation", "identity", "expression", "gaze")


class HeadAvatar:
    """Mixin of the head-avatar renderers: needs ``method``, ``version``, ``kind`` (words for
    messages), ``model``, ``config`` (a DictConfig with ``trusted_yaw``, ``trusted_pitch``),
    ``reference`` (RigParams, one item), ``face_model`` and ``render(params, **options)``."""

    kind = "avatar"

    def save_pretrained(self, directory: str | Path) -> Path:
        from portraitrig.neural.modelio import write_model_folder

        ref = self.reference.to("cpu")
        data = {"model": self.config.to_dict(), "face_model": ref.model,
                "reference": {k: getattr(ref, k)[0].tolist() for k in REF_FIELDS}}
        return write_model_folder(directory, self.method, self.version, data, self.model)

    @classmethod
    def read_folder(cls, directory: str | Path, config_cls, build, device="cpu"):
        """(module, config, face model, reference) of a model folder of this method, checked:
        another method's folder, another version, a bad config or other face model give an
        :class:`InputError` naming the file. ``build(config, face_model)`` makes the network."""
        from portraitrig.face.model import load_default_model
        from portraitrig.neural.modelio import CONFIG, WEIGHTS, load_module, read_model_config

        d = Path(directory)
        method, version, data = read_model_config(d)
        if method != cls.method:
            raise InputError(d, f"a {method!r} model folder, not {cls.kind} (use that method's command)")
        if version != cls.version:
            raise InputError(d / CONFIG, f"{cls.kind} model version {version}, this portraitrig reads {cls.version}")
        try:
            mc = config_cls.from_dict(data["model"], d / CONFIG)
            mc.validate()
            fm = load_default_model()
            if data.get("face_model") != fm.id:
                raise ValueError(f"made for face model {data.get('face_model')!r}, not {fm.id}")
            ref = RigParams.neutral(fm, 1)
            ref = ref.replace(**{k: torch.tensor(data["reference"][k], dtype=torch.float32).reshape(
                getattr(ref, k).shape) for k in REF_FIELDS})
        except InputError:
            raise
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise InputError(d / CONFIG, f"bad {cls.kind} config ({exc})") from None
        model = load_module(lambda: build(mc, fm), d / WEIGHTS, device)
        return model, mc, fm.to(device), ref

    def appearance(self, crops, params: RigParams, **options):
        """A person-specific renderer keeps nothing of other photos: None."""
        return None

    def clamp_view(self, yaw: float, pitch: float) -> tuple[float, float, list[str]]:
        """(yaw, pitch) clamped to MAX_YAW / MAX_PITCH degrees, with notes on what was clamped
        and on views beyond what the training video covered."""
        notes = []
        y = float(np.clip(yaw, -MAX_YAW, MAX_YAW))
        p = float(np.clip(pitch, -MAX_PITCH, MAX_PITCH))
        if (y, p) != (yaw, pitch):
            notes.append(f"view yaw {yaw:g}, pitch {pitch:g} clamped to {y:g}, {p:g} "
                         f"(limits +-{MAX_YAW:g}, +-{MAX_PITCH:g} degrees)")
        if abs(y) > self.config.trusted_yaw or abs(p) > self.config.trusted_pitch:
            notes.append(f"view yaw {y:g}, pitch {p:g} is beyond what the training video covered "
                         f"(+-{self.config.trusted_yaw:g} yaw, +-{self.config.trusted_pitch:g} pitch): expect artefacts")
        return y, p, notes

    def view_params(self, params: RigParams, yaw: float = 0.0, pitch: float = 0.0) -> tuple[RigParams, list[str]]:
        """``params`` with the head turned by (yaw, pitch) degrees about its own centre (clamped)."""
        from portraitrig.edits import rotate_head

        y, p, notes = self.clamp_view(yaw, pitch)
        if y == 0 and p == 0:
            return params, notes
        return rotate_head(params, y, p, model=self.face_model.to(params.device)), notes

    def render_views(self, params: RigParams, views: Sequence[tuple[float, float]], **options):
        """Each item of ``params`` from each (yaw, pitch) view -> (images (B * V, C, S, S),
        item-major, notes)."""
        batch, notes = [], []
        for i in range(len(params)):
            for yaw, pitch in views:
                p, n = self.view_params(params[i:i + 1], yaw, pitch)
                batch.append(p)
                notes += [x for x in n if x not in notes]
        return self.render(RigParams.cat(batch), **options), notes


def with_alpha(image: torch.Tensor, rgb: torch.Tensor, alpha: torch.Tensor, background) -> torch.Tensor:
    """An avatar's RGBA: ``image`` with ``alpha`` as a fourth channel (``dim=-3``); over no
    background ("none") the colour is made straight from the premultiplied ``rgb``."""
    if isinstance(background, str) and background == "none":
        image = torch.where(alpha > 1e-4, rgb / alpha.clamp_min(1e-4), torch.zeros_like(rgb))
    return torch.cat([image, alpha], -3)


__all__ = ["HeadAvatar", "with_alpha", "MAX_YAW", "MAX_PITCH", "REF_FIELDS"]
