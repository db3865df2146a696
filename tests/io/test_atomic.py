import json
import os
import stat
import time

import numpy as np
import pytest

from portraitrig.io.atomic import atomic_path, clean_orphans, is_temp_name, write_image, write_json


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.skipif(os.name != "posix", reason="folders are fsynced where they can be opened (POSIX)")
def test_file_then_folder_are_flushed_after_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "out.json"
    seen = []
    real_fsync = os.fsync

    def spy(fd):
        seen.append((stat.S_ISDIR(os.fstat(fd).st_mode), target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_json(target, {"a": 1})
    # the temp file before the rename, then the folder holding the renamed file
    assert seen == [(False, False), (True, True)]
    assert json.loads(target.read_text()) == {"a": 1}


# ------------------------------------------------------------------ JSON is valid UTF-8
@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_json_with_undecodable_file_names_is_strict_utf8(tmp_path):
    name = os.fsdecode(b"caf\xe9_\xff.png")  # Latin-1 bytes: lone surrogates after fsdecode
    (tmp_path / name).write_bytes(b"x")
    listed = [p for p in tmp_path.iterdir() if p.suffix == ".png"]
    obj = {"items": [{"source": str(listed[0]), "path": listed[0], "n": np.int64(3)}], name: name}
    path = write_json(tmp_path / "manifest.json", obj)
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict
    assert b"\\\\udc" not in raw.lower() and b"\\udc" not in raw.lower()  # no escaped lone surrogates
    back = json.loads(raw)
    item = back["items"][0]
    assert item["source"].endswith("caf\\xe9_\\xff.png") and item["path"] == item["source"] and item["n"] == 3
    assert back == json.loads(raw.decode("ascii"))  # ASCII only
    assert list(back) == ["items", "caf\\xe9_\\xff.png"]


def test_json_keeps_valid_unicode(tmp_path):
    obj = {"name": "Jos\u00e9 \U0001F600", "list": ("a", "b")}
    back = json.loads(write_json(tmp_path / "a.json", obj).read_text(encoding="utf-8"))
    assert back == {"name": "Jos\u00e9 \U0001F600", "list": ["a", "b"]}


# ------------------------------------------------------------------ orphaned temp files
def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_temp_names_are_recognisable(tmp_path, monkeypatch):
    seen = []
    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"x")
    assert is_temp_name(seen[0]) and seen[0].startswith(".model.safetensors.tmp-") and seen[0].endswith(".safetensors")
    for name in ["model.safetensors", ".model.safetensors", ".bashrc", ".hidden.abcdefgh.png", ".x.tmp-abc.png",
                 "x.tmp-abcdefgh.png", ".a.png.ABCDEFGH.png"]:
        assert not is_temp_name(name), name
    assert is_temp_name(".model.safetensors.k3j2h1ab.safetensors")  # the older form, same suffix


def test_clean_orphans_removes_only_old_temps(tmp_path):
    old_temp = tmp_path / ".ckpt.safetensors.tmp-zzzzzzzz.safetensors"  # what a killed write leaves
    legacy = tmp_path / ".out.json.a1b2c3d4.json"
    fresh = tmp_path / ".run.json.tmp-q9w8e7r6.json"
    keep = [tmp_path / "ckpt.safetensors", tmp_path / ".hidden.png", tmp_path / ".config.abcdefgh.yaml"]
    sub = tmp_path / "sub"
    sub.mkdir()
    nested = sub / ".x.png.tmp-abcdefgh.png"
    for p in [old_temp, legacy, fresh, nested, *keep]:
        p.write_bytes(b"y")
    for p in [old_temp, legacy, nested, *keep]:
        _age(p, 7200)
    _age(fresh, 10)
    removed = clean_orphans(tmp_path, older_than_s=3600)
    assert sorted(removed) == sorted([old_temp, legacy])
    assert fresh.exists() and nested.exists() and all(p.exists() for p in keep)
    assert clean_orphans(tmp_path, older_than_s=3600, recursive=True) == [nested]
    assert clean_orphans(tmp_path, older_than_s=0) == [fresh]
    assert clean_orphans(tmp_path / "missing") == []


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_clean_orphans_leaves_symlinks_alone(tmp_path):
    target = tmp_path / "precious.bin"
    target.write_bytes(b"z")
    link = tmp_path / ".precious.bin.tmp-abcdefgh.bin"
    link.symlink_to(target)
    assert clean_orphans(tmp_path, older_than_s=0) == []
    assert link.is_symlink() and target.exists()
