"""Web app benchmark, measured through a real browser (Playwright driving Debian's chromium): page
load time, slider-to-preview latency on the Rig tab (the median of N moves: from pressing Enter
in a control's box to the new preview image in the page), and the server's memory (RSS, with
its children) after M photo uploads (each fitted): after the first, every 10th and the last
(the first ~10 warm the allocator and caches; growth after that would be a leak). With ``--screenshots DIR`` also a picture
of each tab, run with tiny models trained here on the CPU (``--tiny-models``).

    python bench/bench_web.py --moves 20 --uploads 50 --out bench/out/web
    python bench/bench_web.py --tiny-models --screenshots docs/images --moves 5 --uploads 2
"""
from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=20, help="slider moves timed")
    ap.add_argument("--uploads", type=int, default=50, help="photo uploads before the memory reading")
    ap.add_argument("--loads", type=int, default=5, help="page loads timed")
    ap.add_argument("--photo", default=None, help="photo uploaded (default: the built-in portrait)")
    ap.add_argument("--tiny-models", action="store_true", help="train tiny models (CPU) for the other tabs")
    ap.add_argument("--screenshots", default=None, help="write a screenshot of each tab here")
    ap.add_argument("--out", default=None, help="write web.json here")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    browser_exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_exe is None:
        sys.exit("bench_web: needs Debian's chromium (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="portraitrig-web-"))
    runs = tiny_models(tmp) if a.tiny_models else None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "portraitrig.cli", "serve", "--port", str(port), "--out", str(tmp / "out"),
           "--device", "cpu", "--edit-steps", "4"] + (["--runs", str(runs)] if runs else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ,
                              "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    res: dict = {"machine": machine_info(), "url": url}
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
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
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine_text"] = describe_machine(res["machine"])
    if a.out:
        write_json(Path(a.out) / "web.json", res)
    print(f"web app on {res['machine_text']}")
    print(f"  page load: median {res['page_load_s']['median']} s of {a.loads}")
    print(f"  fit of the built-in portrait: {res['fit_builtin_s']} s")
    print(f"  slider -> preview: median {res['slider_to_preview_s']['median']} s of {a.moves} "
          f"(max {res['slider_to_preview_s']['max']} s)")
    if a.uploads:
        print(f"  server RSS: {res['rss_mb_after_first_upload']} MB after 1 upload, "
              f"{res[f'rss_mb_after_{a.uploads}_uploads']} MB after {a.uploads} (growth {res['rss_growth_mb']} MB); "
              f"every 10 uploads: {res.get('rss_mb_every_10_uploads')}; from the 10th to the last: "
              f"{res.get('rss_growth_after_10_uploads_mb')} MB")


if __name__ == "__main__":
    main()
