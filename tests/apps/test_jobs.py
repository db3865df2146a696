"""The CLI end to end on a real portrait that ships with scikit-image (no development data)."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from portraitrig.cli import main
from portraitrig.face.params import RigParams


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    astro = data.astronaut()
    Image.fromarray(astro).save(d / "astronaut.png")
    Image.fromarray(astro).save(d / "astronaut_copy.jpg", quality=90)
    (d / "empty.jpg").write_bytes(b"")
    full = (d / "astronaut_copy.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (d / "notes.png").write_text("this is not an image")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 240, 3), dtype=np.uint8)).save(d / "noise.png")
    return d


def _manifest(out):
    return {it["id"]: it for it in json.loads((out / "manifest.json").read_text())["items"]}


def test_fit_batch_reports_bad_inputs_and_resumes(inputs, tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(["fit", str(inputs), "-o", str(out), "--save-crops", "-q"])
    assert code != 0
    items = _manifest(out)
    ok = {k for k, v in items.items() if v["status"] == "ok"}
    assert ok == {"astronaut", "astronaut_copy"}
    for bad in ("empty", "truncated", "notes", "noise"):
        assert items[bad]["status"] == "error"
        assert f"{bad}." in items[bad]["message"], items[bad]["message"]  # names the file
    assert "no face" in items["noise"]["message"].lower()
    summary = capsys.readouterr().out
    assert "4 failed" in summary and "empty.jpg" in summary

    params, extras, meta = RigParams.load(out / items["astronaut"]["params"], with_extras=True)
    assert len(params) == 1 and params.identity.shape[1] > 0 and params.light.shape[1:] == (9, 3)
    verts = extras["vertices_image"].numpy()
    lms = extras["landmarks_image"].numpy()
    assert verts.shape[1] == 3 and lms.shape == (478, 3)
    # the projected mesh lands on the face MediaPipe found, in original-image pixels
    iod = np.linalg.norm(lms[468, :2] - lms[473, :2])
    assert np.linalg.norm(verts[:, :2].mean(0) - lms[:468, :2].mean(0)) < 0.3 * iod
    assert (out / "astronaut.crop.png").exists()
    assert meta["landmark_error_iod_pct"] < 3.0

    before = (out / "astronaut.safetensors").stat().st_mtime_ns
    code2 = main(["fit", str(inputs), "-o", str(out), "-q"])
    assert code2 != 0
    assert (out / "astronaut.safetensors").stat().st_mtime_ns == before  # finished items are skipped
    assert "2 already done" in capsys.readouterr().out

    code3 = main(["fit", str(inputs / "astronaut.png"), "-o", str(tmp_path / "one"), "--format", "npz", "-q"])
    assert code3 == 0 and (tmp_path / "one" / "astronaut.npz").exists()


def test_fit_video_with_stride(inputs, tmp_path):
    astro = cv2.resize(data.astronaut(), (256, 256))
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(6):
        shifted = np.roll(astro, i * 2, axis=1)
        vw.write(cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    vw.release()
    out = tmp_path / "vfit"
    assert main(["fit", str(path), "-o", str(out), "--stride", "2", "-q"]) == 0
    items = [v for v in _manifest(out).values() if v["status"] == "ok"]
    assert len(items) == 3
    loaded = [RigParams.load(out / it["params"], with_extras=True) for it in items]
    # one person: the identity is shared by every frame of a video
    assert all(np.allclose(p.identity.numpy(), loaded[0][0].identity.numpy()) for p, _, _ in loaded)
    # the face moves 4 px right per kept frame, and so does the fitted mesh in image pixels
    xs = [e["vertices_image"][:, 0].mean().item() for _, e, _ in loaded]
    assert np.allclose(np.diff(xs), 4.0, atol=1.0), xs


def test_render_folder_and_contact_sheet(inputs, tmp_path):
    out = tmp_path / "fit"
    main(["fit", str(inputs / "astronaut.png"), str(inputs / "empty.jpg"), "-o", str(out), "-q"])
    rout = tmp_path / "render"
    assert main(["render", str(out), "-o", str(rout), "-q"]) == 0
    for name in ("normal", "albedo", "shaded", "mask", "depth", "overlay", "overlay_crop"):
        img = np.asarray(Image.open(rout / "astronaut" / f"{name}.png"))
        assert img.size > 0, name
    overlay = np.asarray(Image.open(rout / "astronaut" / "overlay.png"))
    assert overlay.shape[:2] == data.astronaut().shape[:2]
    assert not np.array_equal(overlay, data.astronaut())  # the mesh is drawn on the photo
    mask = np.asarray(Image.open(rout / "astronaut" / "mask.png"))
    assert 0.1 < (mask > 127).mean() < 0.9
    assert (rout / "contact_sheet.png").exists()


def test_demo_on_builtin_portrait(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert str(out) in said and "sheet.png" in said
    sheet = np.asarray(Image.open(out / "sheet.png"))
    assert sheet.shape[0] > 500 and sheet.shape[1] > 500
    page = (out / "index.html").read_text()
    assert "sheet.png" in page and "astronaut" in page
    fit = json.loads((out / "fit.json").read_text())
    assert fit["faces_found"] == 1 and fit["landmark_error_iod_pct"] < 3.0


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o"), "-q"]) != 0
    assert "missing.jpg" in capsys.readouterr().out
    assert main([]) == 2


def test_fit_crop_keeps_the_crops_frame(tmp_path):
    """An aligned crop fitted as a crop gives the same rig as the photo it came from, and an
    in-plane rotation of the crop shows up as roll (it is not aligned away)."""
    import cv2
    import torch

    from portraitrig.pipeline import Rigger

    rigger = Rigger(crop_size=256)
    full = rigger.fit_image(data.astronaut(), "astronaut")
    again = rigger.fit_crop(full.crop_image, "crop")
    assert np.allclose(again.params.euler_degrees(), full.params.euler_degrees(), atol=1.5)
    assert torch.allclose(again.params.translation, full.params.translation, atol=0.02)
    small = rigger.fit_crop(cv2.resize(full.crop_image, (128, 128), interpolation=cv2.INTER_AREA), "small")
    assert torch.allclose(small.params.scale, full.params.scale, rtol=0.03)
    rot = cv2.warpAffine(full.crop_image, cv2.getRotationMatrix2D((128, 128), -10, 1.0), (256, 256),
                         borderMode=cv2.BORDER_REFLECT_101)   # 10 degrees clockwise in the image
    rolled = rigger.fit_crop(rot, "rolled")
    d_roll = (rolled.params.euler_degrees() - full.params.euler_degrees())[0, 2].item()
    assert 7.0 < d_roll < 13.0, d_roll


def test_fit_reports_an_empty_folder_and_fits_the_rest(inputs, tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    out = tmp_path / "fit"
    assert main(["fit", str(empty), str(inputs / "astronaut.png"), "-o", str(out), "-q"]) != 0
    items = _manifest(out)
    assert items["astronaut"]["status"] == "ok"
    assert items["empty_folder"]["status"] == "error" and "empty_folder" in items["empty_folder"]["message"]


def _astro_video(path, n=6):
    astro = cv2.resize(data.astronaut(), (256, 256))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(n):
        vw.write(cv2.cvtColor(np.roll(astro, i * 2, axis=1), cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def test_failed_video_group_is_retried_and_max_frames_holds(tmp_path, monkeypatch):
    from portraitrig.pipeline import Rigger

    video = _astro_video(tmp_path / "clip.avi")
    out = tmp_path / "fit"

    def broken(self, *a, **k):
        raise RuntimeError("solver exploded")

    with monkeypatch.context() as m:
        m.setattr(Rigger, "fit_captures", broken)
        assert main(["fit", str(video), "-o", str(out), "-q"]) != 0
    assert all(v["status"] == "error" for v in _manifest(out).values())
    # the failed video is not "done": the next run fits it, honouring --max-frames
    assert main(["fit", str(video), "-o", str(out), "-q", "--max-frames", "2"]) == 0
    ok = [v for v in _manifest(out).values() if v["status"] == "ok"]
    assert len(ok) == 2


def test_render_at_another_size_and_past_a_corrupt_item(inputs, tmp_path):
    out = tmp_path / "fit"
    assert main(["fit", str(inputs / "astronaut.png"), str(inputs / "astronaut_copy.jpg"), "-o", str(out), "-q"]) == 0
    r256, r512 = tmp_path / "r256", tmp_path / "r512"
    assert main(["render", str(out), "-o", str(r256), "-q", "--no-sheet"]) == 0
    assert main(["render", str(out), "-o", str(r512), "-q", "--no-sheet", "--size", "512"]) == 0
    a = np.asarray(Image.open(r256 / "astronaut" / "overlay_crop.png")).astype(float)
    b = np.asarray(Image.open(r512 / "astronaut" / "overlay_crop.png").resize((256, 256), Image.BILINEAR)).astype(float)
    assert np.abs(a - b).mean() < 12  # the same crop at twice the resolution, not a misplaced one
    (out / "astronaut_copy.safetensors").write_bytes(b"garbage")
    bad = tmp_path / "rbad"
    assert main(["render", str(out), "-o", str(bad), "-q", "--no-sheet"]) != 0
    assert (bad / "astronaut" / "overlay.png").exists()  # the good item is still rendered


@pytest.mark.parametrize("bad", [["--stride", "0"], ["--size", "16"], ["--max-frames", "x"]])
def test_bad_option_values_are_usage_errors(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "photo.jpg", "-o", str(tmp_path), *bad])
    assert exit_.value.code == 2 and bad[0] in capsys.readouterr().err


def test_every_command_prints_its_help():
    """``--help`` of every command and sub-command formats (a '%' in a help text once made
    ``portraitrig train splat --help`` a traceback)."""
    import argparse

    from portraitrig.cli import build_parser

    def walk(parser, name):
        text = parser.format_help()
        assert "usage:" in text, name
        seen = 1
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    seen += walk(sub, f"{name} {sub_name}")
        return seen

    assert walk(build_parser(), "portraitrig") > 10
