import math

import numpy as np
import pytest
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import (RigParams, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle,
                                     matrix_to_euler, rotation_angle_degrees)


def _params(b=3, n_id=4, n_expr=5, V=7, seed=0, model="test@1"):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return RigParams(scale=r(b, 1).abs(), rotation=r(b, 3) * 0.3, translation=r(b, 2) * 0.1, identity=r(b, n_id),
                     expression=r(b, n_expr), gaze=r(b, 2, 2) * 0.1, light=r(b, 9, 3), albedo=r(b, V, 3).sigmoid(),
                     model=model, crop_size=256, sources=[f"img{i}.jpg" for i in range(b)])


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_round_trip(tmp_path, suffix):
    p = _params()
    path = p.save(tmp_path / f"p{suffix}", extras={"crop_affine": np.eye(2, 3)}, meta={"note": "x"})
    q, extras, meta = RigParams.load(path, with_extras=True)
    for k, v in p.tensors().items():
        assert torch.equal(v, getattr(q, k)), k
    assert q.model == "test@1" and q.sources == p.sources and q.crop_size == 256
    assert np.allclose(extras["crop_affine"].numpy(), np.eye(2, 3)) and meta == {"note": "x"}
    assert not list(tmp_path.glob(".p*"))  # no temp files left behind


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name in ("empty.safetensors", "junk.npz"):
        with pytest.raises(InputError, match=name):
            RigParams.load(tmp_path / name)
    with pytest.raises(InputError, match="unknown parameter file type"):
        RigParams.load(tmp_path / "x.pkl")


def test_batch_helpers():
    p = _params(b=4)
    assert len(p[1:3]) == 2 and p[1:3].sources == ["img1.jpg", "img2.jpg"]
    assert torch.equal(p[2].identity, p.identity[2:3])
    assert torch.equal(p[-1].identity, p.identity[3:4])
    assert p[torch.tensor([0, 3])].sources == ["img0.jpg", "img3.jpg"]
    c = RigParams.cat([p[:1], p[1:]])
    assert torch.equal(c.expression, p.expression) and c.sources == p.sources
    r = p[:2].repeat(3)
    assert len(r) == 6 and torch.equal(r.light[2], p.light[0]) and torch.equal(r.light[3], p.light[1])
    with pytest.raises(ValueError):
        RigParams.cat([p, p.replace(model="other@1")])


def test_rotation_conversions():
    g = torch.Generator().manual_seed(1)
    aa = torch.randn(64, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(64, 1, generator=g, dtype=torch.float64) * 3.0
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(64, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(matrix_to_axis_angle(R), aa, atol=1e-9)
    ypr = (torch.rand(64, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([3.0, 1.5, 3.0], dtype=torch.float64)
    R2 = euler_to_matrix(*ypr.unbind(-1))
    assert torch.allclose(matrix_to_euler(R2), ypr, atol=1e-9)
    # yaw about the camera y axis by 30 degrees
    Ry = euler_to_matrix(torch.tensor(math.radians(30)), torch.tensor(0.0), torch.tensor(0.0))
    assert torch.allclose(rotation_angle_degrees(torch.eye(3), Ry), torch.tensor(30.0), atol=1e-4)
    assert torch.allclose(Ry @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.0, math.sqrt(3) / 2]), atol=1e-6)
    assert torch.allclose(axis_angle_to_matrix(torch.zeros(3)), torch.eye(3))


# ------------------------------------------------------------------ hostile / mismatched files
class _Model:
    id, n_id, n_expr, n_vertices = "test@1", 4, 5, 7


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("field", ["scale", "expression", "light", "albedo"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_load_refuses_non_finite(tmp_path, suffix, field, bad):
    p = _params()
    getattr(p, field).view(-1)[1] = bad
    path = p.save(tmp_path / f"p{suffix}")
    with pytest.raises(InputError, match=f"non-finite values in {field}") as ei:
        RigParams.load(path)
    assert str(ei.value).startswith(str(path))


def test_load_refuses_non_finite_extras(tmp_path):
    aff = np.eye(2, 3)
    aff[0, 2] = np.nan
    path = _params().save(tmp_path / "p.safetensors", extras={"crop_affine": aff})
    with pytest.raises(InputError, match="non-finite values in extra crop_affine"):
        RigParams.load(path, with_extras=True)


def test_check_finite_in_memory():
    p = _params()
    assert p.check_finite("edit") is p and p.check("edit", _Model()) is p
    p.gaze[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="^edit: non-finite values in gaze"):
        p.check_finite("edit")


def _save_raw(path, arrays, md):
    """A parameter file written by hand (to make malformed ones)."""
    import json

    from safetensors.torch import save_file

    if path.suffix == ".npz":
        np.savez(path, __meta__=np.array(json.dumps(md)), **{k: v.numpy() for k, v in arrays.items()})
    else:
        save_file({k: v.contiguous() for k, v in arrays.items()}, str(path), metadata=md)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("change, message", [
    ({"format_version": "2"}, "format version '2' is not supported"),
    ({"format_version": None}, "format version None is not supported"),
    ({"format": "something else"}, "not a portraitrig parameter file"),
    ({"model": None}, "names no face model"),
    ({"crop_size": "big"}, "crop_size 'big' is not a whole number"),
    ({"crop_size": "100000000"}, "crop_size 100000000 is outside"),
    ({"sources": "[not json"}, "malformed metadata"),
    ({"sources": '{"a": 1}'}, "sources must be a list of strings"),
    ({"sources": '["a.jpg"]'}, "1 sources for 3 items"),
    ({"extra": "[1, 2]"}, "extra must be a JSON object"),
])
def test_load_refuses_malformed_metadata(tmp_path, suffix, change, message):
    p = _params()
    md = {**p.metadata(), **change}
    md = {k: v for k, v in md.items() if v is not None}
    path = _save_raw(tmp_path / f"p{suffix}", p.tensors(), md)
    with pytest.raises(InputError, match=message) as ei:
        RigParams.load(path)
    assert str(ei.value).startswith(str(path))


def test_load_refuses_npz_without_metadata(tmp_path):
    np.savez(tmp_path / "p.npz", scale=np.ones((1, 1), np.float32))
    with pytest.raises(InputError, match="p.npz: not a portraitrig parameter file"):
        RigParams.load(tmp_path / "p.npz")


@pytest.mark.parametrize("field, value, message", [
    ("gaze", torch.zeros(3, 2), r"gaze has shape \(3, 2\), expected \(B, 2, 2\)"),
    ("light", torch.zeros(3, 4, 3), r"light has shape \(3, 4, 3\), expected \(B, 9, 3\)"),
    ("identity", torch.zeros(2, 4), "identity has 2 items, scale has 3"),
    ("rotation", torch.zeros(3, 3, dtype=torch.int64), "rotation must be a floating-point tensor"),
])
def test_load_refuses_wrong_shapes(tmp_path, field, value, message):
    p = _params()
    path = _save_raw(tmp_path / "p.safetensors", {**p.tensors(), field: value}, p.metadata())
    with pytest.raises(InputError, match=message):
        RigParams.load(path)


@pytest.mark.parametrize("params, message", [
    (_params(model="other@2"), "made for face model 'other@2', this model is 'test@1'"),
    (_params(n_expr=50), "expression has 50 coefficients, this model has 5"),
    (_params(n_id=9), "identity has 9 coefficients, this model has 4"),
    (_params(V=11), "albedo has 11 vertices, this model has 7"),
])
def test_load_reports_another_model_against_the_file(tmp_path, params, message):
    path = params.save(tmp_path / "p.safetensors")
    RigParams.load(path)  # readable on its own
    with pytest.raises(InputError, match=message) as ei:
        RigParams.load(path, model=_Model())
    assert str(ei.value).startswith(str(path))
    assert RigParams.load(_params().save(tmp_path / "ok.npz"), model=_Model()).model == "test@1"


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_undecodable_source_names_round_trip(tmp_path, suffix):
    import os

    name = os.fsdecode(b"/photos/caf\xe9_\xff.jpg")  # lone surrogates: the file can be opened again
    p = _params(b=1).replace(sources=[name])
    assert RigParams.load(p.save(tmp_path / f"p{suffix}")).sources == [name]
