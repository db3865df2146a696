import numpy as np
import pytest
import torch

from portraitrig.face.base import REGIONS, FaceModel, posed_vertices
from portraitrig.face.controls import apply_controls, gaze_from_direction, measure_controls
from portraitrig.face.model import N_MESH, PortraitRigFaceModel, load_default_model
from portraitrig.face.params import RigParams


@pytest.fixture(scope="module")
def model():
    return load_default_model()


def neutral(model, B=1, dtype=torch.float32):
    z = lambda n: torch.zeros(B, n, dtype=dtype)  # noqa: E731
    return model.canonical(z(model.n_id), z(model.n_expr), torch.zeros(B, 2, 2, dtype=dtype))


def normals(V, faces):
    a, b, c = V[faces[:, 0]], V[faces[:, 1]], V[faces[:, 2]]
    return torch.cross(b - a, c - a, dim=-1)


def test_protocol_and_sizes(model):
    assert isinstance(model, FaceModel)
    assert model.id == "portraitrig-mp478@1"
    V = model.n_vertices
    assert V > 478 and model.uv.shape == (V, 2) and model.mean_albedo.shape == (V, 3)
    assert torch.equal(model.landmark_index, torch.arange(478))
    assert 0 < model.n_id <= 40 and 0 < model.n_expr <= 64
    assert model.uv.min() >= 0 and model.uv.max() <= 1
    assert model.mean_albedo.min() >= 0 and model.mean_albedo.max() <= 1
    assert load_default_model() is model


def test_topology_indices_and_regions(model):
    F, R = model.faces, model.face_region
    assert F.dtype == torch.long and F.shape[1] == 3 and R.shape == (F.shape[0],)
    assert F.min() >= 0 and F.max() < model.n_vertices
    assert all(len(set(t)) == 3 for t in F.tolist())
    counts = {name: int((R == rid).sum()) for name, rid in REGIONS.items()}
    assert counts["skin"] == 852
    assert counts["eye_white"] == 32 and counts["iris"] == 24 and counts["mouth_interior"] == 20
    # skin uses exactly the 468 mesh points; iris discs use the 10 iris landmarks
    assert set(F[R == 0].unique().tolist()) == set(range(N_MESH))
    assert set(range(468, 478)) <= set(F[R == 2].unique().tolist())


def test_skin_orientation_consistent_and_facing_camera(model):
    skin = model.faces[model.face_region == 0].tolist()
    directed = [(t[k], t[(k + 1) % 3]) for t in skin for k in range(3)]
    assert len(directed) == len(set(directed)), "a directed edge appears twice: inconsistent winding"
    V = neutral(model)[0]
    n = normals(V, model.faces)
    skin_n = n[model.face_region == 0]
    # frontal neutral face: (almost) all area faces the camera (-z)
    assert skin_n[:, 2].clamp_max(0).sum() < -0.99 * skin_n[:, 2].abs().sum()
    assert (n[model.face_region > 0, 2] < 0).all()


def test_eye_and_mouth_fills_cover_their_holes(model):
    V = neutral(model)[0]

    def area(poly):
        x, y = poly[:, 0], poly[:, 1]
        return 0.5 * abs(float((x * y.roll(-1) - x.roll(-1) * y).sum()))

    def fan_area(region, vids):
        tris = model.faces[model.face_region == region]
        tris = tris[torch.isin(tris, vids).all(1)]
        n = normals(V, tris)
        return 0.5 * float(n[:, 2].abs().sum())

    for e in range(2):
        hole = area(V[model.eye_ring[e], :2])
        assert hole > 0.01
        assert fan_area(1, model.sclera_vertex[e]) == pytest.approx(hole, rel=1e-4)
        # iris disc lies in front of the sclera (smaller z) at its centre
        c = model.iris_vertex[e, 0]
        assert V[c, 2] < V[model.sclera_vertex[e, -1], 2]
    mouth_hole = area(V[model.mouth_ring, :2])
    assert fan_area(3, model.mouth_vertex) == pytest.approx(mouth_hole, rel=1e-4)
    # the mouth interior sits behind the lips
    assert (V[model.mouth_vertex[:-1], 2] > V[model.mouth_ring, 2]).all()
    assert V[model.mouth_vertex[-1], 2] > V[model.mouth_ring, 2].max()


def test_canonical_batched_differentiable_and_device(model):
    g = torch.Generator().manual_seed(0)
    idn = torch.randn(3, model.n_id, generator=g, requires_grad=True)
    ex = torch.randn(3, model.n_expr, generator=g, requires_grad=True)
    gz = (0.2 * torch.randn(3, 2, 2, generator=g)).requires_grad_()
    V = model.canonical(idn, ex, gz)
    assert V.shape == (3, model.n_vertices, 3) and torch.isfinite(V).all()
    V.square().sum().backward()
    for t in (idn, ex, gz):
        assert t.grad is not None and t.grad.abs().sum() > 0
    m64 = model.to("cpu", torch.float64)
    assert isinstance(m64, PortraitRigFaceModel) and m64.mean.dtype == torch.float64
    V64 = m64.canonical(idn.double(), ex.double(), gz.double())
    assert torch.allclose(V64.float(), V, atol=1e-4)
    p = RigParams.neutral(model, batch=2)
    assert posed_vertices(model, p).shape == (2, model.n_vertices, 3)


def test_gaze_moves_only_the_eyes(model):
    base = neutral(model)[0]
    right = model.canonical(torch.zeros(1, model.n_id), torch.zeros(1, model.n_expr),
                            gaze_from_direction(20.0, 0.0))[0]
    down = model.canonical(torch.zeros(1, model.n_id), torch.zeros(1, model.n_expr),
                           gaze_from_direction(0.0, 15.0))[0]
    assert torch.equal(right[:N_MESH], base[:N_MESH])
    for c in (468, 473):
        assert right[c, 0] - base[c, 0] > 0.03 and abs(float(right[c, 1] - base[c, 1])) < 1e-3
        assert down[c, 1] - base[c, 1] > 0.03
    # iris centre stays on the eyeball sphere
    centres = model.eyeball_centres(right[None, :N_MESH])[0]
    for e, c in enumerate((468, 473)):
        assert float((right[c] - centres[e]).norm()) == pytest.approx(model.eyeball_radius, rel=1e-4)


def test_gaze_from_direction_shapes():
    g = gaze_from_direction(torch.tensor([10.0, -5.0]), 3.0)
    assert g.shape == (2, 2, 2)
    assert torch.allclose(g[1, 0], torch.deg2rad(torch.tensor([-5.0, 3.0])))
    assert gaze_from_direction(1.0, 2.0, batch=4).shape == (4, 2, 2)


def _features(model, expr):
    S = model.shape(torch.zeros(expr.shape[0], model.n_id), expr)
    lip_c = (S[:, 13, 1] + S[:, 14, 1]) / 2
    return dict(corner_lift=lip_c - (S[:, 61, 1] + S[:, 291, 1]) / 2, lip_gap=S[:, 14, 1] - S[:, 13, 1],
                left_gap=S[:, 374, 1] - S[:, 386, 1], right_gap=S[:, 145, 1] - S[:, 159, 1],
                brow=S[:, 159, 1] - S[:, 105, 1])


def test_controls_change_the_intended_feature(model):
    z = torch.zeros(1, model.n_expr)
    f0 = _features(model, z)
    smile = _features(model, apply_controls(z, smile=1.0))
    assert smile["corner_lift"] - f0["corner_lift"] > 0.02
    jaw = _features(model, apply_controls(z, jaw_open=1.0))
    assert jaw["lip_gap"] - f0["lip_gap"] > 0.1
    brows = _features(model, apply_controls(z, brows_raised=1.0))
    assert brows["brow"] - f0["brow"] > 0.05
    wink = _features(model, apply_controls(z, eye_closed_left=1.0))
    assert float(wink["left_gap"]) < 0.15 * float(f0["left_gap"])          # left eye closed
    assert float(wink["right_gap"]) > 0.9 * float(f0["right_gap"])         # right eye open
    wink_r = _features(model, apply_controls(z, eye_closed_right=1.0))
    assert float(wink_r["right_gap"]) < 0.15 * float(f0["right_gap"])
    assert float(wink_r["left_gap"]) > 0.9 * float(f0["left_gap"])
    with pytest.raises(ValueError, match="unknown expression control"):
        apply_controls(z, grin=1.0)


def test_measure_inverts_apply(model):
    g = torch.Generator().manual_seed(1)
    e0 = 0.5 * torch.randn(4, model.n_expr, generator=g)
    amounts = dict(smile=0.7, jaw_open=torch.tensor([0.0, 0.3, 0.6, 1.0]), eye_closed_right=0.4)
    m0 = measure_controls(e0)
    m1 = measure_controls(apply_controls(e0, **amounts))
    for name in model.control_names:
        want = m0[name] + torch.as_tensor(amounts.get(name, 0.0))
        assert torch.allclose(m1[name], want, atol=1e-4), name
    p = RigParams.neutral(model, batch=1)
    p2 = apply_controls(p, smile=1.0)
    assert isinstance(p2, RigParams)
    assert float(measure_controls(p2)["smile"]) == pytest.approx(1.0, abs=1e-4)
    assert float(measure_controls(p)["smile"]) == pytest.approx(0.0, abs=1e-6)


def test_load_errors(tmp_path):
    from portraitrig.errors import InputError

    with pytest.raises(InputError, match="not found"):
        PortraitRigFaceModel.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read"):
        PortraitRigFaceModel.load(bad)
    np.savez(tmp_path / "partial.npz", mean=np.zeros((468, 3)))
    with pytest.raises(InputError, match="cannot read|lacks"):
        PortraitRigFaceModel.load(tmp_path / "partial.npz")
