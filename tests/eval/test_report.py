import json

import numpy as np
import pytest
import torch
from PIL import Image

from portraitrig.eval.cli import main, register
from portraitrig.eval.report import comparison_strip, pick_cases, render_html, write_report
from portraitrig.face.params import RigParams


def _face(shift=0, size=256):
    from skimage import data

    a = data.astronaut()[40:296, 100:356]  # 256 x 256 around the face
    a = np.roll(a, shift, axis=1)
    return np.asarray(Image.fromarray(a).resize((size, size)))


def _params(expr, n=1):
    def z(*s):
        return torch.zeros(*s)
    light = z(n, 9, 3)
    light[:, 0] = 1
    return RigParams(scale=torch.ones(n, 1), rotation=z(n, 3), translation=z(n, 2), identity=z(n, 4),
                     expression=torch.full((n, 5), float(expr)), gaze=z(n, 2, 2), light=light,
                     albedo=torch.full((n, 10, 3), 0.5), model="test@1")


def _results(tmp_path, video=True):
    root = tmp_path / "results"
    (root / "gen").mkdir(parents=True)
    (root / "real").mkdir()
    real = _face()
    Image.fromarray(real).save(root / "real" / "a.png")
    Image.fromarray(np.ascontiguousarray(real[:, ::-1])).save(root / "real" / "b.png")
    items = []
    for i, noise in enumerate([2, 10, 30]):
        g = np.clip(real.astype(np.int16) + np.random.default_rng(i).normal(0, noise, real.shape), 0, 255).astype(np.uint8)
        Image.fromarray(g).save(root / "gen" / f"{i}.png")
        items.append({"id": f"img{i}", "generated": f"gen/{i}.png", "reference": "real/a.png"})
    mask = np.zeros(real.shape[:2], np.uint8)
    mask[60:200, 60:200] = 255
    Image.fromarray(mask).save(root / "mask.png")
    items[0]["mask"] = "mask.png"
    _params(0.0).save(root / "req.safetensors")
    _params(0.5).save(root / "fit.safetensors")
    items[1].update(requested_params="req.safetensors", fitted_params="fit.safetensors")
    items.append({"id": "failed", "error": "no face in source"})
    if video:
        import cv2

        w = cv2.VideoWriter(str(root / "gen" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (256, 256))
        for t in range(8):
            w.write(cv2.cvtColor(_face(shift=t), cv2.COLOR_RGB2BGR))
        w.release()
        items.append({"id": "clip", "generated": "gen/clip.avi", "reference": "real/a.png"})
    manifest = {"items": items, "floor": {"a": "req.safetensors", "b": "req.safetensors"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_strip_and_cases():
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((64, 64, 3), 10, np.uint8)
    s = comparison_strip(b, a, height=40)
    assert s.shape == (40, 3 * 40 + 8, 3) and s[:, -40:].max() == 30  # |10 - 0| x 3
    items = [{"id": i, "metrics": {"psnr": float(i)}} for i in range(10)] + [{"id": "x", "metrics": {}}]
    c = pick_cases(items, "psnr", 2)
    assert [i["id"] for i in c["best"]] == [9, 8] and [i["id"] for i in c["worst"]] == [0, 1]
    assert [i["id"] for i in pick_cases(items[:10], "psnr", 1)["median"]] == [4]


def test_html_report_sections(tmp_path):
    img = _face(size=64)
    items = [{"id": f"i{k}", "generated": "g", "reference": "r", "metrics": {"identity_distance": 0.1 * k, "psnr": 30.0 - k}}
             for k in range(5)] + [{"id": "bad", "error": "boom"}]
    jpath, hpath = write_report(tmp_path, {"n_items": 6, "metrics": {"psnr": {"mean": 28.0}}}, items,
                                load_image=lambda p: img)
    html = hpath.read_text()
    for section in ("id='summary'", "id='per-item'", "id='plots'", "id='cases'", "id='errors'",
                    "Best, median and worst by identity_distance", "<h3>metrics</h3>", "<td>n_items</td>"):
        assert section in html, section
    assert html.count("data:image/png;base64,") >= 2 + 3 * 3
    assert "<script" not in html and "src='http" not in html
    assert json.loads(jpath.read_text())["items"][5]["error"] == "boom"
    assert "id='cases'" not in render_html({}, items)  # no image loader: no strips


def test_eval_cli_end_to_end(tmp_path, capsys):
    root = _results(tmp_path)
    out = tmp_path / "out"
    assert main(["eval", str(root), "-o", str(out), "--real", str(root / "real")]) == 0
    m = json.loads((out / "metrics.json").read_text())
    items = {it["id"]: it for it in m["items"]}
    s = m["summary"]
    assert s["n_items"] == 5 and s["n_errors"] == 1 and "upstream" in items["failed"]["error"]
    # image metrics fall as the noise rises; the identity survives the noise
    p = [items[f"img{i}"]["metrics"]["psnr"] for i in range(3)]
    assert p[0] > p[1] > p[2] and abs(p[0] - 20 * np.log10(255 / 2)) < 1.5
    assert "ssim_masked" in items["img0"]["metrics"] and "ssim_masked" not in items["img1"]["metrics"]
    for i in range(3):
        assert items[f"img{i}"]["metrics"]["identity_distance"] < 0.6
        assert items[f"img{i}"]["info"]["face_generated"] == "hog"
    assert s["identity_same_person_rate"] == 1.0
    # rig: coefficient error 0.5 against a floor of 0
    assert s["rig"]["generated"]["expression_coef_mae"]["mean"] == pytest.approx(0.5)
    assert s["rig"]["floor"]["expression_coef_mae"]["mean"] == 0.0
    # video: jitter and flicker measured, identity of sampled frames
    v = items["clip"]["metrics"]
    assert {"jitter_pct_iod", "accel_pct_iod", "flicker", "identity_distance"} <= set(v)
    assert v["identity_distance"] < 0.6
    assert s["frechet_identity_distance"] >= 0
    assert s["frechet_identity_n"] == {"real": 2, "generated": 3 + items["clip"]["info"]["identity_frames"]}
    html = (out / "report.html").read_text()
    assert "id='cases'" in html and "img2" in html and "floor mean" in html
    assert json.loads(capsys.readouterr().out)["n_items"] == 5


def test_eval_without_manifest_uses_real_dir(tmp_path):
    gen, real = tmp_path / "gen", tmp_path / "real"
    gen.mkdir()
    real.mkdir()
    face = _face(size=128)
    Image.fromarray(face).save(real / "x.png")
    Image.fromarray(face[:, ::-1].copy()).save(gen / "x.png")
    Image.fromarray(face).save(gen / "unmatched.png")
    assert main(["eval", str(gen), "--real", str(real), "--kind", "image"]) == 0
    m = json.loads((gen / "eval" / "metrics.json").read_text())
    items = {it["id"]: it for it in m["items"]}
    assert set(items["x"]["metrics"]) == {"psnr", "ssim"} and items["unmatched"]["metrics"] == {}
    assert m["kinds"] == ["image"]


def test_an_exact_copy_counts_in_the_psnr_mean(tmp_path):
    """An exact copy's PSNR is infinite: the summary averages it at PSNR_CAP instead of leaving
    it out of the mean."""
    from portraitrig.eval.image import PSNR_CAP, psnr

    gen, real = tmp_path / "gen", tmp_path / "real"
    gen.mkdir()
    real.mkdir()
    face = _face(size=64)
    noisy = np.clip(face.astype(np.int16) + np.random.default_rng(0).normal(0, 8, face.shape), 0, 255).astype(np.uint8)
    for name in ("same", "noisy"):
        Image.fromarray(face).save(real / f"{name}.png")
    Image.fromarray(face).save(gen / "same.png")
    Image.fromarray(noisy).save(gen / "noisy.png")
    assert main(["eval", str(gen), "--real", str(real), "--kind", "image"]) == 0
    m = json.loads((gen / "eval" / "metrics.json").read_text())
    summary = m["summary"]["metrics"]["psnr"]
    assert summary["n"] == 2
    assert summary["mean"] == pytest.approx((PSNR_CAP + psnr(noisy, face)) / 2, abs=1e-6)


def test_bad_results_folder(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text("{not json")
    assert main(["eval", str(tmp_path)]) == 2


def test_register_adds_subcommand():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "R", "--kind", "identity", "--kind", "video", "--real", "D"])
    assert args.kind == ["identity", "video"] and args.real == "D" and callable(args.func)
