#!/usr/bin/env python
"""Learn portraitrig's face model (face/data/portraitrig_face_v1.npz + .json) from video.

Steps (docs/face_model.md explains them):
 1. MediaPipe Face Mesh (478 points, refine_landmarks) on every ``--stride``-th frame of each
    clip in DATA/videos and on each photo in DATA/photos/*/ (cached in --cache).
 2. Generalised Procrustes (similarity, 3D) of every face onto a reference, three rounds
    (reference = mean of the clip means), weighted towards the points expressions move least;
    head space = x right, y down, z away; unit = the mean face's inter-ocular (iris-centre)
    distance; origin = the mesh centroid.
 3. Expression basis: PCA of within-clip residuals (frame - clip mean). Identity basis: PCA of
    clip means and photos with their expression part projected out; their mean is the model's.
 4. Eyeballs, iris rings, topology (MediaPipe's tesselation parsed from its source text, in
    order: three consecutive edges per triangle), eye / iris / mouth fills, UVs, mean albedo,
    named expression controls, FFHQ crop placement, held-out errors.

Usage: python scripts/learn_face_model.py [--data ../shared/data/faces] [--stride 2]
"""
from __future__ import annotations

import argparse
import ast
import datetime
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from portraitrig.io.atomic import atomic_path, write_json

VERSION = "1.0"
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src/portraitrig/face/data"
N_MESH = 468
HOLDOUT_CLIPS = ("liveportrait_d10", "retalking_2")
IRIS = {0: (468, 469, 470, 471, 472), 1: (473, 474, 475, 476, 477)}   # subject's right, left


# ---------------------------------------------------------------------------- detection
class _Detector:
    """portraitrig.capture.detector.MediaPipeFaceMesh when present, else MediaPipe Face Mesh directly; points in pixels."""

    def __init__(self, video: bool):
        try:
            from portraitrig.capture.detector import MediaPipeFaceMesh
            self.a = MediaPipeFaceMesh(video=video)
        except ImportError:
            import mediapipe as mp
            self.a = None
            self.mp = mp.solutions.face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=1,
                                                      refine_landmarks=True, min_detection_confidence=0.5)

    def __call__(self, rgb: np.ndarray):
        if self.a is not None:
            found = self.a.detect(rgb)
            return None if not found else np.asarray(found[0].points, np.float32)
        res = self.mp.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h, p.z * w] for p in lm], np.float32)


def _colours(rgb: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    x = np.clip(pts[:, 0].astype(int), 0, w - 1)
    y = np.clip(pts[:, 1].astype(int), 0, h - 1)
    return rgb[y, x].astype(np.float32) / 255


def detect_all(data: Path, stride: int) -> dict:
    """Landmarks of all clips' frames and photos: dict of arrays (see keys below)."""
    pts, group, frame, colour, names = [], [], [], [], []
    for clip in sorted((data / "videos").glob("*.mp4")):
        det = _Detector(video=True)
        cap = cv2.VideoCapture(str(clip))
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % stride == 0:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                p = det(rgb)
                if p is not None:
                    pts.append(p); group.append(len(names)); frame.append(i); colour.append(_colours(rgb, p))
            i += 1
        names.append(f"videos/{clip.name}")
        print(f"  {clip.name}: {sum(g == len(names) - 1 for g in group)} faces / {i} frames", flush=True)
    det = _Detector(video=False)
    for photo in sorted(p for p in (data / "photos").glob("*/*") if p.suffix.lower() in (".jpg", ".png")):
        rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        p = det(rgb)
        if p is None:
            print(f"  no face: {photo}")
            continue
        pts.append(p); group.append(len(names)); frame.append(0); colour.append(_colours(rgb, p))
        names.append(f"photos/{photo.parent.name}/{photo.name}")
    return dict(points=np.stack(pts), group=np.array(group), frame=np.array(frame),
                colour=np.stack(colour), names=np.array(names))


def restrict_photos(det: dict, folders: set[str]) -> dict:
    """Keep every clip and only the photos under photos/<folder>/ for ``folders``
    (the detection cache holds all; the licence choice is made here)."""
    keep_group = np.array([not n.startswith("photos/") or n.split("/")[1] in folders for n in det["names"]])
    new_index = np.cumsum(keep_group) - 1
    rows = keep_group[det["group"]]
    out = {k: v[rows] for k, v in det.items() if k in ("points", "group", "frame", "colour")}
    out["group"] = new_index[out["group"]]
    out["names"] = det["names"][keep_group]
    out["stride"] = det["stride"]
    return out


# ---------------------------------------------------------------------------- topology
def mediapipe_connections() -> dict[str, list[tuple[int, int]]]:
    """Edge lists of mediapipe/python/solutions/face_mesh_connections.py in source order."""
    import mediapipe

    src = Path(mediapipe.__file__).parent / "python/solutions/face_mesh_connections.py"
    out = {}
    for node in ast.parse(src.read_text()).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "frozenset"
                and isinstance(node.value.args[0], (ast.List, ast.Tuple, ast.Set))):
            out[node.targets[0].id] = [tuple(ast.literal_eval(e)) for e in node.value.args[0].elts]
    return out


def tesselation(edges: list[tuple[int, int]]) -> np.ndarray:
    """(852, 3) triangles: the source lists each as edges (a, b), (b, c), (c, a)."""
    tris = []
    for i in range(0, len(edges), 3):
        (a, b), (b2, c), (c2, a2) = edges[i:i + 3]
        assert (b, c, a) == (b2, c2, a2), f"edges {i}..{i + 2} do not form a triangle"
        tris.append((a, b, c))
    assert len(tris) == 852, len(tris)
    return np.array(tris)


def orient(tris: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Consistent winding across shared edges (breadth-first), then normals (b-a)x(c-a) facing
    -z (the camera) for most area of the frontal mean face."""
    tris = tris.copy()
    edge_tris: dict = {}
    for f, t in enumerate(tris):
        for k in range(3):
            edge_tris.setdefault(frozenset((t[k], t[(k + 1) % 3])), []).append(f)
    seen = np.zeros(len(tris), bool)
    for start in range(len(tris)):
        if seen[start]:
            continue
        seen[start] = True
        queue = [start]
        while queue:
            f = queue.pop()
            t = tris[f]
            for k in range(3):
                a, b = t[k], t[(k + 1) % 3]
                for g in edge_tris[frozenset((a, b))]:
                    if g == f or seen[g]:
                        continue
                    u = list(tris[g])
                    # consistent neighbours traverse the shared edge in opposite directions
                    if any(u[j] == a and u[(j + 1) % 3] == b for j in range(3)):
                        tris[g] = tris[g][::-1]
                    seen[g] = True
                    queue.append(g)
    n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    if n[:, 2].sum() > 0:
        tris = tris[:, ::-1]
    return np.ascontiguousarray(tris)


def loops(edges: list[tuple[int, int]]) -> list[list[int]]:
    """Chain undirected edges into closed vertex loops."""
    nb: dict = {}
    for a, b in edges:
        nb.setdefault(a, []).append(b)
        nb.setdefault(b, []).append(a)
    out, used = [], set()
    for s in sorted(nb):
        if s in used:
            continue
        loop, prev, cur = [s], None, s
        while True:
            nxt = [v for v in nb[cur] if v != prev][0] if prev is not None else nb[cur][0]
            if nxt == s:
                break
            loop.append(nxt); prev, cur = cur, nxt
        used.update(loop)
        out.append(loop)
    return out


# ---------------------------------------------------------------------------- alignment / PCA
def similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """src (N, P, 3) mapped onto dst (P, 3) or (N, P, 3) by a weighted similarity each."""
    from portraitrig.fit.geometry import similarity_transform

    s_t, d_t = torch.from_numpy(src), torch.from_numpy(np.broadcast_to(dst, src.shape).copy())
    s, R, t = similarity_transform(s_t, d_t, None if w is None else torch.from_numpy(w))
    return (s[:, None, None] * (s_t @ R.transpose(1, 2)) + t[:, None]).numpy()


def frontal_frame(mean: np.ndarray):
    """(R, c, k) putting a 478-point shape in head space as ``k * (X - c) @ R.T``: upright
    frontal axes (x along the iris centres, y forehead -> chin), mesh centroid at 0, IOD 1."""
    x = mean[473] - mean[468]
    x = x / np.linalg.norm(x)
    y = mean[152] - mean[10]
    y = y - x * (x @ y)
    y = y / np.linalg.norm(y)
    R = np.stack([x, y, np.cross(x, y)])          # rows: new axes, right-handed, z away
    return R, mean[:N_MESH].mean(0), 1 / np.linalg.norm(mean[473] - mean[468])


def normalise(mean: np.ndarray) -> np.ndarray:
    R, c, k = frontal_frame(mean)
    return k * (mean - c) @ R.T


def pca(D: np.ndarray, k_max: int):
    """D (N, P) centred rows -> (basis (k, P) scaled by std, explained-variance ratios)."""
    U, S, Vt = np.linalg.svd(D, full_matrices=False)
    var = S ** 2 / max(len(D) - 1, 1)
    return Vt[:k_max] * np.sqrt(var[:k_max, None]), var / var.sum()


def choose(ratio: np.ndarray, target: float, k_max: int) -> int:
    return int(min(k_max, np.searchsorted(np.cumsum(ratio), target) + 1))


def learn(det: dict, holdout_photo_every: int = 5) -> dict:
    P = det["points"].astype(np.float64)
    names, group = det["names"], det["group"]
    is_clip = np.array([n.startswith("videos/") for n in names])
    clip_name = np.array([Path(n).stem for n in names])
    # hold out: two clips and every 5th photo of each folder
    photo_rank = {}
    for g in np.flatnonzero(~is_clip):
        folder = Path(names[g]).parent.name
        photo_rank[g] = sum(Path(names[h]).parent.name == folder for h in photo_rank)
    held_group = np.array([(is_clip[g] and clip_name[g] in HOLDOUT_CLIPS)
                           or (not is_clip[g] and photo_rank[g] % holdout_photo_every == holdout_photo_every - 1)
                           for g in range(len(names))])
    train = ~held_group[group]
    video = is_clip[group]

    ref = normalise(P[np.flatnonzero(train & video)[0]])
    w = np.ones(N_MESH)
    for it in range(3):
        # iris points follow each face's mesh similarity (their weight is 0)
        A = similarity(P, ref, np.concatenate([w, np.zeros(10)]))
        clip_means = {g: A[(group == g)].mean(0) for g in np.unique(group[train])}
        resid = A[train & video] - np.stack([clip_means[g] for g in group[train & video]])
        var = (resid[:, :N_MESH] ** 2).sum(-1).mean(0)
        w = (var <= np.quantile(var, 0.35)).astype(np.float64)    # the most rigid 35% of points
        # mean over people: each clip / photo counts once
        ref = normalise(np.mean(list(clip_means.values()), 0))
    A = similarity(P, ref, np.concatenate([w, np.zeros(10)]))
    mean = ref
    # ---- expression basis: within-clip residuals of training clips
    sel = train & video
    cm = {g: A[group == g].mean(0) for g in np.unique(group)}
    R = (A[sel, :N_MESH] - np.stack([cm[g][:N_MESH] for g in group[sel]])).reshape(sel.sum(), -1)
    E_full, e_ratio = pca(R, 64)
    n_expr = choose(e_ratio, 0.995, 64)
    E = E_full[:n_expr]
    # ---- identity basis: clip means + photos with expression projected out
    def remove_expr(shape):
        d = (shape[:, :N_MESH] - mean[:N_MESH]).reshape(len(shape), -1)
        beta = np.linalg.solve(E @ E.T + 1e-3 * np.eye(n_expr), E @ d.T).T
        return d - beta @ E, beta

    train_groups = [g for g in np.unique(group[train])]
    id_samples = np.stack([cm[g][:N_MESH].reshape(-1) - mean[:N_MESH].reshape(-1) if is_clip[g]
                           else remove_expr(A[group == g])[0][0] for g in train_groups])
    id_mean = id_samples.mean(0)
    mean = mean.copy()
    mean[:N_MESH] += id_mean.reshape(N_MESH, 3)
    I_full, i_ratio = pca(id_samples - id_mean, 40)
    n_id = choose(i_ratio, 0.98, min(40, len(train_groups) - 1))
    # the mean over people is the model's mean: re-express everything in its frontal frame
    Rf, c, k = frontal_frame(mean)
    mean = k * (mean - c) @ Rf.T
    rot = lambda B: (k * B.reshape(len(B), N_MESH, 3) @ Rf.T).reshape(len(B), -1)  # noqa: E731
    E_full, I_full = rot(E_full), rot(I_full)
    A = k * (A - c) @ Rf.T
    info = dict(n_people_train=len(train_groups), n_groups=len(names), expr_ratio=e_ratio[:64],
                id_ratio=i_ratio[:40], rigid_weights=w, held_group=held_group, train=train)
    return dict(mean=mean, E=E_full, I=I_full, n_expr=n_expr, n_id=n_id, aligned=A, info=info)


# ---------------------------------------------------------------------------- model assembly
def assemble(L: dict, det: dict, conn: dict, n_id: int, n_expr: int) -> dict:
    mean = L["mean"]
    tris = orient(tesselation(conn["FACEMESH_TESSELATION"]), mean)
    eye_ring = [loops(conn["FACEMESH_RIGHT_EYE"])[0], loops(conn["FACEMESH_LEFT_EYE"])[0]]
    lip_loops = loops(conn["FACEMESH_LIPS"])
    inner = min(lip_loops, key=lambda lp: np.ptp(mean[lp, 0]))          # inner lip ring is narrower
    eye_corners = np.array([[33, 133], [263, 362]])
    # eyeball: radius 12 mm at IOD 63 mm (MediaPipe's iris depth carries no gaze information);
    # front of the cornea just behind the lid-gap middle so closed lids hide the iris
    radius = 12.0 / 63.0
    lid_mid = {0: (159, 145), 1: (386, 374)}
    V = N_MESH + 10
    iris_vertex, iris_offsets, sclera_vertex, offsets = [], [], [], []
    for e in (0, 1):
        ic = mean[IRIS[e][0]]
        z_front = mean[list(lid_mid[e]), 2].mean() + 0.01
        centre = np.array([ic[0], ic[1], z_front + radius])
        offsets.append(centre - mean[eye_corners[e]].mean(0))
        ring = mean[list(IRIS[e][1:]), :2] - ic[:2]
        r_iris = np.linalg.norm(ring, axis=1).mean()
        ang_mp = np.round(np.degrees(np.arctan2(ring[:, 1], ring[:, 0])) / 90) * 90 % 360
        angles = np.arange(0, 360, 30)
        ids = [IRIS[e][0]]
        for a in angles:
            hit = np.flatnonzero(ang_mp == a)
            if len(hit):
                ids.append(IRIS[e][1 + hit[0]])
            else:
                ids.append(V); V += 1
        iris_vertex.append(ids)
        th = np.radians(angles)
        iris_offsets.append(np.concatenate([[[0, 0, 0]], np.stack([r_iris * np.cos(th), r_iris * np.sin(th), 0 * th], 1)]))
        sclera_vertex.append(list(range(V, V + 17))); V += 17
    mouth_vertex = list(range(V, V + len(inner) + 1)); V += len(inner) + 1
    extra = []
    for e in (0, 1):
        c, ring = iris_vertex[e][0], iris_vertex[e][1:]
        extra += [(c, ring[k], ring[(k + 1) % 12], 2) for k in range(12)]
        sc = sclera_vertex[e]
        extra += [(sc[16], sc[k], sc[(k + 1) % 16], 1) for k in range(16)]
    extra += [(mouth_vertex[-1], mouth_vertex[k], mouth_vertex[(k + 1) % len(inner)], 3) for k in range(len(inner))]
    arrays = dict(
        mean=mean[:N_MESH], id_basis=L["I"][:n_id].reshape(n_id, N_MESH, 3),
        expr_basis=L["E"][:n_expr].reshape(n_expr, N_MESH, 3), rigid_weights=L["info"]["rigid_weights"],
        eye_corners=eye_corners, eye_ring=np.array(eye_ring), eyeball_offset=np.array(offsets),
        eyeball_radius=np.float32(radius), iris_offsets=np.array(iris_offsets), iris_vertex=np.array(iris_vertex),
        sclera_vertex=np.array(sclera_vertex), mouth_ring=np.array(inner), mouth_vertex=np.array(mouth_vertex),
        mouth_depth=np.array([0.05, 0.25]),
        faces=np.zeros((0, 3), np.int64), face_region=np.zeros(0, np.int64), uv=np.zeros((V, 2)),
        mean_albedo=np.zeros((V, 3)), control_names=np.array([], dtype="<U1"),
        control_dirs=np.zeros((0, n_expr)), control_measure=np.zeros((0, n_expr)),
        default_scale=np.float32(1), default_translation=np.zeros(2))
    # orient the fills with the model's own neutral vertices
    from portraitrig.face.model import PortraitRigFaceModel

    m = PortraitRigFaceModel(arrays, dtype=torch.float64)
    verts = m.canonical(torch.zeros(1, n_id), torch.zeros(1, n_expr), torch.zeros(1, 2, 2))[0].numpy()
    ex = np.array([t[:3] for t in extra])
    nz = np.cross(verts[ex[:, 1]] - verts[ex[:, 0]], verts[ex[:, 2]] - verts[ex[:, 0]])[:, 2]
    ex = np.where(nz[:, None] > 0, ex[:, ::-1], ex)
    arrays["faces"] = np.concatenate([tris, ex]).astype(np.int32)
    arrays["face_region"] = np.concatenate([np.zeros(len(tris)), [t[3] for t in extra]]).astype(np.int8)
    # UVs: the neutral face's frontal x, y scaled into [0.02, 0.98]
    lo, hi = verts[:N_MESH, :2].min(0), verts[:N_MESH, :2].max(0)
    arrays["uv"] = 0.02 + 0.96 * (verts[:, :2] - lo) / (hi - lo).max()
    # albedo: median colour under each mesh point over the training photos and first frames;
    # eyes and mouth interior get fixed colours
    alb = np.zeros((V, 3))
    train = L["info"]["train"]
    first = np.array([i == 0 or det["group"][i] != det["group"][i - 1] for i in range(len(train))])
    alb[:N_MESH] = np.median(det["colour"][train & first][:, :N_MESH], 0)
    alb[np.array(sclera_vertex).ravel()] = (0.88, 0.86, 0.82)
    alb[np.array(iris_vertex).ravel()] = (0.30, 0.18, 0.11)
    alb[mouth_vertex] = (0.35, 0.08, 0.08)
    arrays["mean_albedo"] = alb
    arrays["default_scale"], arrays["default_translation"] = ffhq_placement(verts)
    return arrays


def ffhq_placement(verts: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """Weak-perspective scale / translation of the frontal neutral face in an FFHQ-aligned crop.

    FFHQ's recipe (from the 68-point eye centres e_l, e_r and mouth corners): eye_avg, e2e =
    e_r - e_l, e2m = mouth_avg - eye_avg, half-side |x| = max(2 |e2e|, 1.8 |e2m|), centre
    c = eye_avg + 0.1 e2m; the crop spans c +- |x| so NDC = (p - c) / |x|. Eye centres here are
    the means of MediaPipe's eye contours, mouth corners are points 61 and 291."""
    conn = mediapipe_connections()
    eyes = [verts[loops(conn[k])[0]].mean(0)[:2] for k in ("FACEMESH_RIGHT_EYE", "FACEMESH_LEFT_EYE")]
    eye_avg = (eyes[0] + eyes[1]) / 2
    e2e = eyes[1] - eyes[0]
    e2m = (verts[61, :2] + verts[291, :2]) / 2 - eye_avg
    half = max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    c = eye_avg + 0.1 * e2m
    return np.float32(1 / half), (-c / half)


# ---------------------------------------------------------------------------- controls
def control_features(X: np.ndarray) -> np.ndarray:
    """(N, 468, 3) head-space mesh -> (N, K) features, linear in X (model units):
    smile: mouth-corner lift above the lip centre; jaw_open: inner lip gap; brows_raised: brow
    height above the upper lids; eye_closed_left / _right: lid-gap closure (minus the gap);
    pucker: mouth narrowing (minus the corner distance); frown: brows drawn together (minus the
    inner-brow distance)."""
    lip_c = (X[:, 13, 1] + X[:, 14, 1]) / 2
    return np.stack([
        lip_c - (X[:, 61, 1] + X[:, 291, 1]) / 2,
        X[:, 14, 1] - X[:, 13, 1],
        ((X[:, 159, 1] - X[:, [105, 66, 107], 1].mean(1)) + (X[:, 386, 1] - X[:, [334, 296, 336], 1].mean(1))) / 2,
        X[:, 386, 1] - X[:, 374, 1],
        X[:, 159, 1] - X[:, 145, 1],
        X[:, 61, 0] - X[:, 291, 0],
        X[:, 55, 0] - X[:, 285, 0],
    ], 1)


CONTROL_NAMES = ["smile", "jaw_open", "brows_raised", "eye_closed_left", "eye_closed_right", "pucker", "frown"]


def learn_controls(arrays: dict, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Directions from data: regress expression coefficients on all features jointly (so each
    direction holds the other features fixed), scale so that amount 1 moves its feature by the
    95th percentile seen (full closure for the eyes); measure = (G D)^-1 G."""
    E = arrays["expr_basis"].reshape(len(beta[0]), -1)
    mean = arrays["mean"]
    G = np.stack([(control_features((mean.reshape(-1) + e).reshape(1, N_MESH, 3))
                   - control_features(mean[None]))[0] for e in E], 1)        # (K, n_expr)
    F = beta @ G.T                                                            # feature change per frame
    Fc = F - np.median(F, 0)
    W = np.linalg.lstsq(Fc, beta - beta.mean(0), rcond=None)[0]               # (K, n_expr)
    base = control_features(mean[None])[0]
    amount = np.percentile(Fc, 95, axis=0)
    for k in (3, 4):   # eye closure: amount 1 closes the mean open lid gap
        amount[k] = -base[k]
    D = W * (amount / np.einsum("kn,kn->k", W, G))[:, None]                   # G D_k has amount_k
    M = np.linalg.solve(G @ D.T, G)
    return D, M, {n: float(a) for n, a in zip(CONTROL_NAMES, amount)}


# ---------------------------------------------------------------------------- evaluation
def holdout_errors(arrays: dict, det: dict, L: dict, choices) -> dict:
    """Held-out 2D landmark error (% IOD, all 478 points) for several (n_id, n_expr)."""
    from portraitrig.face.model import PortraitRigFaceModel
    from portraitrig.fit.geometry import fit_landmarks, landmark_error

    held = ~L["info"]["train"]
    pts = det["points"][held].astype(np.float64)
    # landmarks in a crop-like NDC: centre and scale by the face box (z by the same factor)
    c = pts[:, :N_MESH, :2].mean(1, keepdims=True)
    s = np.ptp(pts[:, :N_MESH, 0], axis=1)[:, None, None]
    ndc = pts.copy()
    ndc[..., :2] = (pts[..., :2] - c) / s
    ndc[..., 2] = pts[..., 2] / s[..., 0]
    ndc_t = torch.from_numpy(ndc)
    vid = np.array([det["names"][g].startswith("videos/") for g in det["group"][held]])
    out = {}
    for n_id, n_expr in choices:
        a = dict(arrays, id_basis=arrays["id_basis_full"][:n_id], expr_basis=arrays["expr_basis_full"][:n_expr],
                 control_dirs=np.zeros((0, n_expr)), control_measure=np.zeros((0, n_expr)))
        m = PortraitRigFaceModel(a)
        p = fit_landmarks(ndc_t, m)
        err = landmark_error(p, m, ndc_t).numpy()
        out[f"{n_id}x{n_expr}"] = dict(n_id=n_id, n_expr=n_expr, mean=float(err.mean()),
                                      video_frames=float(err[vid].mean()) if vid.any() else None,
                                      photos=float(err[~vid].mean()) if (~vid).any() else None,
                                      p95=float(np.percentile(err, 95)), max=float(err.max()))
        print(f"  held-out n_id={n_id:2d} n_expr={n_expr:2d}: mean {err.mean():.3f}% IOD "
              f"(video {out[f'{n_id}x{n_expr}']['video_frames']}, photos {out[f'{n_id}x{n_expr}']['photos']}), max {err.max():.2f}%")
    return out


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/faces")
    ap.add_argument("--stride", type=int, default=2, help="use every n-th video frame")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs/face_model/landmarks.npz")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--max-id", type=int, default=40)
    ap.add_argument("--max-expr", type=int, default=64)
    ap.add_argument("--n-id", type=int, default=40,
                    help="identity dims (capped by the training people; 0 = what 98%% of the variance needs)")
    ap.add_argument("--n-expr", type=int, default=64,
                    help="expression dims (0 = what 99.5%% of the variance needs)")
    ap.add_argument("--photo-folders", default="inthewild",
                    help="comma-separated photos/ sub-folders to learn from (default: the MIT-licensed "
                         "'inthewild' only; 'celebahq' and 'expressions' carry non-commercial terms)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    if args.cache.exists():
        with np.load(args.cache, allow_pickle=False) as z:
            det = {k: z[k] for k in z.files}
        if int(det["stride"]) != args.stride:
            det = None
    else:
        det = None
    if det is None:
        print(f"detecting landmarks in {args.data} (stride {args.stride})", flush=True)
        det = detect_all(args.data, args.stride)
        det["stride"] = np.array(args.stride)
        with atomic_path(args.cache) as tmp:
            np.savez_compressed(tmp, **det)
    det = restrict_photos(det, set(args.photo_folders.split(",")) if args.photo_folders else set())
    print(f"{len(det['points'])} faces from {len(det['names'])} clips/photos", flush=True)

    conn = mediapipe_connections()
    L = learn(det)
    n_id = min(args.n_id or L["n_id"], args.max_id, L["info"]["n_people_train"] - 1)  # n people span n-1 dims
    n_expr = min(args.n_expr or L["n_expr"], args.max_expr)
    print(f"identity dims {n_id} (98% of variance needs {L['n_id']}; {L['info']['n_people_train']} training people), "
          f"expression dims {n_expr} (99.5% needs {L['n_expr']})", flush=True)
    arrays = assemble(L, det, conn, n_id, n_expr)
    # expression coefficients of the training video frames (for the controls)
    sel = L["info"]["train"] & np.array([n.startswith("videos/") for n in det["names"]])[det["group"]]
    A = L["aligned"][sel, :N_MESH].reshape(sel.sum(), -1)
    cm = np.stack([L["aligned"][det["group"] == g, :N_MESH].mean(0).reshape(-1) for g in det["group"][sel]])
    E = arrays["expr_basis"].reshape(n_expr, -1)
    beta = np.linalg.solve(E @ E.T, E @ (A - cm).T).T
    D, M, amounts = learn_controls(arrays, beta)
    arrays.update(control_names=np.array(CONTROL_NAMES), control_dirs=D, control_measure=M)

    arrays["id_basis_full"] = L["I"].reshape(-1, N_MESH, 3)
    arrays["expr_basis_full"] = L["E"].reshape(-1, N_MESH, 3)
    choices = sorted({(0, 0), (10, 10), (20, 20), (n_id, 32), (n_id, n_expr), (n_id, 64), (10, n_expr)})
    choices = [(min(i, L["I"].shape[0]), min(e, L["E"].shape[0])) for i, e in choices]
    errs = holdout_errors(arrays, det, L, choices)
    del arrays["id_basis_full"], arrays["expr_basis_full"]

    out_npz = args.out / "portraitrig_face_v1.npz"
    with atomic_path(out_npz) as tmp:
        np.savez_compressed(tmp, **{k: (v.astype(np.float32) if np.asarray(v).dtype == np.float64 else v)
                                    for k, v in arrays.items()})
    held = L["info"]["held_group"]
    counts = np.bincount(det["group"], minlength=len(det["names"]))
    prov = dict(
        model="portraitrig-mp478@1", script="scripts/learn_face_model.py", script_version=VERSION,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        data=str(args.data), photo_folders=args.photo_folders, frame_stride=args.stride, mediapipe="0.10.14 Face Mesh, refine_landmarks=True",
        training=[dict(source=str(n), faces=int(c)) for n, c, h in zip(det["names"], counts, held) if not h],
        held_out=[dict(source=str(n), faces=int(c)) for n, c, h in zip(det["names"], counts, held) if h],
        n_people_train=L["info"]["n_people_train"],
        n_id=n_id, n_expr=n_expr,
        id_explained_variance=np.round(L["info"]["id_ratio"], 5).tolist(),
        expr_explained_variance=np.round(L["info"]["expr_ratio"], 5).tolist(),
        id_cumulative_at_n=float(L["info"]["id_ratio"][:n_id].sum()),
        expr_cumulative_at_n=float(L["info"]["expr_ratio"][:n_expr].sum()),
        holdout_landmark_error_pct_iod=errs,
        units="head space: x right, y down, z away; 1 = mean inter-ocular (iris-centre) distance",
        eyeball_radius=float(arrays["eyeball_radius"]), control_amount_1=amounts,
        default_scale=float(arrays["default_scale"]), default_translation=np.asarray(arrays["default_translation"]).tolist(),
        n_vertices=int(arrays["uv"].shape[0]), n_faces=int(len(arrays["faces"])),
    )
    write_json(args.out / "portraitrig_face_v1.json", prov)
    for f in (out_npz, args.out / "portraitrig_face_v1.json"):
        f.chmod(0o644)                             # package data: readable by everyone
    print(f"wrote {out_npz} ({out_npz.stat().st_size / 1024:.0f} KB) and its .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
