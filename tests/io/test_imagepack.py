"""Images packed as PNG / JPEG bytes in one tensor: round trips, and damaged data named."""
import numpy as np
import pytest
import torch

from portraitrig.errors import InputError
from portraitrig.io.imagepack import pack_images, unpack_images
from portraitrig.neural.frames import Frames, synthetic_frames


def test_png_round_trip_is_exact_for_grey_and_rgb():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (3, 12, 10), dtype=torch.uint8, generator=g)
    rgb = torch.randint(0, 256, (2, 12, 10, 3), dtype=torch.uint8, generator=g)
    for arr, ch in ((grey, 1), (rgb, 3)):
        data, off = pack_images(arr, "PNG")
        assert off.shape == (len(arr) + 1,) and int(off[-1]) == data.numel()
        assert np.array_equal(unpack_images(data, off, len(arr), (12, 10), ch, "x.safetensors"), arr.numpy())


def test_jpeg_is_close_and_smaller():
    fr = synthetic_frames(4, 64)
    png, _ = pack_images(fr.images, "PNG")
    jpg, off = pack_images(fr.images, "JPEG", 95)
    back = unpack_images(jpg, off, 4, (64, 64), 3, "x")
    err = np.abs(back.astype(float) - fr.images.numpy().astype(float)).mean()
    assert err < 3.0 and jpg.numel() < png.numel()


def test_damaged_packs_name_the_file_and_item():
    data, off = pack_images(torch.zeros(2, 8, 8, dtype=torch.uint8), "PNG")
    bad = data.clone()
    bad[int(off[1]):] = 7
    with pytest.raises(InputError, match=r"cache\.safetensors.*mask 1"):
        unpack_images(bad, off, 2, (8, 8), 1, "cache.safetensors", "mask")
    with pytest.raises(InputError, match="offsets"):
        unpack_images(data, off * 2, 2, (8, 8), 1, "cache.safetensors", "mask")
    with pytest.raises(InputError, match="8x8"):  # right format, wrong size
        unpack_images(data, off, 2, (8, 8), 3, "cache.safetensors", "image")
    with pytest.raises(InputError, match="JPEG"):  # a PNG where only JPEG is allowed
        unpack_images(data, off, 2, (8, 8), 1, "cache.safetensors", "image", fmt="JPEG")


def test_frames_files_pack_images_and_read_old_raw_files(tmp_path):
    fr = synthetic_frames(3, 32)
    fr.save(tmp_path / "a.safetensors")
    back = Frames.load(tmp_path / "a.safetensors")
    assert torch.equal(back.images, fr.images) and torch.equal(back.masks, fr.masks)
    fr.save(tmp_path / "q.safetensors", jpeg_quality=90)
    q = Frames.load(tmp_path / "q.safetensors")
    assert torch.equal(q.masks, fr.masks) and (q.images.float() - fr.images.float()).abs().mean() < 4
    # a file written before packing: raw uint8 arrays
    fr.params.save(tmp_path / "raw.safetensors", extras={"images": fr.images, "masks": fr.masks},
                   meta={"kind": "portraitrig.avatar.frames", "source": "s", "skipped": 0})
    assert torch.equal(Frames.load(tmp_path / "raw.safetensors").images, fr.images)
