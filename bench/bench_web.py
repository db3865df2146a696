"""Web app benchmark, measured through a real browser (Playwright driving Debian's chromium): page
load time, slider-to-preview latency on the Rig tab (the median of N moves: from pressing Enter
in a control's box to the new preview image in the page), and the server's memory (RSS, with
its children) after M photo uploads (each fitted): after the first, every 10th and the last
(the first ~10 warm the allocator and caches; growth after that would be a leak). With ``--screenshots DIR`` also a picture
of each tab, run with tiny models trained here on the CPU (``--tiny-models``).

With ``--edit-model`` it also times DiffusionRig edits through the page (Edit tab: from the
click to the edited photo in the page; the first edit loads, and on a GPU compiles, the model;
the median is of the edits after it): a model folder, or ``random:PRESET`` for a model of that
preset with seeded random weights (the time does not depend on the weights). ``--client http``
drives the same events through Gradio's own HTTP client (gradio_client: the queue, the session
state and the file downloads the page uses, without a browser's rendering) where there is no
browser, e.g. on the GPU machine; run both clients on one machine to see what the browser adds.

    python bench/bench_web.py --moves 20 --uploads 50 --out bench/out/web
    python bench/bench_web.py --tiny-models --screenshots docs/images --moves 5 --uploads 2
    python bench/bench_web.py --client http --edit-model random:256 --edits 20   # on the GPU machine
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import describe_machine, machine_info, write_json  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB (from /proc)."""
    total = 0
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def tiny_models(root: Path) -> Path:
    from portraitrig.apps.trainjob import method_config, run_train
    from portraitrig.methods import METHODS

    for name in ("diffusion", "video", "splat"):
        d = root / f"{name}_data"
        d.mkdir(parents=True, exist_ok=True)
        data = METHODS[name].module().tiny_data(d)
        run_train(name, data, root / "runs" / name, method_config(name, "tiny"), device="cpu", progress=False)
    return root / "runs"


def edit_model(spec: str, root: Path) -> Path:
    """A model folder for the edit timing: ``spec`` itself, or ``random:PRESET``."""
    if not spec.startswith("random:"):
        return Path(spec)
    import torch

    from portraitrig.methods.diffusionrig.config import preset
    from portraitrig.methods.diffusionrig.model import DiffusionRigModel

    torch.manual_seed(0)
    d = root / "edit" / "model"
    DiffusionRigModel(preset(spec.split(":", 1)[1])).save_pretrained(d)
    return d


def edit_values(model_dir: str, smile: float) -> list:
    """The Edit event's inputs after the session state: the model, no light sweep, the Rig tab's
    controls (light, azimuth, elevation, strength, colour, map, expression controls, yaw, pitch,
    roll, gaze yaw, gaze pitch) with ``smile`` and a 10-degree yaw."""
    from portraitrig.face.controls import control_names
    from portraitrig.face.model import load_default_model

    names = control_names(load_default_model())
    return [model_dir, 0, "photo", 0, 0, 1, "#ffffff", None,
            *[smile if n == "smile" else 0 for n in names], 10, 0, 0, 0, 0]


def summarise(times: list[float], statuses: list[str], ready: float) -> dict:
    """The first edit (it waits for the model's load, and on a GPU its compilation, which the
    server starts in the background), the time from starting the server to the first edited
    photo, the median, min and max of the other edits, and the median time the server reports
    in the page for them ("Edited in X s": the edit job without the HTTP and the page)."""
    warm = times[1:] or times
    server = [float(m.group(1)) for st in statuses[1:] or statuses if (m := re.search(r"Edited in ([0-9.]+) s", st))]
    return {"first_s": round(times[0], 4), "server_start_to_first_edit_s": round(ready, 2),
            "median_s": round(statistics.median(warm), 4), "min_s": round(min(warm), 4), "max_s": round(max(warm), 4),
            "server_reported_median_s": round(statistics.median(server), 4) if server else None, "edits": len(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=20, help="slider moves timed")
    ap.add_argument("--uploads", type=int, default=50, help="photo uploads before the memory reading")
    ap.add_argument("--loads", type=int, default=5, help="page loads timed")
    ap.add_argument("--photo", default=None, help="photo uploaded (default: the built-in portrait)")
    ap.add_argument("--tiny-models", action="store_true", help="train tiny models (CPU) for the other tabs")
    ap.add_argument("--screenshots", default=None, help="write a screenshot of each tab here")
    ap.add_argument("--edit-model", default=None, help="time edits with this DiffusionRig model folder "
                                                       "(random:PRESET: seeded random weights of that preset)")
    ap.add_argument("--edits", type=int, default=10, help="edits timed (the first one loads the model)")
    ap.add_argument("--edit-steps", type=int, default=20, help="the server's DDIM steps per edit")
    ap.add_argument("--client", choices=("browser", "http", "none"), default="browser",
                    help="drive the page in Chromium, or its events through Gradio's HTTP client (edits only), "
                         "or none: the edit's parts timed in this process (no server)")
    ap.add_argument("--device", default=None, help="the server's torch device (default: cuda when available)")
    ap.add_argument("--out", default=None, help="write web.json here")
    a = ap.parse_args()
    browser_exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if a.client == "browser" and browser_exe is None:
        sys.exit("bench_web: needs Debian's chromium (apt-get install chromium), or --client http")
    if a.client != "browser" and not a.edit_model:
        sys.exit(f"bench_web: --client {a.client} times edits only: give --edit-model")
    if a.client == "none":
        tmp = Path(tempfile.mkdtemp(prefix="portraitrig-web-"))
        try:
            res = {"machine": machine_info(), "client": "none",
                   "edit_parts": edit_parts(edit_model(a.edit_model, tmp / "runs"), tmp, a.edits, a.edit_steps, a.device)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if a.out:
            write_json(Path(a.out) / "web_parts.json", res)
        print(f"web app's edit in parts on {describe_machine(res['machine'])}: {res['edit_parts']}")
        return
    tmp = Path(tempfile.mkdtemp(prefix="portraitrig-web-"))
    runs = tiny_models(tmp) if a.tiny_models else None
    emodel = None
    if a.edit_model:
        runs = runs or tmp / "runs"
        emodel = edit_model(a.edit_model, runs)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "portraitrig.cli", "serve", "--port", str(port), "--out", str(tmp / "out"),
           "--edit-steps", str(a.edit_steps if a.edit_model else 4)] + (["--runs", str(runs)] if runs else [])
    cmd += ["--model", str(emodel)] if emodel is not None and not emodel.is_relative_to(runs) else []
    cmd += ["--device", a.device] if a.device else ([] if a.edit_model else ["--device", "cpu"])
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ,
                              "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    res: dict = {"machine": machine_info(), "url": url, "client": a.client}
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("bench_web: the server stopped:\n" + server.stdout.read().decode(errors="replace"))
                time.sleep(0.1)
        if a.client == "http":
            http_edits(url, str(emodel), a.edits, res, started)
        else:
            browser_run(url, browser_exe, a, tmp, runs, emodel, server, res, started)
    finally:
        server.terminate()
        try:
            log = server.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            server.kill()
            log = ""
        shutil.rmtree(tmp, ignore_errors=True)
    if a.edit_model and "edit" not in res:
        print(log[-3000:])
    res["machine_text"] = describe_machine(res["machine"])
    if a.out:
        write_json(Path(a.out) / "web.json", res)
    print(f"web app on {res['machine_text']} ({a.client})")
    if "page_load_s" in res:
        print(f"  page load: median {res['page_load_s']['median']} s of {a.loads}")
    print(f"  fit of the built-in portrait: {res['fit_builtin_s']} s")
    if "slider_to_preview_s" in res:
        print(f"  slider -> preview: median {res['slider_to_preview_s']['median']} s of {a.moves} "
              f"(max {res['slider_to_preview_s']['max']} s)")
    if a.uploads and "rss_mb_after_first_upload" in res:
        print(f"  server RSS: {res['rss_mb_after_first_upload']} MB after 1 upload, "
              f"{res[f'rss_mb_after_{a.uploads}_uploads']} MB after {a.uploads} (growth {res['rss_growth_mb']} MB); "
              f"every 10 uploads: {res.get('rss_mb_every_10_uploads')}; from the 10th to the last: "
              f"{res.get('rss_growth_after_10_uploads_mb')} MB")
    if "edit" in res:
        e = res["edit"]
        print(f"  edit ({a.edit_model}, {a.edit_steps} DDIM steps) click -> edited photo: first {e['first_s']} s "
              f"({e['server_start_to_first_edit_s']} s after starting the server, which loads and warms the "
              f"model), then median {e['median_s']} s of {e['edits'] - 1} (min {e['min_s']}, max {e['max_s']}); "
              f"the server's own time for them: median {e['server_reported_median_s']} s")


def edit_parts(model_dir: Path, tmp: Path, n: int, steps: int, device: str | None) -> dict:
    """The web edit's parts, medians of ``n`` in this thread after the server's background
    warm-up: the model's edit of the built-in portrait (its reconstruction and the edit, one
    inversion), and the whole edit job (the same plus paste-back and the job's files)."""
    import torch

    from portraitrig.apps import web
    from portraitrig.apps.editjob import EditJobConfig, run_edit
    from portraitrig.editspec import parse
    from portraitrig.neural.contract import Edit

    cfg = web.WebConfig(model=str(model_dir), out=str(tmp / "out"), edit_steps=steps, device=device)
    t = time.perf_counter()
    web.warm_editor(str(model_dir), cfg, wait=True)
    res = {"warm_up_s": round(time.perf_counter() - t, 2)}
    renderer, subject = web._editor(str(model_dir), str(web.builtin_portrait(cfg)), None)
    spec = parse("smile=0.5 yaw=10")
    edits = [Edit("reconstruction"), Edit("edit", spec.params_fn(renderer.face_model))]

    def timed(fn):
        times = []
        for _ in range(n):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(statistics.median(times), 4)

    res["model_edit_s"] = timed(lambda: renderer.edit([subject], edits, steps=steps))
    job = EditJobConfig(steps=steps, device=device)
    k = iter(range(10 ** 6))
    res["edit_job_s"] = timed(lambda: run_edit(model_dir, [subject], tmp / f"job{next(k)}", spec, job,
                                               renderer=renderer))
    return res


def http_edits(url: str, model_dir: str, n: int, res: dict, started: float) -> None:
    """The built-in portrait's fit, then ``n`` edits, through Gradio's HTTP client."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="portraitrig-web-dl-"))
    t = time.perf_counter()
    client.predict(api_name="/fit_builtin")
    res["fit_builtin_s"] = round(time.perf_counter() - t, 3)
    times, statuses, ready = [], [], 0.0
    for k in range(n):
        t = time.perf_counter()
        out = client.predict(*edit_values(model_dir, 0.3 + 0.05 * (k % 10)), api_name="/edit")
        times.append(time.perf_counter() - t)
        ready = ready or time.perf_counter() - started
        statuses.append(out[-1])
        if out[1] is None or not Path(out[1]).is_file():
            sys.exit(f"bench_web: the edit gave no photo: {out[-1]}")
    res["edit"] = summarise(times, statuses, ready)


def browser_run(url, browser_exe, a, tmp, runs, emodel, server, res, started) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        br = p.chromium.launch(executable_path=browser_exe, args=["--no-sandbox"])
        page = br.new_page(viewport={"width": 1400, "height": 1000})
        loads = []
        for _ in range(a.loads):
            t = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#builtin")
            loads.append(time.perf_counter() - t)
        res["page_load_s"] = {"median": round(statistics.median(loads), 3), "all": [round(x, 3) for x in loads]}
        res["rss_mb_idle"] = round(rss_mb(server.pid), 1)

        def src(sel):
            return page.evaluate(f"() => {{ const e = document.querySelector('{sel}'); return e ? e.src : null; }}")

        def settle():  # images and videos loaded before a screenshot
            page.wait_for_timeout(1000)
            page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
            page.wait_for_timeout(500)

        def wait_new(sel, old, timeout=120_000):
            page.wait_for_function(
                f"o => {{ const e = document.querySelector('{sel}'); return e && e.src && e.src !== o; }}",
                arg=old, timeout=timeout)
            return src(sel)

        t = time.perf_counter()
        page.click("#builtin")
        wait_new("#preview img", None)
        res["fit_builtin_s"] = round(time.perf_counter() - t, 3)
        lat = []
        cur = src("#preview img")
        for k in range(a.moves):
            box = page.locator(f"#{'ctrl-smile' if k % 2 == 0 else 'yaw'} input[type=number]")
            box.fill(f"{(0.1 + 0.04 * k) if k % 2 == 0 else (k % 40) - 19.5:g}")
            t = time.perf_counter()
            box.press("Enter")
            cur = wait_new("#preview img", cur, 30_000)
            lat.append(time.perf_counter() - t)
        res["slider_to_preview_s"] = {"median": round(statistics.median(lat), 4), "max": round(max(lat), 4),
                                      "moves": len(lat)}
        if a.screenshots:
            shots = Path(a.screenshots)
            shots.mkdir(parents=True, exist_ok=True)
            settle()
            page.screenshot(path=str(shots / "web_rig.png"), full_page=True)
        # memory: M uploads of a photo, each fitted
        photo = a.photo
        if photo is None:
            from skimage import data
            from PIL import Image

            photo = str(tmp / "portrait.jpg")
            Image.fromarray(data.astronaut()).save(photo, quality=92)
        after_first = None
        for k in range(a.uploads):
            before = page.locator("#rig-status").inner_text()
            page.locator("#photo input[type=file]").set_input_files(photo)
            page.wait_for_function("b => { const t = document.querySelector('#rig-status').innerText; "
                                   "return t !== b && t.includes('Fitted portrait'); }", arg=before,
                                   timeout=60_000)
            if k == 0:
                after_first = rss_mb(server.pid)
            if (k + 1) % 10 == 0:
                res.setdefault("rss_mb_every_10_uploads", []).append(round(rss_mb(server.pid), 1))
        if a.uploads:
            res["rss_mb_after_first_upload"] = round(after_first, 1)
            res[f"rss_mb_after_{a.uploads}_uploads"] = round(rss_mb(server.pid), 1)
            res["rss_growth_mb"] = round(rss_mb(server.pid) - after_first, 1)
            series = res.get("rss_mb_every_10_uploads", [])
            if len(series) >= 2:  # after the first 10 (allocator and caches warm up): a leak shows here
                res["rss_growth_after_10_uploads_mb"] = round(series[-1] - series[0], 1)
        if emodel is not None:  # edits through the page: the built-in portrait, smile and yaw, the Edit tab
            cur = src("#preview img")
            page.click("#builtin")
            cur = wait_new("#preview img", cur, 60_000)
            for sel, v in (("ctrl-smile", "0.4"), ("yaw", "10")):
                box = page.locator(f"#{sel} input[type=number]")
                box.fill(v)
                box.press("Enter")
                cur = wait_new("#preview img", cur, 30_000)
            page.get_by_role("tab", name="Edit").click()
            page.locator("#edit-model input").click()
            page.get_by_role("option", name=str(emodel)).click()
            times, statuses, ready = [], [], 0.0
            for _ in range(a.edits):  # done: a new job folder in the status, the edited photo shown
                job = "() => (document.querySelector('#edit-status').innerText.match(/edit-[0-9-]+/) || [''])[0]"
                before = page.evaluate(job)
                t = time.perf_counter()
                page.click("#edit-run")
                page.wait_for_function(
                    f"b => {{ const j = ({job})(); const i = document.querySelector('#edit-after img'); "
                    "return j && j !== b && i && i.complete && i.naturalWidth > 0; }",
                    arg=before, timeout=600_000, polling=5)
                times.append(time.perf_counter() - t)
                ready = ready or time.perf_counter() - started
                statuses.append(page.locator("#edit-status").inner_text())
            res["edit"] = summarise(times, statuses, ready)
            page.get_by_role("tab", name="Rig").click()
        if a.screenshots and runs:
            page.get_by_role("tab", name="Edit").click()
            page.locator("#edit-sweep input[type=number]").fill("4")
            page.click("#edit-run")
            wait_new("#edit-after img", None, 300_000)
            settle()
            page.screenshot(path=str(shots / "web_edit.png"), full_page=True)
            page.get_by_role("tab", name="Video").click()
            page.locator("#video-orbit input[type=number]").fill("1")
            page.click("#video-run")
            page.wait_for_selector("#video-result video", timeout=300_000)
            settle()
            page.screenshot(path=str(shots / "web_video.png"), full_page=True)
            page.get_by_role("tab", name="Avatar").click()
            page.click("#avatar-run")
            wait_new("#avatar-view img", None, 120_000)
            settle()
            page.screenshot(path=str(shots / "web_avatar.png"), full_page=True)
        br.close()


if __name__ == "__main__":
    main()
