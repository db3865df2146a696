import math

import numpy as np
import pytest
import torch

from portraitrig.eval.rig import (gaze_error, light_error, pose_error, rig_consistency, rig_floor,
                                  rig_report, sphere_normals)
from portraitrig.face.params import RigParams, axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle


class LineModel:
    """478 landmark vertices; eye corners 1 unit apart; expression k moves every vertex by
    0.01 along axis k, identity scales x."""

    id = "line@1"
    n_id, n_expr, n_vertices = 1, 3, 478
    default_scale, default_translation = 1.0, (0.0, 0.0)

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mean = torch.rand(478, 3, generator=g)
        self.mean[[33, 133]] = torch.tensor([-0.5, 0.0, 0.0])
        self.mean[[362, 263]] = torch.tensor([0.5, 0.0, 0.0])
        self.landmark_index = torch.arange(478)
        self.mean_albedo = torch.full((478, 3), 0.5)

    def canonical(self, identity, expression, gaze):
        X = self.mean.expand(identity.shape[0], -1, -1) * torch.stack(
            [1 + 0.1 * identity[:, 0], torch.ones_like(identity[:, 0]), torch.ones_like(identity[:, 0])], -1)[:, None]
        return X + 0.01 * expression[:, None, :]


@pytest.fixture
def model():
    return LineModel()


def _params(model, batch=2):
    return RigParams.neutral(model, batch)


def test_identical_params_give_zero(model):
    p = _params(model)
    p.expression = torch.randn(2, 3)
    p.gaze = torch.randn(2, 2, 2) * 0.2
    p.rotation = torch.randn(2, 3) * 0.3
    p.light = torch.randn(2, 9, 3) * 0.3 + torch.tensor([1.0] + [0.0] * 8)[:, None]
    e = rig_consistency(p, p.clone(), model)
    for k, v in e.items():
        assert np.allclose(v, 0, atol=1e-5), k


def test_known_rotation_gives_known_degrees(model):
    p = _params(model, 3)
    q = p.clone()
    R0 = euler_to_matrix(torch.tensor([0.2, -0.1, 0.0]), torch.tensor([0.1, 0.0, 0.3]), torch.tensor([0.0, 0.2, 0.0]))
    p.rotation = matrix_to_axis_angle(R0)
    axis = torch.nn.functional.normalize(torch.tensor([[0.3, 1.0, -0.2]]), dim=-1)
    delta = axis_angle_to_matrix(axis * torch.tensor([[0.0], [10.0], [35.0]]).deg2rad())
    q.rotation = matrix_to_axis_angle(R0 @ delta)
    assert np.allclose(pose_error(p, q), [0.0, 10.0, 35.0], atol=1e-3)


def test_gaze_error_degrees(model):
    p, q = _params(model, 1), _params(model, 1)
    q.gaze[0, 0, 0] = math.radians(20)  # right eye yaw 20 deg, left eye unchanged
    assert gaze_error(p, q)[0] == pytest.approx(10.0, abs=1e-4)
    q.gaze[0, 1, 1] = math.radians(20)  # left eye pitch 20 deg
    assert gaze_error(p, q)[0] == pytest.approx(20.0, abs=1e-4)


def test_expression_errors_in_percent_iod(model):
    p, q = _params(model, 2), _params(model, 2)
    q.expression[0, 0] = 1.0                # moves every vertex 0.01 = 1% of IOD 1
    q.expression[1] = torch.tensor([3.0, 4.0, 0.0])  # 0.05 = 5%
    e = rig_consistency(p, q, model)
    assert np.allclose(e["expression_vertex_pct_iod"], [1.0, 5.0], atol=1e-4)
    assert np.allclose(e["expression_coef_mae"], [1 / 3, 7 / 3])
    assert "expression_vertex_pct_iod" not in rig_consistency(p, q)  # no model: coefficients only


def test_light_error_scale_invariance():
    from portraitrig.light.sh import sh_basis

    L = torch.zeros(1, 9, 3)
    L[0, 0] = 0.8
    L[0, 3] = -0.4  # light from the camera side
    e = light_error(L, 1.5 * L)
    s = sh_basis(sphere_normals()) @ L[0].double()
    assert e["light_rmse"][0] == pytest.approx(0.5 * float((s ** 2).mean().sqrt()), rel=1e-6)
    assert e["light_rmse_scale_inv"][0] == pytest.approx(0.0, abs=1e-9)
    flipped = L.clone()
    flipped[0, 3] = 0.4  # from behind: different shading pattern
    assert light_error(L, flipped)["light_rmse_scale_inv"][0] > 0.1


def test_report_with_floor(model):
    p, q = _params(model, 4), _params(model, 4)
    q.expression += 0.5
    rep = rig_report(p, q, model, floor=(p, p.clone()))
    assert rep["generated"]["expression_coef_mae"]["mean"] == pytest.approx(0.5)
    assert rep["floor"]["pose_deg"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert set(rig_floor(p, q, model)) == set(rep["generated"])
