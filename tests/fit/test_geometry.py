import pytest
import torch

from portraitrig.errors import FitError
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams, euler_to_matrix, matrix_to_axis_angle, rotation_angle_degrees
from portraitrig.fit.geometry import fit_landmarks, landmark_error, landmarks_ndc, similarity_2d, similarity_transform


@pytest.fixture(scope="module")
def model():
    return load_default_model()


def synthetic(model, B, seed, same_identity=False, coef=0.7):
    """Known parameters (head turned up to +-23 deg yaw) and the model's own landmarks."""
    g = torch.Generator().manual_seed(seed)
    p = RigParams.neutral(model, batch=B)
    R = euler_to_matrix((torch.rand(B, generator=g) - 0.5) * 0.8, (torch.rand(B, generator=g) - 0.5) * 0.5,
                        (torch.rand(B, generator=g) - 0.5) * 0.4)
    ident = coef * torch.randn(B, model.n_id, generator=g)
    if same_identity:
        ident = ident[:1].expand(B, -1).clone()
    p = p.replace(rotation=matrix_to_axis_angle(R), identity=ident,
                  expression=coef * torch.randn(B, model.n_expr, generator=g),
                  gaze=(torch.rand(B, 2, 2, generator=g) - 0.5) * 0.6,
                  scale=p.scale * (0.8 + 0.4 * torch.rand(B, 1, generator=g)),
                  translation=p.translation + 0.1 * torch.randn(B, 2, generator=g))
    return p, landmarks_ndc(p, model), g


def rot_err(a, b):
    return rotation_angle_degrees(a.rotation_matrix(), b.rotation_matrix())


def test_similarity_transform_exact():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 30, 3, dtype=torch.float64, generator=g)
    R = euler_to_matrix(torch.tensor([0.3, -0.5]), torch.tensor([0.1, 0.2]), torch.tensor([-0.2, 0.4])).double()
    dst = 1.7 * src @ R.transpose(1, 2) + torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    s, Rf, t = similarity_transform(src, dst, torch.rand(30, dtype=torch.float64, generator=g) + 0.1)
    assert torch.allclose(s, torch.full((2,), 1.7, dtype=torch.float64))
    assert torch.allclose(Rf, R, atol=1e-10)
    assert torch.allclose(t, torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).expand(2, 3))


def test_similarity_2d_is_the_planar_least_squares_similarity():
    """Exact on a similarity; on noisy points it equals the SVD solution of the same points put
    in one plane (z = 0), and it never returns a reflection."""
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 40, 2, dtype=torch.float64, generator=g)
    ang = torch.tensor([0.4, -2.5, 3.0], dtype=torch.float64)
    R = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1), torch.stack([ang.sin(), ang.cos()], -1)], -2)
    t = torch.tensor([[0.2, -0.1], [1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    dst = 0.8 * src @ R.transpose(1, 2) + t[:, None]
    s2, R2, t2 = similarity_2d(src, dst)
    torch.testing.assert_close(s2, torch.full((3,), 0.8, dtype=torch.float64))
    torch.testing.assert_close(R2, R)
    torch.testing.assert_close(t2, t)
    noisy = dst + 0.05 * torch.randn(dst.shape, dtype=torch.float64, generator=g)
    flat = lambda x: torch.cat([x, torch.zeros_like(x[..., :1])], -1)  # noqa: E731
    s3, R3, t3 = similarity_transform(flat(src), flat(noisy))
    s2, R2, t2 = similarity_2d(src, noisy)
    torch.testing.assert_close(s2, s3)
    torch.testing.assert_close(R2, R3[:, :2, :2])
    torch.testing.assert_close(t2, t3[:, :2])
    _, Rm, _ = similarity_2d(src, src * torch.tensor([-1.0, 1.0], dtype=torch.float64))   # a mirror image
    assert torch.allclose(torch.linalg.det(Rm), torch.ones(3, dtype=torch.float64))


def test_fit_recovers_exact_parameters(model):
    p, Y, _ = synthetic(model, 6, 0)
    f = fit_landmarks(Y, model, n_iters=8, id_reg=1e-7, expr_reg=1e-7)
    assert rot_err(f, p).max() < 0.05
    assert torch.allclose(f.scale, p.scale, rtol=5e-3)   # identity can trade a little size
    assert (f.translation - p.translation).abs().max() < 1e-3
    assert landmark_error(f, model, Y).max() < 0.05
    # a single image leaves identity and expression slightly exchangeable (their subspaces are
    # not orthogonal): coefficients come back to a few hundredths, the geometry almost exactly
    assert (f.identity - p.identity).abs().mean() < 0.03
    assert (f.expression - p.expression).abs().mean() < 0.05
    zi, zg = torch.zeros_like(p.identity), torch.zeros_like(p.gaze)
    d_expr = model.canonical(zi, f.expression, zg) - model.canonical(zi, p.expression, zg)
    iod = (model.canonical(zi, 0 * p.expression, zg)[0, 468] - model.canonical(zi, 0 * p.expression, zg)[0, 473]).norm()
    assert d_expr[:, :468].norm(dim=-1).mean() / iod < 0.003   # < 0.3% of the inter-ocular distance
    assert torch.rad2deg(f.gaze - p.gaze).abs().max() < 0.5
    assert f.model == model.id and f.albedo.shape == (6, model.n_vertices, 3)
    assert torch.equal(f.light[:, 0], torch.ones(6, 3)) and f.light[:, 1:].abs().sum() == 0


def test_fit_with_noise_single_images(model):
    p, Y, g = synthetic(model, 8, 1)
    Yn = Y + 0.002 * torch.randn(Y.shape, generator=g)   # ~0.4% of the inter-ocular distance
    f = fit_landmarks(Yn, model)
    assert rot_err(f, p).max() < 0.5
    assert (f.scale / p.scale - 1).abs().max() < 0.01
    err = landmark_error(f, model, Yn)
    assert err.max() < 0.8
    # the fit is closer to the clean landmarks than the noisy input is
    assert landmark_error(f, model, Y).mean() < landmark_error(p, model, Yn).mean()
    assert torch.rad2deg(f.gaze - p.gaze).abs().max() < 3.0
    assert (f.expression - p.expression).abs().mean() < 0.35


def test_shared_identity_album(model):
    p, Y, g = synthetic(model, 12, 2, same_identity=True)
    Yn = Y + 0.002 * torch.randn(Y.shape, generator=g)
    shared = fit_landmarks(Yn, model, shared_identity=True)
    single = fit_landmarks(Yn, model)
    assert torch.equal(shared.identity, shared.identity[:1].expand_as(shared.identity))
    e_shared = (shared.identity - p.identity).abs().mean()
    e_single = (single.identity - p.identity).abs().mean()
    assert e_shared < 0.15 and e_shared < 0.6 * e_single
    assert rot_err(shared, p).max() < 0.5
    assert landmark_error(shared, model, Yn).max() < 0.9


def test_init_and_errors(model):
    p, Y, _ = synthetic(model, 2, 3)
    f = fit_landmarks(Y, model, init=p, n_iters=1)
    assert landmark_error(f, model, Y).max() < 0.2
    with pytest.raises(FitError):
        fit_landmarks(Y[:, :400], model)
    bad = Y.clone()
    bad[0, 5, 0] = float("nan")
    with pytest.raises(FitError, match="NaN"):
        fit_landmarks(bad, model)
    with pytest.raises(FitError, match="degenerate"):
        fit_landmarks(torch.zeros(1, 478, 3), model)


def test_known_identity_is_held_and_frames_are_independent(model):
    p, Y, _ = synthetic(model, 5, 7, same_identity=True)
    f = fit_landmarks(Y, model, identity=p.identity[0], n_iters=6, id_reg=1e-7, expr_reg=1e-7)
    assert torch.allclose(f.identity, p.identity[:1].expand(5, -1))
    assert rot_err(f, p).max() < 0.1
    assert landmark_error(f, model, Y).max() < 0.1
    assert (f.expression - p.expression).abs().mean() < 0.03
    # each image is solved on its own: the same image gives the same fit in another batch
    g = fit_landmarks(Y[2:4], model, identity=p.identity[:1], n_iters=6, id_reg=1e-7, expr_reg=1e-7)
    assert torch.allclose(g.expression, f.expression[2:4], atol=1e-5)
    assert torch.allclose(g.scale, f.scale[2:4], rtol=1e-5)
    with pytest.raises(FitError):
        fit_landmarks(Y, model, identity=torch.zeros(3))
