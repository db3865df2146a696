import torch

from portraitrig.render.raster import interpolate, rasterize, rasterize_reference


def _ndc(px, size):
    return px * 2.0 / size - 1.0


def test_screen_aligned_square_covers_expected_pixels():
    S = 16
    # square from pixel coords (3, 5) to (11, 13): pixel centres j+0.5 in [3, 11) -> j = 3..10
    x0, y0, x1, y1 = 3.0, 5.0, 11.0, 13.0
    v = torch.tensor([[x0, y0, 0.5], [x1, y0, 0.5], [x1, y1, 0.5], [x0, y1, 0.5]])
    v[:, :2] = _ndc(v[:, :2], S)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fr = rasterize(v[None], faces, S)
    expect = torch.zeros(S, S, dtype=torch.bool)
    expect[5:13, 3:11] = True
    assert torch.equal(fr.mask[0], expect)
    # square with edges exactly through pixel centres: each on-edge row/col counted once (tie rule)
    v2 = torch.tensor([[2.5, 2.5, 0.0], [8.5, 2.5, 0.0], [8.5, 8.5, 0.0], [2.5, 8.5, 0.0]])
    v2[:, :2] = _ndc(v2[:, :2], S)
    fr2 = rasterize(v2[None], faces, S)
    assert int(fr2.mask.sum()) == 36  # area 6 x 6 pixels exactly
    ref = rasterize_reference(v2[None], faces, S)
    assert torch.equal(fr2.tri_id, ref.tri_id)


def test_triangle_area_matches_analytic():
    S = 128
    px = torch.tensor([[10.3, 12.7], [117.1, 40.2], [50.6, 120.9]])
    area = 0.5 * abs(float((px[1, 0] - px[0, 0]) * (px[2, 1] - px[0, 1]) - (px[1, 1] - px[0, 1]) * (px[2, 0] - px[0, 0])))
    v = torch.cat([_ndc(px, S), torch.zeros(3, 1)], 1)
    n = int(rasterize(v[None], torch.tensor([[0, 1, 2]]), S).mask.sum())
    assert abs(n - area) < 0.02 * area


def test_depth_ordering_nearest_wins():
    S = 20
    a = torch.tensor([[2, 2, 0.3], [18, 2, 0.3], [2, 18, 0.3]])
    b = torch.tensor([[4, 4, -0.2], [18, 4, -0.2], [4, 18, -0.2]])
    v = torch.cat([a, b]).float()
    v[:, :2] = _ndc(v[:, :2], S)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fr = rasterize(v[None], faces, S)
    assert fr.tri_id[0, 6, 6] == 1 and abs(float(fr.depth[0, 6, 6]) + 0.2) < 1e-6
    assert fr.tri_id[0, 2, 2] == 0 and abs(float(fr.depth[0, 2, 2]) - 0.3) < 1e-6
    # swap depths: the other one wins; face order does not matter
    v[:3, 2], v[3:, 2] = -0.5, 0.5
    fr = rasterize(v[None], faces.flip(0), S)
    assert fr.tri_id[0, 6, 6] == 1  # index into flipped faces: triangle 'a'
    assert fr.depth[0, 0, 0] == float("inf") and fr.tri_id[0, 0, 0] == -1


def test_barycentrics_interpolate_linear_function():
    S = 64
    g = torch.Generator().manual_seed(3)
    v = torch.rand(1, 3, 3, generator=g) * 1.8 - 0.9
    faces = torch.tensor([[0, 1, 2]])
    fr = rasterize(v, faces, S)
    f = lambda p: 0.7 * p[..., 0] - 1.3 * p[..., 1] + 0.25  # noqa: E731 (a linear function of NDC xy)
    vals = interpolate(f(v)[..., None], faces, fr)[0, ..., 0]
    c = (torch.arange(S) + 0.5) * 2 / S - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    exact = f(torch.stack([xx, yy], -1))
    m = fr.mask[0]
    assert m.sum() > 50
    # exact up to the 1/256-pixel vertex snapping
    assert (vals[m] - exact[m]).abs().max() < 2.0 * 2 / S / 256 * 3
    b = fr.bary[0][m]
    assert (b >= -1e-6).all() and torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5)
    # depth is the interpolated z
    zi = interpolate(v[..., 2:], faces, fr)[0, ..., 0]
    assert torch.allclose(fr.depth[0][m], zi[m], atol=1e-5)


def test_no_cracks_on_shared_edges():
    # a fan of triangles around a centre: every covered pixel once, union == the polygon
    S = 48
    g = torch.Generator().manual_seed(5)
    n = 11
    ang = torch.sort(torch.rand(n, generator=g) * 6.283).values
    rad = 0.5 + 0.4 * torch.rand(n, generator=g)
    ring = torch.stack([rad * torch.cos(ang), rad * torch.sin(ang), torch.zeros(n)], -1)
    v = torch.cat([torch.tensor([[0.03, -0.02, 0.0]]), ring])[None]
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % n] for i in range(n)])
    fr = rasterize(v, faces, S)
    # reference: one polygon = union; count coverage per triangle without depth competition
    cover = torch.zeros(S, S, dtype=torch.long)
    for f in range(n):
        cover += rasterize(v, faces[f:f + 1], S).mask[0].long()
    assert cover.max() == 1  # no pixel claimed twice (tie rule)
    assert torch.equal(cover.bool(), fr.mask[0])
    # inner pixels all covered: the polygon is star-shaped around the centre, so all pixels
    # with centres within min radius * cos(max half-angle) are inside
    c = (torch.arange(S) + 0.5) * 2 / S - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    inner = (xx - 0.03) ** 2 + (yy + 0.02) ** 2 < (0.5 * 0.2) ** 2
    assert fr.mask[0][inner].all()


def test_batch_equals_per_item():
    S = 24
    g = torch.Generator().manual_seed(7)
    v = torch.rand(3, 15, 3, generator=g) * 2.2 - 1.1
    faces = torch.randint(0, 15, (12, 3), generator=g)
    fb = rasterize(v, faces, S)
    for i in range(3):
        fi = rasterize(v[i:i + 1], faces, S)
        assert torch.equal(fb.tri_id[i], fi.tri_id[0])
        assert torch.allclose(fb.bary[i], fi.bary[0], atol=1e-6)


def test_fast_matches_reference_on_random_meshes():
    g = torch.Generator().manual_seed(11)
    for trial in range(6):
        S = 12 + trial
        v = torch.rand(2, 10, 3, generator=g) * 2.6 - 1.3
        if trial % 2:  # vertices on pixel centres and edges: exercises the tie rule
            v[..., :2] = torch.round((v[..., :2] + 1) * S) / S - 1
        faces = torch.randint(0, 10, (9, 3), generator=g)
        for cull in (False, True):
            a = rasterize(v, faces, S, cull_backfaces=cull)
            r = rasterize_reference(v, faces, S, cull_backfaces=cull)
            diff = a.tri_id != r.tri_id
            if diff.any():  # only near-equal depths may differ (quantised depth vs float64)
                assert (a.depth[diff] - r.depth[diff]).abs().max() < 1e-5
            same = ~diff & (a.tri_id >= 0)
            assert torch.allclose(a.bary[same], r.bary[same], atol=1e-5)
            assert torch.allclose(a.depth[same], r.depth[same], atol=1e-5)
            assert torch.equal(a.mask, r.mask)


def test_backface_culling_orientation():
    S = 16
    # counter-clockwise seen from the camera side (-z) in x-right/y-down axes -> normal points to -z
    v = torch.tensor([[[-0.5, -0.5, 0.0], [-0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])
    n = torch.cross(v[0, 1] - v[0, 0], v[0, 2] - v[0, 0], dim=0)
    assert n[2] < 0  # front-facing
    f = torch.tensor([[0, 1, 2]])
    assert rasterize(v, f, S, cull_backfaces=True).mask.any()
    assert not rasterize(v, f.flip(1), S, cull_backfaces=True).mask.any()
    assert rasterize(v, f.flip(1), S).mask.sum() == rasterize(v, f, S).mask.sum()


def test_empty_and_offscreen():
    v = torch.tensor([[[5.0, 5.0, 0.0], [6.0, 5.0, 0.0], [5.0, 6.0, 0.0]]])
    fr = rasterize(v, torch.tensor([[0, 1, 2]]), 8)
    assert not fr.mask.any() and fr.tri_id.shape == (1, 8, 8)


def test_covered_pixels_match_dense_buffers():
    g = torch.Generator().manual_seed(13)
    v = torch.rand(2, 12, 3, generator=g) * 2 - 1
    faces = torch.randint(0, 12, (10, 3), generator=g)
    fr = rasterize(v, faces, 20)
    pix, tri, bary, depth = fr.covered()
    assert torch.equal(pix, fr.mask.reshape(-1).nonzero().squeeze(1))
    assert torch.equal(tri, fr.tri_id.reshape(-1)[pix])
    assert torch.equal(bary, fr.bary.reshape(-1, 3)[pix]) and torch.equal(depth, fr.depth.reshape(-1)[pix])
    # the dense-only path (reference fragments) gives the same through covered()
    ref = rasterize_reference(v, faces, 20)
    assert torch.equal(ref.covered()[0], pix)
    attr = torch.rand(2, 12, 4, generator=g)
    assert torch.allclose(interpolate(attr, faces, fr), interpolate(attr, faces, ref), atol=1e-5)


def test_a_nan_vertex_drops_its_triangles_and_spares_other_items():
    """Fits can produce NaN: the triangles touching a non-finite vertex are not drawn, and the
    other items of the batch render exactly as they would alone."""
    g = torch.Generator().manual_seed(3)
    verts = torch.rand(2, 30, 3, generator=g) * 1.6 - 0.8
    faces = torch.randint(0, 30, (40, 3), generator=g)
    alone = rasterize(verts[:1], faces, 32)
    bad = verts.clone()
    bad[1, 5] = float("nan")
    bad[1, 6, 2] = float("inf")
    both = rasterize(bad, faces, 32)
    assert torch.equal(both.tri_id[0], alone.tri_id[0])
    touching = ((faces == 5) | (faces == 6)).any(-1).nonzero().squeeze(1)
    assert not torch.isin(both.tri_id[1], touching).any()
    assert torch.isfinite(both.bary).all()


def test_half_precision_vertices_give_finite_barycentrics():
    g = torch.Generator().manual_seed(4)
    verts = torch.rand(1, 30, 3, generator=g) * 1.6 - 0.8
    faces = torch.randint(0, 30, (40, 3), generator=g)
    ref = rasterize(verts, faces, 32)
    half = rasterize(verts.half(), faces, 32)
    covered = half.tri_id >= 0
    assert torch.isfinite(half.bary).all() and torch.equal(half.tri_id, ref.tri_id)
    assert (half.bary.float() - ref.bary)[covered].abs().max() < 1e-2  # fp16 rounding of the inputs
