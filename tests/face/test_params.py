import math

import numpy as np
import pytest
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import (RigParams, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle,
                                     matrix_to_euler, rotation_angle_degrees)


def _params(b=3, n_id=4, n_expr=5, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return RigParams(scale=r(b, 1).abs(), rotation=r(b, 3) * 0.3, translation=r(b, 2) * 0.1, identity=r(b, n_id),
                     expression=r(b, n_expr), gaze=r(b, 2, 2) * 0.1, light=r(b, 9, 3), albedo=r(b, V, 3).sigmoid(),
                     model="test@1", crop_size=256, sources=[f"img{i}.jpg" for i in range(b)])


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
