"""`portraitrig fit` at scale: worker processes, shards, long videos in chunks (resumable inside
a video), and `prepare` with shards, cache merging and failure reports."""
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from portraitrig.apps.fitjob import FitJobConfig, parse_shard, run_fit, shard_of
from portraitrig.apps.preparejob import prepare
from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.neural.cache import FaceCache

FAST = {"photometric": False}


def _astro(shift=0):
    return np.roll(cv2.resize(data.astronaut(), (256, 256)), shift, axis=1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i in range(3):
        Image.fromarray(_astro(3 * i)).save(d / f"p{i}.png")
    (d / "broken.jpg").write_bytes(b"not a jpeg at all")
    return d


def _video(path, n):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(n):
        vw.write(cv2.cvtColor(_astro(2 * i), cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _items(out):
    return {it["id"]: it for it in _manifest(out)["items"]}


@pytest.mark.parametrize("text", ["3/2", "x", "0/0", "-1/2", "1/2/3", "1/"])
def test_bad_shards_are_refused(text, tmp_path):
    with pytest.raises(ValueError, match="shard must be I/N"):
        parse_shard(text)
    with pytest.raises(ValueError, match=repr(text).replace("/", ".")):
        run_fit(["a.jpg"], tmp_path / "o", FitJobConfig(shard=text), progress=False)
    assert not (tmp_path / "o").exists()


def test_default_chunk_is_the_pipelines():
    from portraitrig.pipeline import VIDEO_CHUNK

    assert FitJobConfig().chunk_frames == VIDEO_CHUNK


def test_shard_assignment_is_stable_and_balanced():
    assert parse_shard("2/3") == (2, 3) and parse_shard("0/1") == (0, 1)
    # only the folder and file names count, not where the collection is mounted
    assert shard_of("/mnt/a/people/x.jpg", 7) == shard_of("/data/people/x.jpg", 7)
    counts = np.bincount([shard_of(f"/c/p{k // 50}/{k}.jpg", 4) for k in range(2000)], minlength=4)
    assert counts.min() > 400, counts


def test_shards_split_a_collection(photos, tmp_path):
    outs = [tmp_path / f"s{i}" for i in range(2)]
    for i, out in enumerate(outs):
        run_fit([photos], out, FitJobConfig(shard=f"{i}/2", **FAST), progress=False)
    ids = [set(_items(o)) for o in outs]
    assert ids[0].isdisjoint(ids[1])
    assert ids[0] | ids[1] == {"p0", "p1", "p2", "broken"}
    for i, s in enumerate(ids):
        assert all(shard_of(photos / (n + (".jpg" if n == "broken" else ".png")), 2) == i for n in s)


def test_workers_give_the_same_fits_and_resume(photos, tmp_path):
    video = _video(tmp_path / "clip.avi", 5)
    inputs = [photos, video]
    one, two = tmp_path / "w1", tmp_path / "w2"
    s1 = run_fit(inputs, one, FitJobConfig(**FAST), progress=False)
    s2 = run_fit(inputs, two, FitJobConfig(workers=2, **FAST), progress=False)
    assert (s2.ok, s2.errors) == (s1.ok, s1.errors) == (8, 1)
    i1, i2 = _items(one), _items(two)
    assert {k: v["status"] for k, v in i1.items()} == {k: v["status"] for k, v in i2.items()}
    assert "broken.jpg" in i2["broken"]["message"]
    for k, v in i1.items():
        if v["status"] == "ok":
            a, b = RigParams.load(one / v["params"]), RigParams.load(two / i2[k]["params"])
            assert torch.allclose(a.translation, b.translation, atol=1e-3), k
            assert torch.allclose(a.expression, b.expression, atol=1e-2), k
    assert _manifest(two)["sources"][str(video)]["status"] == "ok"
    # a re-run skips everything already done, in one manifest
    again = run_fit(inputs, two, FitJobConfig(workers=2, **FAST), progress=False)
    assert (again.ok, again.skipped, again.errors) == (0, 8, 1)


def test_long_video_in_chunks_resumes_inside_the_video(tmp_path):
    video = _video(tmp_path / "long.avi", 10)
    out = tmp_path / "fit"
    cfg = FitJobConfig(chunk_frames=4, **FAST)
    s = run_fit([video], out, cfg, progress=False)
    assert (s.ok, s.errors) == (10, 0)
    src = _manifest(out)["sources"][str(video)]
    assert (src["status"], src["chunks_done"], src["chunk_frames"], len(src["items"])) == ("ok", 3, 4, 10)
    assert (out / src["identity"]).exists()
    items = _items(out)
    ids = src["items"]
    loaded = [RigParams.load(out / items[i]["params"], with_extras=True) for i in ids]
    # one identity for the whole video, and the face moves 2 px right per frame across chunks
    assert all(torch.allclose(p.identity, loaded[0][0].identity) for p, _, _ in loaded)
    xs = [e["vertices_image"][:, 0].mean().item() for _, e, _ in loaded]
    assert np.allclose(np.diff(xs), 2.0, atol=0.7), xs

    # a run killed after the first chunk: its record says one chunk is done
    man = _manifest(out)
    keep = set(ids[:4])
    man["items"] = [it for it in man["items"] if it["id"] in keep]
    man["sources"][str(video)].update(status="partial", chunks_done=1, items=ids[:4])
    (out / "manifest.json").write_text(json.dumps(man))
    for i in ids[4:]:
        (out / items[i]["params"]).unlink()
    first = (out / items[ids[0]]["params"]).stat().st_mtime_ns
    s = run_fit([video], out, cfg, progress=False)
    assert (s.ok, s.skipped, s.errors) == (6, 4, 0)
    assert (out / items[ids[0]]["params"]).stat().st_mtime_ns == first  # the finished chunk is kept
    assert _manifest(out)["sources"][str(video)]["status"] == "ok"
    for i, (p, _, _) in zip(ids[4:], loaded[4:]):  # the same fits as the uninterrupted run
        q = RigParams.load(out / items[i]["params"])
        assert torch.allclose(q.translation, p.translation, atol=1e-4) and torch.allclose(q.expression, p.expression, atol=1e-3)


def test_prepare_reports_failures_and_merges_shard_caches(photos, tmp_path, capsys):
    caches = []
    for i in range(2):
        out = tmp_path / f"shard{i}.safetensors"
        try:
            prepare([photos], out, size=64, shard=f"{i}/2", progress=False)
        except InputError as err:  # a shard holding only the broken file prepares nothing
            assert "nothing could be prepared" in str(err) and "broken.jpg" in str(err)
            continue
        caches.append(out)
    said = capsys.readouterr().out
    assert "1 input(s) could not be fitted" in said and "broken.jpg" in said
    merged = prepare(caches, tmp_path / "all.safetensors")
    assert sorted(i.rsplit("/", 1)[1] for i in merged.ids) == ["p0", "p1", "p2"]
    assert len(FaceCache.load(tmp_path / "all.safetensors")) == 3
    with pytest.raises(InputError, match="also in"):
        prepare([caches[0], caches[0]], tmp_path / "twice.safetensors")
    with pytest.raises(InputError, match="nothing could be prepared"):
        prepare([photos / "broken.jpg"], tmp_path / "none.safetensors", progress=False)
