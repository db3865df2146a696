"""The web app (``portraitrig serve``): its logic without a browser, and the page driven in a real
Chromium by Playwright (Debian's ``chromium``; scripts/install.sh --test installs it). Tiny
models of each method (trained here on the CPU) back the Edit, Video and Avatar tabs."""
import shutil
import socket
import time

import numpy as np
import pytest

from portraitrig.apps.trainjob import method_config, run_train
from portraitrig.apps.web import WebConfig, check_upload, find_models, load_photo, spec_text
from portraitrig.errors import InputError
from portraitrig.methods import METHODS


def test_spec_text_from_the_controls():
    assert spec_text() == ""
    assert spec_text("direction", -60, 20, 0.5) == "light=-60,20 strength=0.5"
    assert spec_text("left", controls={"smile": 0.8, "pucker": 0.0}, yaw=15, gaze_yaw=10) == \
        "light=left smile=0.8 yaw=15 gaze=10,0"
    assert spec_text("environment map", env_map="/x/sky.hdr") == "light=env:/x/sky.hdr"
    assert spec_text("left", colour="#ffcc99") == "light=left colour=1,0.8,0.6"
    assert spec_text("left", colour="rgb(255, 255, 255)") == "light=left"      # white: no tint
    assert spec_text("photo", colour="#ff0000") == ""                           # no new light: nothing to tint
    from portraitrig.editspec import parse

    s = parse(spec_text("direction", 30, 10, 0.7, controls={"smile": 0.5}, pitch=-5, gaze_pitch=3, colour="#ff8000"))
    assert s.light == "30,10" and s.strength == 0.7 and s.controls == {"smile": 0.5} and s.pitch == -5
    assert s.colour == (1.0, 0.502, 0.0)


def test_serve_settings_are_checked(capsys):
    from cli_run import error_line, run_cli

    for args, problem in ((["--port", "70000"], "port"), (["--max-side", "10"], "max_side"),
                          (["--max-upload-mb", "0"], "max_upload_mb")):
        code, _, err = run_cli(["serve", *args], capsys)
        assert code == 2 and problem in error_line(err)


def test_uploads_are_checked(tmp_path):
    cfg = WebConfig(max_upload_mb=1, max_side=64)
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image at all")
    with pytest.raises(InputError, match="fake.jpg.*not an image"):
        load_photo(fake, cfg)
    exe = tmp_path / "x.exe"
    exe.write_text("MZ")
    with pytest.raises(InputError, match="allowed photo type"):
        check_upload(exe, (".jpg",), "photo", cfg)
    big = tmp_path / "big.png"
    from PIL import Image

    Image.fromarray(np.zeros((80, 70, 3), np.uint8)).save(big)
    with pytest.raises(InputError, match="70x80 pixels"):
        load_photo(big, cfg)
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * 1_100_000)
    with pytest.raises(InputError, match="1 MB upload limit"):
        load_photo(huge, cfg)


def test_driver_videos_are_checked(tmp_path):
    from portraitrig.apps.web import check_video
    from portraitrig.io.media import VideoWriter

    path = tmp_path / "drv.mp4"
    with VideoWriter(path, 25.0) as w:
        for _ in range(50):                      # 2 s of 96 x 64
            w.write(np.zeros((64, 96, 3), np.uint8))
    assert check_video(path, WebConfig()) == path
    with pytest.raises(InputError, match="drv.mp4.*longer than the 1-second limit"):
        check_video(path, WebConfig(max_video_s=1))
    with pytest.raises(InputError, match="96x64 video: larger than the 64-pixel limit"):
        check_video(path, WebConfig(max_side=64))
    bad = tmp_path / "clip.mp4"
    bad.write_text("no video here")
    with pytest.raises(InputError, match="clip.mp4"):
        check_video(bad, WebConfig())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder with a tiny model of each method (diffusion, video, splat)."""
    root = tmp_path_factory.mktemp("web")
    for name in ("diffusion", "video", "splat"):
        d = root / f"{name}_data"
        d.mkdir()
        data = METHODS[name].module().tiny_data(d)
        run_train(name, data, root / "runs" / name, method_config(name, "tiny"), device="cpu", progress=False)
    return root


def test_models_are_found_by_method_and_others_refused(runs):
    cfg = WebConfig(runs=str(runs / "runs"), out=str(runs / "out"))
    assert [m.split("/")[-2] for m in find_models(cfg, ("video",))] == ["video"]
    assert len(find_models(cfg, ("avatar", "splat"))) == 1
    from portraitrig.apps.web import avatar_view

    with pytest.raises(InputError, match="not a avatar model this server offers"):
        avatar_view(str(runs / "runs" / "video" / "model"), cfg)


def test_edits_reuse_one_loaded_model_and_write_the_jobs_files(runs, tmp_path, monkeypatch):
    import json

    from portraitrig.apps import editjob, web

    cfg = WebConfig(runs=str(runs / "runs"), out=str(tmp_path / "out"), device="cpu", edit_steps=2)
    model = str(runs / "runs" / "diffusion" / "model")
    loads = []
    real = editjob.load_editor
    monkeypatch.setattr(editjob, "load_editor", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(web, "_editors", {})
    monkeypatch.setattr(web, "_edit_subjects", {})
    assert web.warm_editor(str(runs / "runs" / "video" / "model"), cfg) is None   # not a DiffusionRig model
    web.warm_editor(model, cfg, wait=True)                                        # loaded once, in the background
    assert loads == [model] and model in web._editors
    assert web.warm_editor(model, cfg) is None                                    # already loaded: nothing to do
    fit = web.fit_photo(None, cfg)
    photos = []
    for smile in (0.5, 0.9):
        before, after, sweep, out = web.edit_photo(fit, spec_text(controls={"smile": smile}), model, cfg,
                                                   light_sweep=2)
        assert before == web.builtin_portrait(cfg) and after.is_file() and after.parent == out
        assert len(sweep) == 2 and all(p.is_file() for p in sweep)
        items = json.loads((out / "manifest.json").read_text())["items"]
        assert [it["edit"] for it in items] == ["reconstruction", "edit", "light00", "light01"]
        photos.append(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(after)))
    assert loads == [model]                                  # no second load for the later edits
    assert photos[0].shape == photos[1].shape and not np.array_equal(photos[0], photos[1])
    with pytest.raises(InputError, match="no edit to make"):
        web.edit_photo(fit, "", model, cfg)


def test_video_tab_relights_the_target_and_its_background(runs, tmp_path):
    from portraitrig.apps.web import reenact

    cfg = WebConfig(runs=str(runs / "runs"), out=str(tmp_path / "out"), device="cpu")
    model = str(runs / "runs" / "video" / "model")
    res, comp, text = reenact(model, None, cfg, "left", light_background=True, max_frames=4)
    assert res.is_file() and comp.is_file() and "background relit" in text
    res, _, text = reenact(model, None, cfg, "direction", 30, 10, max_frames=4)
    assert res.is_file() and "background relit" not in text


def _zip(path, files: dict):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_uploaded_model_folders_are_checked_and_offered(runs, tmp_path):
    from portraitrig.apps.web import import_model_zip

    cfg = WebConfig(out=str(tmp_path / "out"))
    model = runs / "runs" / "splat" / "model"
    files = {f"model/{p.name}": p.read_bytes() for p in model.iterdir()}
    d = import_model_zip(_zip(tmp_path / "gs.zip", files), cfg, ("avatar", "splat"), "avatar")
    assert d in find_models(cfg, ("splat",)) and (tmp_path / "out" / "models").is_dir()
    assert import_model_zip(tmp_path / "gs.zip", cfg, ("avatar", "splat"), "avatar") == d   # the same upload again
    with pytest.raises(InputError, match="not a video model"):
        import_model_zip(tmp_path / "gs.zip", cfg, ("video",), "video")
    with pytest.raises(InputError, match="not a file of a model folder"):
        import_model_zip(_zip(tmp_path / "a.zip", {**files, "../../evil.json": b"{}"}), cfg, ("splat",), "avatar")
    with pytest.raises(InputError, match="not a file of a model folder"):
        import_model_zip(_zip(tmp_path / "b.zip", {**files, "model/run.py": b"print(1)"}), cfg, ("splat",), "avatar")
    with pytest.raises(InputError, match="unpacks too large"):
        import_model_zip(_zip(tmp_path / "c.zip", {"config.json": b"{" + b" " * 5_000_000 + b"}"}), cfg,
                         ("splat",), "avatar")
    bad = tmp_path / "d.zip"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match="d.zip.*not a zip"):
        import_model_zip(bad, cfg, ("splat",), "avatar")
    with pytest.raises(InputError, match="not a model folder"):
        import_model_zip(_zip(tmp_path / "e.zip", {"config.json": b"{}"}), cfg, ("splat",), "avatar")
    assert not list((tmp_path / "out" / "models").glob("*.part"))
    # a model larger than the upload limit: the message says how to serve it anyway
    small = WebConfig(out=str(tmp_path / "out"), max_upload_mb=1)
    big = _zip(tmp_path / "big.zip", {"model/model.safetensors": np.random.default_rng(0).bytes(1_200_000)})
    with pytest.raises(InputError, match=r"big.zip.*1 MB upload limit.*--max-upload-mb.*--runs"):
        import_model_zip(big, small, ("splat",), "avatar")


def _browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import gradio  # noqa: F401
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        exe = None
    return exe


BROWSER = _browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="needs gradio, playwright and Debian's chromium "
                                                           "(scripts/install.sh --test installs them)")


@pytest.fixture(scope="module")
def page(runs):
    from playwright.sync_api import sync_playwright

    from portraitrig.apps.web import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = WebConfig(port=port, runs=str(runs / "runs"), out=str(runs / "out"), edit_steps=2, device="cpu")
    app = serve(cfg, block=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        pg = browser.new_page()
        t = time.perf_counter()
        pg.goto(f"http://127.0.0.1:{port}/")
        pg.wait_for_selector("#builtin")
        pg.load_seconds = time.perf_counter() - t
        yield pg
        browser.close()
    app.close()


def _src(pg, sel):
    return pg.evaluate(f"() => {{ const e = document.querySelector('{sel}'); return e ? e.src : null; }}")


def _wait_src(pg, sel, old=None, timeout=120_000):
    pg.wait_for_function(f"o => {{ const e = document.querySelector('{sel}'); return e && e.src && e.src !== o; }}",
                         arg=old, timeout=timeout)
    return _src(pg, sel)


def _set_number(pg, elem_id, value):
    box = pg.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


@needs_browser
def test_rig_tab_fits_the_builtin_portrait_and_the_preview_follows_a_slider(page):
    assert page.title() == "portraitrig"
    page.click("#builtin")
    _wait_src(page, "#crop img")
    assert "Fitted" in page.locator("#rig-status").inner_text()
    before = _wait_src(page, "#preview img")
    _set_number(page, "ctrl-smile", 0.8)
    after = _wait_src(page, "#preview img", before, timeout=20_000)
    assert after != before
    assert page.locator("#spec textarea").input_value() == "smile=0.8"
    _set_number(page, "yaw", 20)
    _wait_src(page, "#preview img", after, timeout=20_000)
    assert page.locator("#spec textarea").input_value() == "smile=0.8 yaw=20"


@needs_browser
def test_a_text_file_named_jpg_shows_an_error(page, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is text, not a photo")
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    page.wait_for_function("() => document.querySelector('#rig-status').innerText.includes('not an image')",
                           timeout=30_000)
    assert "holiday.jpg" in page.locator("#rig-status").inner_text()
    from PIL import Image

    Image.fromarray(np.full((200, 160, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    page.locator("#photo input[type=file]").set_input_files(str(tmp_path / "wall.png"))
    page.wait_for_function("() => document.querySelector('#rig-status').innerText.includes('no face')",
                           timeout=30_000)
    assert "wall.png" in page.locator("#rig-status").inner_text()


@needs_browser
def test_edit_tab_edits_the_fitted_photo(page):
    page.click("#builtin")
    page.wait_for_function("() => document.querySelector('#rig-status').innerText.includes('Fitted')")
    _set_number(page, "ctrl-jaw_open", 0.6)
    page.get_by_role("tab", name="Edit").click()
    _set_number(page, "edit-sweep", 3)
    page.click("#edit-run")
    _wait_src(page, "#edit-after img", timeout=180_000)
    assert "Edited" in page.locator("#edit-status").inner_text()
    assert _src(page, "#edit-before img")
    # the page fills its outputs one by one: the gallery may arrive a moment after the photo
    page.wait_for_function("() => document.querySelectorAll('#edit-sweep-gallery img').length >= 3", timeout=30_000)
    assert page.locator("#edit-sweep-gallery img").count() == 3


@needs_browser
def test_video_tab_relights_the_target_under_an_orbiting_light(page, runs):
    page.get_by_role("tab", name="Video").click()
    _set_number(page, "video-orbit", 1)
    page.click("#video-run")
    page.wait_for_selector("#video-result video", timeout=180_000)
    assert "frames written" in page.locator("#video-status").inner_text()
    assert list((runs / "out").glob("video-*/result.mp4")) and list((runs / "out").glob("video-*/manifest.json"))


@needs_browser
def test_avatar_tab_turns_the_view_and_makes_a_turntable(page, runs):
    page.get_by_role("tab", name="Avatar").click()
    page.click("#avatar-run")
    first = _wait_src(page, "#avatar-view img", timeout=60_000)
    _set_number(page, "avatar-yaw", 25)
    page.click("#avatar-run")
    _wait_src(page, "#avatar-view img", first, timeout=60_000)
    _set_number(page, "avatar-orbit", 4)
    page.click("#avatar-video-run")
    page.wait_for_selector("#avatar-video video", timeout=180_000)
    assert list((runs / "out").glob("avatar-*/avatar.mp4"))


@needs_browser
def test_a_model_folder_uploaded_as_a_zip_is_offered(page, runs, tmp_path):
    model = runs / "runs" / "splat" / "model"
    z = _zip(tmp_path / "my_avatar.zip", {f"model/{p.name}": p.read_bytes() for p in model.iterdir()})
    page.get_by_role("tab", name="Avatar").click()
    page.locator("#avatar-zip input[type=file]").set_input_files(str(z))
    page.wait_for_function("() => document.querySelector('#avatar-status').innerText.includes('unpacked')",
                           timeout=60_000)
    assert "models" in page.locator("#avatar-model input").input_value()
    bad = tmp_path / "notes.zip"
    bad.write_text("plain text")
    page.locator("#avatar-zip input[type=file]").set_input_files(str(bad))
    page.wait_for_function("() => document.querySelector('#avatar-status').innerText.includes('not a zip')",
                           timeout=60_000)
