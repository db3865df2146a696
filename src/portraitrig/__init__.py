"""portraitrig: rig real portraits with a 3D face model and re-render them with learned,
person-specific neural renderers.

Quick start::

    import portraitrig as pr
    rigger = pr.Rigger()                      # MediaPipe capture + the built-in face model
    fit = rigger.fit_image("photo.jpg")       # crop, landmarks, RigParams (pose, shape, light...)
    edited = pr.edits.relight(fit.params, "rim")
    buffers = pr.render_buffers(edited, rigger.model, size=256)
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Rigger": ("portraitrig.pipeline", "Rigger"),
    "FitResult": ("portraitrig.pipeline", "FitResult"),
    "RigParams": ("portraitrig.face.params", "RigParams"),
    "load_default_model": ("portraitrig.face.model", "load_default_model"),
    "render_buffers": ("portraitrig.render.buffers", "render_buffers"),
    "read_image": ("portraitrig.io.images", "read_image"),
    "edits": ("portraitrig.edits", None),
    "InputError": ("portraitrig.errors", "InputError"),
    "NoFaceError": ("portraitrig.errors", "NoFaceError"),
}


def __getattr__(name: str):
    # lazy so that `import portraitrig` stays fast (torch, mediapipe load only when used)
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        m = importlib.import_module(mod)
        value = m if attr is None else getattr(m, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'portraitrig' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
