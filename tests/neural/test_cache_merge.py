"""merge_caches: caches made from shards of one collection become one cache."""
import numpy as np
import pytest
import torch

from portraitrig.errors import InputError
from portraitrig.face.params import RigParams
from portraitrig.neural.cache import FaceCache, build_cache, merge_caches
from synth_face import SynthFace


def _cache(tmp_path, name, ids, groups, size=32, seed=0):
    model = SynthFace(rings=3, segments=6)
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in ids]
    params = RigParams.neutral(model, len(ids))
    params = params.replace(expression=torch.arange(len(ids), dtype=torch.float32)[:, None].expand(-1, 2) + seed,
                            sources=[f"{g}.mp4#frame={k}" for k, g in enumerate(groups)])
    path = tmp_path / f"{name}.safetensors"
    build_cache(images, params, ids, size, groups).save(path)
    return path


def test_merge_keeps_every_item_and_its_group(tmp_path):
    a = _cache(tmp_path, "a", ["s0/x", "s0/y"], ["bob", "ann"], seed=0)
    b = _cache(tmp_path, "b", ["s1/z", "s1/w", "s1/v"], ["cat", "bob", "bob"], seed=10)
    out = tmp_path / "all.safetensors"
    merged = merge_caches([a, b], out)
    again = FaceCache.load(out)
    ca, cb = FaceCache.load(a), FaceCache.load(b)
    assert len(again) == 5 and again.ids == ["s0/x", "s0/y", "s1/z", "s1/w", "s1/v"]
    assert again.groups == ["ann", "bob", "cat"]
    assert [again.groups[g] for g in again.group.tolist()] == ["bob", "ann", "cat", "bob", "bob"]
    for i in range(2):
        assert np.array_equal(again.image(i), ca.image(i))
    for i in range(3):
        assert np.array_equal(again.image(2 + i), cb.image(i))
    assert torch.equal(again.params.expression, torch.cat([ca.params.expression, cb.params.expression]))
    assert again.sources == ca.sources + cb.sources
    assert merged.size == again.size == 32
    assert again.indices_of(["bob"]) == [0, 3, 4]


def test_merge_refuses_collisions_and_mismatches(tmp_path):
    a = _cache(tmp_path, "a", ["x", "y"], ["p", "p"])
    clash = _cache(tmp_path, "clash", ["z", "y"], ["q", "q"])
    small = _cache(tmp_path, "small", ["k"], ["q"], size=16)
    with pytest.raises(InputError, match="clash.safetensors.*'y'"):
        merge_caches([a, clash])
    with pytest.raises(InputError, match="small.safetensors.*size 16"):
        merge_caches([a, small])
    other = FaceCache.load(a)
    other.params = other.params.replace(model="another@2")
    other.ids = ["m", "n"]
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="other.safetensors.*another@2"):
        merge_caches([a, tmp_path / "other.safetensors"])
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.safetensors"):
        merge_caches([a, tmp_path / "junk.safetensors"])
