"""portraitrig.io.sources: inputs -> sources -> items with unique, stable ids."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from portraitrig.errors import InputError
from portraitrig.io.sources import expand_inputs, safe_name

SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def _img(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _video(path, n=7):
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for i in range(n):
        w.write(np.full((24, 32, 3), 20 * i, np.uint8))
    w.release()
    return path


def test_folder_sorted_and_filtered(tmp_path):
    _img(tmp_path / "b.png")
    _img(tmp_path / "a.jpg")
    _video(tmp_path / "c.avi")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    _img(tmp_path / "sub" / "d.png")
    srcs = expand_inputs([tmp_path])
    assert [s.path.name for s in srcs] == ["a.jpg", "b.png", "c.avi"]
    assert [s.kind for s in srcs] == ["image", "image", "video"]
    assert [s.id for s in srcs] == ["a", "b", "c.avi"]
    rec = expand_inputs([tmp_path], recursive=True)
    assert [s.path.name for s in rec] == ["a.jpg", "b.png", "c.avi", "d.png"]


def test_image_items_are_lazy(tmp_path):
    p = _img(tmp_path / "photo.png", 77)
    (src,) = expand_inputs([p])
    (item,) = list(src.iter_items())
    assert item.id == "photo" and item.source == str(p) and item.frame_index is None
    p.unlink()  # nothing was read yet: loading now fails with the path
    with pytest.raises(InputError, match="not found"):
        item.load()
    _img(p, 77)
    assert item.load()[0, 0, 0] == 77


def test_video_items(tmp_path):
    p = _video(tmp_path / "clip.avi", n=7)
    (src,) = expand_inputs([p], stride=3)
    items = list(src.iter_items())
    assert [i.id for i in items] == ["clip.avi.f000000", "clip.avi.f000003", "clip.avi.f000006"]
    assert [i.frame_index for i in items] == [0, 3, 6]
    assert items[1].source == f"{p}#frame=3,t=0.12s" and items[1].time_s == pytest.approx(0.12)
    assert abs(float(items[2].load().mean()) - 120) < 6
    assert src.frame_id(3) == items[1].id


def test_skip_for_resume(tmp_path):
    img = _img(tmp_path / "a.png")
    vid = _video(tmp_path / "v.avi", n=5)
    s_img, s_vid = expand_inputs([img, vid])
    done = {"a", "v.avi.f000000", "v.avi.f000001"}
    assert list(s_img.iter_items(skip=done.__contains__)) == []
    assert [i.id for i in s_vid.iter_items(skip=done.__contains__)] == ["v.avi.f000002", "v.avi.f000003",
                                                                         "v.avi.f000004"]


def test_explicit_bad_files_fail_on_load(tmp_path):
    txt = tmp_path / "readme.txt"
    txt.write_text("hello")
    missing = tmp_path / "gone.jpg"
    srcs = expand_inputs([txt, missing])
    assert [s.kind for s in srcs] == ["image", "image"]
    for s in srcs:
        (item,) = list(s.iter_items())
        with pytest.raises(InputError) as ei:
            item.load()
        assert str(ei.value).startswith(str(s.path))


def test_broken_video_raises_while_iterating(tmp_path):
    p = tmp_path / "broken.mp4"
    p.write_bytes(b"\x00" * 100)
    (src,) = expand_inputs([p])
    assert src.kind == "video"
    with pytest.raises(InputError, match="broken.mp4"):
        list(src.iter_items())


def test_globs(tmp_path):
    _img(tmp_path / "x1.png")
    _img(tmp_path / "x2.jpg")
    (tmp_path / "x3.txt").write_text("no")
    srcs = expand_inputs([str(tmp_path / "x*")])
    assert [s.path.name for s in srcs] == ["x1.png", "x2.jpg"]
    with pytest.raises(InputError, match="no image or video"):
        expand_inputs([str(tmp_path / "nothing*.png")])


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        expand_inputs([tmp_path / "empty"])


def test_duplicates_dropped(tmp_path):
    p = _img(tmp_path / "a.png")
    srcs = expand_inputs([p, tmp_path, str(p)])
    assert len(srcs) == 1


def test_ids_unique_for_same_stems(tmp_path):
    paths = [
        _img(tmp_path / "one" / "photo.jpg"),
        _img(tmp_path / "two" / "photo.jpg"),
        _img(tmp_path / "one" / "photo.png"),
        _img(tmp_path / "three" / "Photo.JPG"),
        _img(tmp_path / "solo.png"),
        _video(tmp_path / "clip.avi"),
        _img(tmp_path / "clip.avi.f000001.png"),  # looks like a frame of clip.avi
        _img(tmp_path / "we ird name!.png"),
    ]
    srcs = expand_inputs(paths)
    ids = [s.id for s in srcs]
    assert len({i.lower() for i in ids}) == len(ids)
    assert all(SAFE.match(i) for i in ids), ids
    assert ids[4] == "solo" and ids[5] == "clip.avi" and ids[7] == "we_ird_name_"
    assert ids[:4] == ["one_photo.jpg", "two_photo.jpg", "photo.png", "three_Photo.JPG"]
    frame_ids = {i.id.lower() for i in srcs[5].iter_items()}
    assert not frame_ids & {i.lower() for i in ids}
    # stable: same inputs, same ids
    assert [s.id for s in expand_inputs(paths)] == ids


def test_ids_differing_only_in_case_get_a_hash(tmp_path):
    a, b = _img(tmp_path / "Face.png"), _img(tmp_path / "face.png")
    ids = [s.id for s in expand_inputs([a, b])]
    assert ids[0].lower() != ids[1].lower()
    assert re.fullmatch(r"Face\.png_[0-9a-f]{8}", ids[0]) and re.fullmatch(r"face\.png_[0-9a-f]{8}", ids[1])


def test_safe_name():
    assert safe_name("../etc/passwd") == "_etc_passwd"
    assert safe_name("...") == "_"
    long = safe_name("x" * 500)
    assert len(long) <= 120 and SAFE.match(long) and long != safe_name("x" * 499)


def test_file_names_that_are_not_utf8(tmp_path):
    """Undecodable name bytes (kept by os.fsdecode as surrogates) give safe, unique, stable ids,
    on every path through the id rules (stem, clash, hash of the path, long name)."""
    import os

    folder = os.fsdecode(bytes(tmp_path) + b"/lat\xe9in")
    names = [b"caf\xe9.png", b"caf\xe9.jpg", b"CAF\xc9.png", b"x" * 150 + b"\xff.png"]
    paths = [_img(Path(folder) / os.fsdecode(n)) for n in names]
    srcs = expand_inputs([folder])
    ids = [s.id for s in srcs]
    assert len(ids) == 4 and len({i.lower() for i in ids}) == 4
    assert all(SAFE.match(i) and len(i) <= 120 for i in ids), ids
    assert {s.path: s.id for s in expand_inputs(paths)} == {s.path: s.id for s in srcs}  # stable
    assert all(s.iter_items().__next__().load().shape == (8, 8, 3) for s in srcs)


def test_exclude_leaves_out_a_jobs_own_outputs(tmp_path):
    _img(tmp_path / "photo.png")
    _img(tmp_path / "contact_sheet.png")
    own = lambda p: p.name.startswith("contact_sheet")  # noqa: E731
    assert [s.id for s in expand_inputs([tmp_path], exclude=own)] == ["photo"]
    assert [s.id for s in expand_inputs([str(tmp_path / "*.png")], exclude=own)] == ["photo"]
    # a file named on the command line is always taken
    assert [s.id for s in expand_inputs([tmp_path / "contact_sheet.png"], exclude=own)] == ["contact_sheet"]
