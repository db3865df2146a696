"""portraitrig.io.images: every supported format decodes to the right pixels; every bad file
raises InputError naming it."""
from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from portraitrig.errors import InputError
from portraitrig.io.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, _orient, is_video, read_image


def _pattern(h=24, w=32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def _check(out: np.ndarray, shape) -> None:
    assert out.dtype == np.uint8 and out.shape == shape and out.flags.c_contiguous


# ------------------------------------------------------------------ good files
def test_png_rgb_exact(tmp_path):
    a = _pattern()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    _check(out, a.shape)
    np.testing.assert_array_equal(out, a)


def test_jpeg_close(tmp_path):
    a = _pattern()
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=98)
    out = read_image(str(tmp_path / "a.jpg"))
    _check(out, a.shape)
    assert np.abs(out.astype(int) - a).mean() < 3


def test_webp_lossless(tmp_path):
    a = _pattern()
    Image.fromarray(a).save(tmp_path / "a.webp", lossless=True)
    np.testing.assert_array_equal(read_image(tmp_path / "a.webp"), a)


def test_png16_rgb_keeps_precision(tmp_path):
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    a16[0, 0] = [65535, 0, 32896]  # 32896 / 257 = 128 exactly
    a16[0, 1] = [255, 128, 65407]  # rounding, not truncation: 255/257 -> 1, 128/257 -> 0, 65407/257 -> 254.5 -> 254
    assert cv2.imwrite(str(tmp_path / "a.png"), a16[..., ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "a.png")
    _check(out, (10, 12, 3))
    np.testing.assert_array_equal(out, np.rint(a16 / 65535.0 * 255).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 128])
    assert out[0, 1, 0] == 1  # Pillow alone would give the high byte: 0


def test_png16_gray(tmp_path):
    g = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "g.png"), g)
    out = read_image(tmp_path / "g.png")
    _check(out, (12, 10, 3))
    ref = np.rint(g / 257.0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], ref)


def test_png16_rgba_over_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint16)
    a[..., 2] = 65535  # red in BGRA
    a[:2, ..., 3] = 65535  # top half opaque, bottom transparent
    assert cv2.imwrite(str(tmp_path / "a.png"), a)
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])


def test_rgba_and_la_composite_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[:, :2, 3] = 255
    rgba[:, 2:, 3] = 0
    rgba[0, 3, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [0, 200, 0])
    np.testing.assert_array_equal(out[1, 3], [255, 255, 255])
    a = 128 / 255
    np.testing.assert_allclose(out[0, 3], np.rint([255 * (1 - a), 200 * a + 255 * (1 - a), 255 * (1 - a)]), atol=1)
    la = Image.fromarray(np.dstack([np.full((4, 4), 10, np.uint8), rgba[..., 3]]), "LA")
    la.save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out[0, 0], [10, 10, 10])
    np.testing.assert_array_equal(out[0, 2], [255, 255, 255])


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putdata([0, 0, 1, 1, 0, 0, 1, 1])
    im.save(tmp_path / "p.png", transparency=1)
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 3], [255, 255, 255])
    im.save(tmp_path / "p.gif")  # palette without transparency
    out = read_image(tmp_path / "p.gif")
    np.testing.assert_array_equal(out[0, 3], [0, 0, 255])


@pytest.mark.parametrize("mode", ["L", "1", "I;16", "I", "F"])
def test_grayscale_modes(tmp_path, mode):
    g8 = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (3, 1))
    if mode == "L":
        im, ext, ref = Image.fromarray(g8, "L"), "png", g8
    elif mode == "1":
        im, ext, ref = Image.fromarray(g8 >= 128), "png", np.where(g8 >= 128, 255, 0)
    elif mode == "I;16":
        im, ext, ref = Image.fromarray(g8.astype(np.uint16) * 257), "png", g8
    elif mode == "I":
        im, ext, ref = Image.fromarray(g8.astype(np.int32) * 257), "tif", g8
    else:
        im, ext, ref = Image.fromarray(g8.astype(np.float32) / 255.0), "tif", g8
    im.save(tmp_path / f"g.{ext}")
    out = read_image(tmp_path / f"g.{ext}")
    _check(out, (3, 16, 3))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], ref)


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    im.paste((255, 0, 255, 0), (0, 4, 8, 8))  # green
    im.save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = read_image(tmp_path / "c.jpg")
    _check(out, (8, 8, 3))
    assert np.abs(out[1, 1].astype(int) - [255, 0, 0]).max() < 12
    assert np.abs(out[6, 6].astype(int) - [0, 255, 0]).max() < 12


def test_cmyk_jpeg_with_icc_profile(tmp_path):
    # a profile whose conversion differs visibly from the naive formula would need a CMYK ICC
    # file; check instead that a profile is used when present (sRGB round trip ~ identity on RGB)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    a = _pattern()
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=98, icc_profile=srgb)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - a).mean() < 3


def _rgb_icc(red, green, blue, gamma=2.2, name="test RGB") -> bytes:
    """A minimal ICC v2 display profile (matrix / TRC): the D50 XYZ of the file's red, green
    and blue primaries and one gamma; the PCS white D50."""
    import struct

    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(v):
        return b"XYZ " + bytes(4) + b"".join(s15(c) for c in v)

    text = name.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, int(round(gamma * 256))) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text" + bytes(4) + b"none\0" + bytes(3))]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


# sRGB's primaries (D50-adapted XYZ, as its ICC profile has them)
SRGB_R, SRGB_G, SRGB_B = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_rgb_in_another_colour_space_is_converted_to_srgb(tmp_path, fmt):
    """RGB pixels tagged with another profile than sRGB's (a phone's Display P3, a camera's
    Adobe RGB) are converted to sRGB through it: here a profile whose red is sRGB's green turns
    a red patch green. sRGB-tagged pixels are read as they are; a broken profile leaves them."""
    swapped = _rgb_icc(SRGB_G, SRGB_R, SRGB_B, name="swapped primaries")
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(swapped))).strip() == "swapped primaries"
    a = np.zeros((16, 16, 3), np.uint8)
    a[:, :8] = [230, 0, 0]
    a[:, 8:] = [128, 128, 128]
    opts = {"quality": 100, "subsampling": 0} if fmt == "jpg" else {}
    Image.fromarray(a).save(tmp_path / f"p.{fmt}", icc_profile=swapped, **opts)
    out = read_image(tmp_path / f"p.{fmt}").astype(int)
    assert out[4, 2, 1] > 200 and out[4, 2, 0] < 40            # red in that space is sRGB's green
    assert np.abs(out[4, 12] - 128).max() < 6                   # grey stays grey (same white and gamma)
    # a profile with sRGB's own primaries and gamma 2.2: the pixels change little, and by rounding
    near = _rgb_icc(SRGB_R, SRGB_G, SRGB_B, name="almost sRGB")
    Image.fromarray(_pattern()).save(tmp_path / f"n.{fmt}", icc_profile=near, **opts)
    assert np.abs(read_image(tmp_path / f"n.{fmt}").astype(int) - _pattern()).mean() < 4
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_pattern()).save(tmp_path / "s.png", icc_profile=srgb)
    assert np.array_equal(read_image(tmp_path / "s.png"), _pattern())
    Image.fromarray(_pattern()).save(tmp_path / "b.png", icc_profile=b"not a profile at all")
    assert np.array_equal(read_image(tmp_path / "b.png"), _pattern())


def _marked(h=20, w=30) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:4, :4] = [255, 0, 0]  # marker in the stored top-left corner
    return a


@pytest.mark.parametrize("orientation,corner", [(1, (0, 0)), (3, (-1, -1)), (6, (0, -1)), (8, (-1, 0))])
def test_exif_orientation(tmp_path, orientation, corner):
    im = Image.fromarray(_marked())
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=100)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape[:2] == ((20, 30) if orientation in (1, 3) else (30, 20))
    r, c = corner
    assert out[r, c, 0] > 200 and out[r, c, 1] < 60  # the red marker moved to this corner
    assert out[out.shape[0] // 2, out.shape[1] // 2].max() < 30


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow(orientation):
    from PIL import ImageOps

    a = _pattern(5, 7)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    np.testing.assert_array_equal(_orient(a, orientation), ref)


def test_png16_with_exif_orientation(tmp_path):
    a16 = np.zeros((6, 9, 3), np.uint16)
    a16[0, 0] = [0, 0, 65535]  # red (BGR)
    ok, buf = cv2.imencode(".png", a16)
    assert ok
    im = Image.open(io.BytesIO(buf.tobytes()))
    exif = Image.Exif()
    exif[0x0112] = 6
    # add an eXIf chunk: re-save through Pillow would drop 16-bit RGB, so splice the chunk in
    import struct
    import zlib

    payload = exif.tobytes()
    if payload.startswith(b"Exif\x00\x00"):
        payload = payload[6:]
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    data = buf.tobytes()
    ihdr_end = 8 + 25
    (tmp_path / "o.png").write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])
    assert im.size == (9, 6)
    out = read_image(tmp_path / "o.png")
    assert out.shape == (9, 6, 3)
    np.testing.assert_array_equal(out[0, -1], [255, 0, 0])


# ------------------------------------------------------------------ bad files
def _assert_input_error(path, words):
    with pytest.raises(InputError) as ei:
        read_image(path)
    msg = str(ei.value)
    assert msg.startswith(str(path)) and ei.value.path == str(path)
    assert any(w in msg for w in words), msg


def test_missing_file(tmp_path):
    _assert_input_error(tmp_path / "nope.jpg", ["not found"])


def test_directory(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    _assert_input_error(tmp_path / "d.jpg", ["directory"])


def test_zero_bytes(tmp_path):
    (tmp_path / "z.png").write_bytes(b"")
    _assert_input_error(tmp_path / "z.png", ["empty"])


def test_text_renamed_jpg(tmp_path):
    (tmp_path / "t.jpg").write_text("hello, I am not a picture\n")
    _assert_input_error(tmp_path / "t.jpg", ["not an image"])


def test_unsupported_binary(tmp_path):
    (tmp_path / "x.png").write_bytes(bytes(range(256)) * 8)
    _assert_input_error(tmp_path / "x.png", ["unsupported", "not an image"])


def test_video_given_as_image(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    _assert_input_error(tmp_path / "v.mp4", ["video"])


@pytest.mark.parametrize("ext,frac", [("jpg", 0.5), ("jpg", 0.97), ("png", 0.5), ("png", 0.99), ("webp", 0.6)])
def test_truncated(tmp_path, ext, frac):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / f"full.{ext}")
    data = (tmp_path / f"full.{ext}").read_bytes()
    bad = tmp_path / f"cut.{ext}"
    bad.write_bytes(data[: int(len(data) * frac)])
    _assert_input_error(bad, ["truncated", "corrupt"])


def test_truncated_png16(tmp_path):
    rng = np.random.default_rng(2)
    assert cv2.imwrite(str(tmp_path / "full.png"), rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _assert_input_error(tmp_path / "cut.png", ["truncated", "corrupt"])


def test_extension_sets():
    assert ".jpg" in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS and ".webp" in IMAGE_EXTENSIONS
    assert {".mp4", ".mov", ".avi"} <= VIDEO_EXTENSIONS
    assert not IMAGE_EXTENSIONS & VIDEO_EXTENSIONS
    assert is_video("a/b/Clip.MOV") and not is_video("x.jpg")


# ------------------------------------------------------------------ huge images, odd file names
def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (the pixel data is far too short)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # 'IHDR' + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize("width, height", [(20000, 10000), (100000, 100000)])
def test_refuses_images_above_the_pixel_limit_from_the_header(tmp_path, width, height):
    from portraitrig.io.images import MAX_PIXELS

    assert width * height > MAX_PIXELS
    (tmp_path / "huge.png").write_bytes(_png_claiming(width, height))
    with pytest.raises(InputError, match=r"huge.png: image too large: .*the limit is 179 megapixels"):
        read_image(tmp_path / "huge.png")


def test_own_pixel_limit_applies_before_decoding(tmp_path, monkeypatch):
    import portraitrig.io.images as images

    Image.fromarray(_pattern(24, 32)).save(tmp_path / "a.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 700)
    with pytest.raises(InputError, match=r"a.png: image too large: 32 x 24 px"):
        read_image(tmp_path / "a.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 768)
    assert read_image(tmp_path / "a.png").shape == (24, 32, 3)


def test_large_images_below_the_limit_give_no_bomb_warning(tmp_path):
    import warnings

    (tmp_path / "big.png").write_bytes(_png_claiming(12000, 10000))  # 120 MP: Pillow would warn
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="big.png: corrupt or truncated"):
            read_image(tmp_path / "big.png")
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_undecodable_file_names_are_reported_legibly(tmp_path):
    folder = os.fsencode(tmp_path)
    bad = os.fsdecode(folder + b"/caf\xe9_\xff.jpg")
    with open(bad, "w") as f:
        f.write("not a picture\n")
    for path in (bad, os.fsdecode(folder + b"/missing_\xff.png")):
        with pytest.raises(InputError) as ei:
            read_image(path)
        msg = str(ei.value)
        msg.encode("utf-8")  # printable, storable in strict JSON
        assert "\\xff" in msg and ei.value.path == path  # the path itself stays usable
    good = os.fsdecode(folder + b"/ok_\xff.png")
    Image.fromarray(_pattern()).save(good)
    np.testing.assert_array_equal(read_image(good), _pattern())
