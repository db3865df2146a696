"""portraitrig.io.safepath: names from untrusted files never lead outside the output folder."""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portraitrig.errors import InputError
from portraitrig.io.safepath import MAX_NAME, child, confined, safe_name

_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def _assert_safe(name: str, max_len: int = MAX_NAME) -> None:
    assert _SAFE.match(name), name
    assert 0 < len(name) <= max_len
    assert name not in (".", "..") and ".." not in name
    assert not name.startswith(".") and not name.endswith(".")
    assert name.split(".")[0].lower() not in _WINDOWS_RESERVED


# ------------------------------------------------------------------ safe_name
@pytest.mark.parametrize("name", ["photo", "a_photo.png", "clip.mp4.f000012", "IMG-0001", "x" * MAX_NAME, "-rf"])
def test_safe_names_pass_unchanged(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("text", ["../../pwned", "/tmp/x", "..", ".", "a/b", "a\\b", "C:\\x", "a\x00b", "a\nb",
                                  ".hidden", "trailing.", "CON", "nul.png", "com1.txt", "LPT9", "x" * 500,
                                  "Jos\u00e9", "\u202egnp.exe", "a..b", " ", "\udcff"])
def test_unsafe_texts_are_cleaned(text):
    out = safe_name(text)
    _assert_safe(out)
    assert out != text
    assert safe_name(text) == out  # stable across calls (and processes: a hash, not a counter)
    assert safe_name(out) == out   # a cleaned name is itself safe


def test_cleaning_keeps_the_readable_part_and_extension():
    assert re.fullmatch(r"a_b_[0-9a-f]{8}\.png", safe_name("a/b.png"))
    assert re.fullmatch(r"_tmp_x_[0-9a-f]{8}", safe_name("/tmp/x"))
    assert re.fullmatch(r"CON_[0-9a-f]{8}", safe_name("CON"))
    long = safe_name("x" * 500 + ".png")
    assert len(long) == MAX_NAME and long.endswith(".png")


def test_fallback():
    assert safe_name(None) == "item" and safe_name("") == "item"
    assert safe_name(None, "frame") == "frame"
    assert re.fullmatch(r"frame_[0-9a-f]{8}", safe_name("..", "frame"))
    _assert_safe(safe_name(None, "../evil"))
    _assert_safe(safe_name("", ""))


def test_bytes_and_other_types():
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name on a UTF-8 system
    out = safe_name(name)
    _assert_safe(out)
    assert out.endswith(".png") and safe_name(b"caf\xe9.png") == out
    assert safe_name(12) == "12"


def test_different_texts_do_not_collide():
    texts = ["a/b", "a\\b", "a:b", "a b", "a_b", "a?b", "../a_b", "A/B"]
    assert len({safe_name(t) for t in texts}) == len(texts)


def test_max_len_is_checked():
    with pytest.raises(ValueError):
        safe_name("x", max_len=4)
    _assert_safe(safe_name("y/" * 40, max_len=32), 32)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=80)), st.text(max_size=20))
def test_fuzz_safe_name(text, fallback):
    out = safe_name(text, fallback)
    _assert_safe(out)
    assert safe_name(text, fallback) == out
    assert safe_name(out) == out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=3))
def test_fuzz_child_stays_inside(tmp_path_factory, parts):
    out = tmp_path_factory.mktemp("out")
    path = child(out, *parts)
    assert path.resolve().is_relative_to(out.resolve()) and path.resolve() != out.resolve()
    assert path.relative_to(out).parts == tuple(safe_name(p) for p in parts)


# ------------------------------------------------------------------ child
def test_child_joins_safe_parts(tmp_path):
    assert child(tmp_path, "photo", "render.png") == tmp_path / "photo" / "render.png"
    p = child(tmp_path, "../../pwned")
    assert p.parent == tmp_path and p.name != "pwned"
    p = child(tmp_path, "/tmp/x", "..")
    assert p.parent.parent == tmp_path
    with pytest.raises(ValueError):
        child(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_child_refuses_a_symlink_leading_out(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "item").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="outside the output folder") as ei:
        child(out, "item", "render.png", source=tmp_path / "manifest.json")
    assert str(ei.value).startswith(str(tmp_path / "manifest.json"))
    (out / "inner").mkdir()
    (out / "link").symlink_to(out / "inner", target_is_directory=True)
    assert child(out, "link", "x.png") == out / "link" / "x.png"  # a link that stays inside is fine


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_child_of_a_linked_output_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real", target_is_directory=True)
    assert child(tmp_path / "out", "a") == tmp_path / "out" / "a"


# ------------------------------------------------------------------ confined
def test_confined_accepts_relative_paths_inside(tmp_path):
    (tmp_path / "sub").mkdir()
    assert confined("a.png", tmp_path, "manifest.json") == (tmp_path / "a.png").resolve()
    assert confined("sub/b.png", tmp_path, "manifest.json") == (tmp_path / "sub" / "b.png").resolve()
    assert confined("sub/../c.png", tmp_path, "manifest.json") == (tmp_path / "c.png").resolve()


@pytest.mark.parametrize("text", ["/etc/passwd", "../secret.png", "sub/../../x.png", "C:\\Windows\\x.png",
                                  "\\\\server\\share\\x.png", "C:x.png", ".", "sub/.."])
def test_confined_refuses_paths_outside(tmp_path, text):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "manifest.json"
    with pytest.raises(InputError, match="points outside the results folder") as ei:
        confined(text, tmp_path, manifest)
    assert str(ei.value).startswith(str(manifest))


@pytest.mark.parametrize("text", [None, 3, "", "  ", ["a.png"], "a\x00.png"])
def test_confined_refuses_non_paths(tmp_path, text):
    with pytest.raises(InputError, match="manifest.json"):
        confined(text, tmp_path, "manifest.json")


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_confined_resolves_symlinks(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "innocent.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(InputError, match="points outside the results folder"):
        confined("innocent.png", root, "manifest.json")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_confined_shows_undecodable_names_legibly(tmp_path):
    with pytest.raises(InputError) as ei:
        confined(os.fsdecode(b"../\xff.png"), tmp_path, "manifest.json")
    msg = str(ei.value)
    assert "\\xff.png" in msg
    msg.encode("utf-8")  # no lone surrogates: printable and JSON-safe


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_symlink_loops_are_input_errors(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(InputError, match="manifest.json"):
        child(tmp_path, "loop", "x.png", source="manifest.json")
    with pytest.raises(InputError, match="manifest.json"):
        confined("loop/x.png", tmp_path, "manifest.json")


def test_confined_refuses_names_the_file_system_would_not_take(tmp_path):
    with pytest.raises(InputError, match="too long"):
        confined("." * 300, tmp_path, tmp_path / "manifest.json")
    with pytest.raises(InputError, match="too long"):
        confined("/".join(["d" * 200] * 25), tmp_path, tmp_path / "manifest.json")
    assert confined("a" * 255, tmp_path, tmp_path / "m.json") == (tmp_path / ("a" * 255)).resolve()
