import json
import os
import stat

import numpy as np
import pytest

from portraitrig.io.atomic import atomic_path, write_image, write_json


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
