"""The bench/ scripts run end to end on the CPU with tiny settings and write the JSON they promise.

Each script runs as a subprocess, as a user runs it (bench/ is not a package and is not
imported here). The profile_train, profile_edit and bench_diffusion cases import the
DiffusionRig internals (portraitrig.methods.diffusionrig: config presets, model, engine,
trainer), so they also break when those modules move.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def run_script(name: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run bench/NAME with ARGS on the CPU from the repository root; returns the finished process."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(BENCH / name), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def check_machine(info: dict) -> None:
    """The machine record bench/common.py writes into every result file."""
    assert info["cpu_cores"] >= 1 and info["cpu"] and info["timestamp_utc"].endswith("+00:00")


SYNTHETIC_LOG = (
    "V1121 x] [__output_code] # AOT ID: ['0_inference']\n"
    "    buf1 = empty_strided_cuda((16, 256, 64, 64), (1048576, 1, 16384, 256), torch.bfloat16)\n"
    "    buf2 = empty_strided_cuda((16, 384, 64, 64), (1572864, 4096, 64, 1), torch.bfloat16)\n"
    "    buf3 = empty_strided_cuda((16, 128, 1, 1), (128, 1, 1, 1), torch.float32)\n"
    "V1121 x] [__output_code] # AOT ID: ['1_inference']\n"
    "    buf4 = empty_strided_cpu((2, 8, 4, 4), (128, 1, 32, 8), torch.float32)\n")


def test_layout_audit_lists_nchw_buffers_graph_by_graph(tmp_path):
    log = tmp_path / "code.log"
    log.write_text(SYNTHETIC_LOG)
    out = tmp_path / "a.json"
    proc = run_script("layout_audit.py", str(log), "--json", str(out), timeout=60)
    check_ok(proc)
    graphs = json.loads(out.read_text())
    assert [g["allocations_4d"] for g in graphs] == [3, 1]
    assert graphs[0]["nchw"] == [{"buffer": "buf2", "shape": [16, 384, 64, 64], "dtype": "bfloat16"}]
    assert graphs[1]["nchw"] == []
    assert "graph 0: 3 4-D allocations, 1 NCHW" in proc.stdout


def test_layout_audit_missing_log_exits_2(tmp_path):
    out = tmp_path / "a.json"
    proc = run_script("layout_audit.py", str(tmp_path / "missing.log"), "--json", str(out), timeout=60)
    assert proc.returncode == 2 and not out.exists()


def test_bench_render_tiny_cpu(tmp_path):
    out = tmp_path / "r.json"
    proc = run_script("bench_render.py", "--sizes", "64", "--batches", "1", "--threads", "1", "--repeat", "1",
                      "--fit-batches", "1", "--out", str(out))
    check_ok(proc)
    res = json.loads(out.read_text())
    assert res["model"]["V"] > 0 and res["rows"]
    buffers = [r for r in res["rows"] if r["what"] == "buffers(all)"]
    assert [(r["size"], r["batch"], r["threads"]) for r in buffers] == [(64, 1, 1)]
    assert all(r["ms_per_batch"] > 0 for r in res["rows"])


# The cases below import the DiffusionRig internals (see the module docstring).

def test_profile_train_tiny_cpu(tmp_path):
    out = tmp_path / "p.json"
    proc = run_script("profile_train.py", "--device", "cpu", "--config", "tiny", "--variants", "eager16-b2",
                      "--steps", "1", "--out", str(out))
    check_ok(proc)
    res = json.loads(out.read_text())
    check_machine(res["machine"])
    r = res["eager16-b2"]
    assert r["images_per_s"] > 0 and r["finite_loss"] and r["batch"] == 2


def test_profile_train_rejects_unknown_variant(tmp_path):
    out = tmp_path / "p.json"
    proc = run_script("profile_train.py", "--device", "cpu", "--config", "tiny", "--variants", "fast-b2-turbo",
                      "--steps", "1", "--out", str(out), timeout=120)
    assert proc.returncode != 0 and "turbo" in proc.stderr + proc.stdout


def test_profile_edit_tiny_cpu(tmp_path):
    out = tmp_path / "e.json"
    proc = run_script("profile_edit.py", "--device", "cpu", "--config", "tiny", "--variants", "b2-natgn",
                      "--steps", "2", "--repeat", "1", "--out", str(out))
    check_ok(proc)
    res = json.loads(out.read_text())
    r = res["b2-natgn"]
    assert r["edits_per_s"] > 0 and r["ms_per_forward"] > 0 and r["batch"] == 2
    assert res["unet_gflop_per_image"] > 0 and len(res["conv_levels"]) >= 1
    assert res["groupnorm_silu"]["by_channels"]["ms"] > 0


def test_bench_diffusion_quick_cpu(tmp_path):
    out = tmp_path / "d.json"
    proc = run_script("bench_diffusion.py", "--device", "cpu", "--config", "tiny", "--quick",
                      "--skip", "train", "--edit-cases", "eager", "--out", str(out))
    check_ok(proc)
    res = json.loads(out.read_text())
    check_machine(res["machine"])
    assert res["config"] == "tiny" and res["flops"]["unet_forward_gflop"] > 0
    assert not any(k.startswith("train_") for k in res)  # --skip train
    assert res["edit_eager-fp32"]["batch"] == 1 and res["edit_eager-fp32"]["s"] > 0


def test_bench_video_run_and_baseline_on_the_same_held_out_frames(tmp_path):
    """bench_video.py run (the preset's cosine schedule sized to the budget, every 2nd held-out
    render brought back) and baseline (DiffusionRig inverting those frames only) on tiny data."""
    import shutil

    from portraitrig.methods import video
    from portraitrig.methods.video.data import sidecar_path

    d = tmp_path / "d"
    d.mkdir()
    cache = video.tiny_data(d, n=12)
    shutil.move(cache, d / "target_32.safetensors")
    shutil.move(sidecar_path(cache), sidecar_path(d / "target_32.safetensors"))
    shutil.copy(d / "tiny_target.mp4", d / "target.mp4")
    # the target's own rig drives it (a driver fitted on target.mp4): the reenactments run too
    from portraitrig.methods.video.data import VideoData

    own = VideoData.load(d / "target_32.safetensors").params
    own.replace(sources=[f"{d / 'target.mp4'}#frame={i}" for i in range(len(own))]).save(
        d / "driver.safetensors", meta={"fps": 25.0})
    out = tmp_path / "o"
    check_ok(run_script("bench_video.py", "run", "--dir", str(d), "--out", str(out), "--minutes", "0.03", "--size", "32",
                        "--preset", "tiny", "--no-fps", "--every", "2", "--device", "cpu",
                        "--set", "train.schedule=cosine", "--set", "train.batch_size=2",
                        "--set", "adversarial=0.05", "--set", "adv_start=0",   # with the critic from the start
                        "--set", "model.retrieve=4"))                            # and a retrieval bank
    res = json.loads((out / "video.json").read_text())
    assert res["config"]["adversarial"] == 0.05
    held = res["frames_heldout"]
    assert held == 2 and res["heldout_saved_index"] == [0]
    assert res["steps_per_s"] > 0 and res["config"]["train"]["steps"] >= 100      # sized to the budget
    assert np.load(out / "heldout_pred.npy").shape == (1, 32, 32, 3)
    assert res["heldout_crop"]["psnr"] > 0
    # the whole frame with the whole crop pasted, and with the person alone pasted as `reenact --self` does
    whole, person = res["heldout_full_frame"], res["heldout_full_frame_person_paste"]
    assert whole["psnr"] > 0 and person["psnr"] > 0 and person != whole
    z = np.load(out / "relit.npz")     # 3 lights at each exposure, on min(16, held) frames
    assert sorted(set(z["exposure"].tolist())) == [0.5, 1.0] and z["pred"].shape == (12, 32, 32, 3)
    assert z["light"].shape == (12, 9, 3) and (z["name"][:2] == "left").all()
    # the README picture of the reenactments: driver | target | result | relit result
    assert res["reenact"]["frames"] == 12 and "error" not in res["reenact_orbit"]
    # the render rate of a preset's setting, untrained (no run needed)
    check_ok(run_script("bench_video.py", "fps", "--dir", str(d), "--out", str(tmp_path / "f"), "--untrained",
                        "--preset", "tiny", "--size", "32", "--fps-frames", "3", "--device", "cpu",
                        "--set", "model.still_body=0", "--set", "model.retrieve=4"))   # a bank relit from the target
    f = json.loads((tmp_path / "f" / "video.json").read_text())
    assert f["untrained"] and f["overrides"] == ["model.still_body=0", "model.retrieve=4"]
    assert f["fps_32"]["fps_fp32"] > 0
    check_ok(run_script("bench_video.py", "picture", "--dir", str(d), "--out", str(out), "--driver-video",
                        str(d / "target.mp4"), "--rows", "3", "--seconds", "0.2", "--size", "32"))
    from PIL import Image

    from portraitrig.io.video import video_info

    pic = np.asarray(Image.open(out / "reenact_picture.jpg"))
    info = video_info(d / "target.mp4")           # four panels of the target video's aspect
    assert pic.shape[0] == 3 * 192 and pic.shape[1] == 4 * round(192 * info.width / info.height)
    assert video_info(out / "reenact_picture.mp4").frame_count >= 1
    check_ok(run_script("bench_video.py", "baseline", "--dir", str(d), "--out", str(out / "baseline"),
                        "--stage1-cache", str(d / "target_32.safetensors"), "--minutes1", "0.02", "--minutes2", "0.02",
                        "--size", "32", "--preset1", "tiny", "--preset2", "tiny", "--steps", "2", "--every", "2",
                        "--device", "cpu"))
    base = json.loads((out / "baseline" / "baseline.json").read_text())
    assert base["heldout_index"] == [0] and np.load(out / "baseline" / "baseline_pred.npy").shape[0] == 1


MESH_VIEWS_CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, "bench")
from bench_avatar import mesh_views
from portraitrig.eval.rig import pose_error
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.render.buffers import render_buffers
m = load_default_model()
g = torch.Generator().manual_seed(0)
p = RigParams.neutral(m, 1)
p = p.replace(albedo=torch.rand(1, m.n_vertices, 3, generator=g) * 0.6 + 0.2)
b = render_buffers(p, m, size=96, names=("albedo", "mask"))
frame = (b["mask"] * b["albedo"] + (1 - b["mask"]) * 0.5)[0]
frame = (frame.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
imgs, req = mesh_views(p, frame, m, [(0.0, 0.0), (25.0, 0.0), (0.0, -12.0)], 96)
from common import vertex_colours
col = vertex_colours(p, frame, m)
err = (col - p.albedo[0]).abs().mean(-1)
inside = b["mask"][0, 0].numpy() > 0.99
diff = np.abs(imgs[0].astype(float) - frame.astype(float)).mean(-1)[inside]
print(json.dumps({"same": float(np.median(diff)), "turn": [float(x) for x in pose_error(RigParams.cat([p] * 3), req)],
                  "shapes": [list(x.shape) for x in imgs], "moved": float(np.abs(imgs[1].astype(float) - frame).mean()),
                  "colour_err_median": float(err.median()), "colour_range": [float(col.min()), float(col.max())]}))
"""


def test_mesh_views_turns_the_rig_mesh_coloured_from_the_frame():
    """bench_avatar.mesh_views (the novel-view pose measure's floor): unturned, the mesh coloured
    from a frame rendered by the rig reproduces that frame; turned, its rig is the requested turn.
    The colours (common.vertex_colours) are the vertices' own."""
    proc = subprocess.run([sys.executable, "-c", MESH_VIEWS_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["shapes"] == [[96, 96, 3]] * 3
    assert res["same"] < 8                       # per-vertex colours resampled: close, not exact
    assert res["turn"][0] < 1e-3 and abs(res["turn"][1] - 25) < 1e-3 and abs(res["turn"][2] - 12) < 1e-3
    assert res["moved"] > 3                      # the turned view is another picture
    # common.vertex_colours: each vertex's own random colour back (a constant colour would miss by
    # ~0.15, another vertex's by ~0.2), hidden ones from their neighbours, all in [0, 1]
    assert res["colour_err_median"] < 0.1
    assert 0 <= res["colour_range"][0] and res["colour_range"][1] <= 1


UV_TEXTURE_CHECK = """
import sys, json, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "bench")
from common import render_textured, uv_texture
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
m = load_default_model()
g = torch.Generator().manual_seed(0)
truth = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(128, 128), mode="bilinear", align_corners=False)[0]
p = RigParams.neutral(m, 1)
colour, mask = render_textured(p, truth, m, 128)
frame = (((colour + (1 - mask) * 0.5)[0].permute(1, 2, 0).numpy()) * 255 + 0.5).astype(np.uint8)
tex = uv_texture(p, frame, m, 128)
again, _ = render_textured(p, tex, m, 128)
inside = mask[0, 0] > 0.99
shuffled = truth[:, torch.randperm(128, generator=g)]
print(json.dumps({"shape": list(tex.shape), "range": [float(tex.min()), float(tex.max())],
                  "again": float((again - colour)[0][:, inside].abs().mean()),
                  "other": float((render_textured(p, shuffled, m, 128)[0] - colour)[0][:, inside].abs().mean())}))
"""


def test_uv_texture_unwraps_a_frame_that_render_textured_draws_again():
    """common.uv_texture (the cross-reenactment floor's texture): a frame drawn by render_textured
    from a texture, unwrapped through the uv buffer, draws the same frame again."""
    proc = subprocess.run([sys.executable, "-c", UV_TEXTURE_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["shape"] == [3, 128, 128] and 0 <= res["range"][0] and res["range"][1] <= 1
    assert res["again"] < 0.02                   # 8-bit frame, bilinear resampling twice
    assert res["other"] > 5 * res["again"]       # another texture draws another frame


TARGET_TABLE_CHECK = """
import sys, json
sys.path.insert(0, "bench")
from bench_video import target_table
score = {"identity_same_person": 0.25,
         "self_video": {"identity_distance": 0.2, "jitter": {"stride": 4, "result": {"jitter_pct_iod": 1.3},
                                                             "real": {"jitter_pct_iod": 1.0}},
                        "ssim_by_region": {"person_rest": {"ssim": 0.81, "share_deficit": 0.5},
                                           "sharpness_person_outside_face": 0.6}, "gaze_deg": 3.0},
         "floor_expression": {"expression_vertex_pct_iod": 2.0, "gaze_deg": 6.0},
         "cross": {"expression_vertex_pct_iod": 3.2, "gaze_deg": 9.0,
                   "mesh_floor": {"expression_vertex_pct_iod": 3.0, "identity_distance_to_target": 0.28, "gaze_deg": 4.5,
                                  "jitter": {"jitter_pct_iod": 1.0}},
                   "identity_distance_to_target": 0.3, "jitter": {"jitter_pct_iod": 1.1}, "flicker": 0.1,
                   "flicker_far": 0.3},
         "real_video": {"jitter": {"jitter_pct_iod": 1.0}, "flicker": 0.2, "flicker_far": 0.2},
         "cross_nomatte": {"flicker": 0.3, "flicker_far": 0.4},
         "driver_video": {"jitter": {"jitter_pct_iod": 1.5}},
         "floor_light_rmse_scale_inv": 0.04,
         "relight_exposure_0.5": {"light_rmse_scale_inv": 0.076, "ratio_relit_light_rmse_scale_inv": 0.08,
                                  "seam_relit": 1.1, "seam_real": 1.0, "mesh_floor_light_rmse_scale_inv": 0.07,
                                  "seam_ratio_by_placement": {"inside": {"frames": 3, "ratio": 1.04},
                                                              "outside": {"frames": 1, "ratio": 1.3}}}}
video = {"heldout_full_frame": {"psnr": 27.2, "ssim": 0.89}, "heldout_full_frame_person_paste": {"psnr": 26.9, "ssim": 0.91}}
t = target_table(score, video)
print(json.dumps({r[0]: [r[1], r[3]] for r in t.rows}))
"""


def test_target_table_sets_each_figure_against_its_target():
    """bench_video.target_table: score's figures as ratios against the issue's targets, met or not."""
    proc = subprocess.run([sys.executable, "-c", TARGET_TABLE_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rows["held-out full frame PSNR (dB)"] == [27.2, "yes"]
    assert rows["held-out full frame SSIM"] == [0.89, "no"]
    assert rows["  the person pasted, as reenact does: PSNR (dB)"] == [26.9, "no"]
    assert rows["  the person pasted, as reenact does: SSIM"] == [0.91, "yes"]
    assert abs(rows["held-out jitter / the real frames' (frames 4 apart)"][0] - 1.3) < 1e-9
    assert rows["held-out jitter / the real frames' (frames 4 apart)"][1] == "no"
    assert rows["held-out crop SSIM on the person outside the face mesh"] == [0.81, "-"]
    assert rows["  the renders' sharpness there / the real frames'"] == [0.6, "-"]
    assert rows["  the textured mesh under the same requests"] == [0.28, "-"]   # its identity distance
    assert rows["  the textured mesh under the same requests / real video's"] == [1.0, "-"]
    assert abs(rows["  result / the textured mesh's"][0] - 1.1) < 1e-9
    assert rows["held-out identity distance"][1] == "yes" and rows["cross identity distance"][1] == "no"
    assert abs(rows["cross expression / real-frame floor"][0] - 1.6) < 1e-9
    assert rows["cross expression / real-frame floor"][1] == "no"
    assert rows["cross expression / textured-mesh floor"][1] == "-"
    assert rows["cross gaze error / real-frame floor"] == [1.5, "-"]       # the eyes' direction, beside
    assert rows["  the textured mesh under the same requests / floor"] == [0.75, "-"]
    assert rows["  held-out frames' gaze error / floor"] == [0.5, "-"]
    assert rows["jitter / real video's"][1] == "yes" and abs(rows["flicker / real video's"][0] - 0.5) < 1e-9
    assert rows["  the driver video's own / real video's"] == [1.5, "-"]
    far = rows["  20 px further from the person"]
    assert abs(far[0] - 1.5) < 1e-9 and far[1] == "-"
    assert abs(rows["  pasted without the matte"][0] - 1.5) < 1e-9      # the same model's reenactment
    assert abs(rows["  without the matte, 20 px further"][0] - 2.0) < 1e-9
    assert abs(rows["relit light / floor (half exposure)"][0] - 1.9) < 1e-9
    assert rows["relit light / floor (half exposure)"][1] == "yes"
    assert rows["seam / real frames' (half exposure)"][1] == "no"
    assert rows["  on frames inside the training placement"] == [1.04, "-"]
    assert abs(rows["  the rig's own mesh so lit / floor (half exposure)"][0] - 1.75) < 1e-9
    assert not any(k.endswith("(own exposure)") for k in rows)   # no own-exposure relit frames scored


SOURCE_VIDEO_CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, "bench")
from pathlib import Path
from bench_video import central_square, source_video
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
d = Path(sys.argv[1])
(d / "clip.mp4").write_bytes(b"not looked at")
p = RigParams.neutral(load_default_model(), 2)
p.sources = [f"{d / 'clip.mp4'}#frame={i}" for i in range(2)]
p.save(d / "here.safetensors")
p.sources = [f"{d / 'gone.mp4'}#frame={i}" for i in range(2)]
p.save(d / "gone.safetensors")
p.sources = ["photo.jpg", "photo2.jpg"]
p.save(d / "photos.safetensors")
img = np.zeros((60, 100, 3), np.uint8); img[:, 20:80] = 200       # the central 60x60 square is bright
sq = central_square(img, 30)
print(json.dumps({"here": str(source_video(d / "here.safetensors")), "gone": source_video(d / "gone.safetensors"),
                  "photos": source_video(d / "photos.safetensors"), "none": source_video(d / "no.safetensors"),
                  "shape": list(sq.shape), "min": int(sq.min())}))
"""


def test_source_video_and_central_square(tmp_path):
    """bench_video.source_video: the video a rig file was fitted from, only when it is on this
    machine (not for photos, a missing video or a missing file); central_square: the image's
    central square resized."""
    proc = subprocess.run([sys.executable, "-c", SOURCE_VIDEO_CHECK, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["here"] == str(tmp_path / "clip.mp4")
    assert got["gone"] is None and got["photos"] is None and got["none"] is None
    assert got["shape"] == [30, 30, 3] and got["min"] == 200


BACKGROUND_MASK_CHECK = """
import sys, json, types, torch
sys.path.insert(0, "bench")
from bench_video import background_mask
masks = torch.zeros(3, 1, 64, 64, dtype=torch.uint8)
masks[0, 0, 20:40, 20:30] = 255
masks[2, 0, 20:40, 30:40] = 255                    # the person's reach over the frames: x 20..39, y 20..39
data = types.SimpleNamespace(masks=masks)
near, far = background_mask(data), background_mask(data, 5)
print(json.dumps({"near": [bool(near[30, 30]), bool(near[30, 16]), bool(near[30, 15]), bool(near[30, 44])],
                  "far": [bool(far[30, 15]), bool(far[30, 11]), bool(far[30, 10])], "nested": bool((far <= near).all())}))
"""


def test_background_mask_keeps_its_margin_from_every_frames_person():
    """bench_video.background_mask: the still background is what no training frame's person mask
    reaches, 4 px from it (flicker is measured there); a margin keeps it that much further."""
    proc = subprocess.run([sys.executable, "-c", BACKGROUND_MASK_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["near"] == [False, False, True, True]    # inside; 4 px left of x=20 (x 16..19 excluded); 5 px; right
    assert got["far"] == [False, False, True] and got["nested"]


PLACEMENT_CHECK = """
import sys, json, math, numpy as np, torch
sys.path.insert(0, "bench")
from bench_video import by_placement, outside_training_placement
from portraitrig.edits import move_in_image
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
m = load_default_model()
train = RigParams.neutral(m, 3).replace(translation=torch.tensor([[-0.05, 0.1], [0.0, 0.15], [0.05, 0.2]]))
train = move_in_image(train, torch.stack([torch.eye(2), torch.tensor([[math.cos(0.1), -math.sin(0.1)],
                                                                      [math.sin(0.1), math.cos(0.1)]]), torch.eye(2)]),
                      torch.zeros(2))
base = train[1]
held = RigParams.cat([base, base.replace(translation=base.translation + torch.tensor([[-0.2, 0.0]])),
                      move_in_image(base, 0.95 * torch.tensor([[math.cos(0.3), -math.sin(0.3)],
                                                               [math.sin(0.3), math.cos(0.3)]]), torch.zeros(2)),
                      base.replace(scale=base.scale * 1.3)])
out = outside_training_placement(train, held)
real = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
pred = real.copy()
pred[1:] = 255 - pred[1:]
print(json.dumps({"outside": out.tolist(), "groups": by_placement(pred, real, out)}))
"""


def test_held_out_frames_outside_the_training_placement_are_scored_apart():
    """bench_video: a held-out frame whose head is shifted, turned in the image plane or sized
    beyond every training frame's counts as outside; the PSNR is reported for both groups."""
    proc = subprocess.run([sys.executable, "-c", PLACEMENT_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["outside"] == [False, True, True, True]
    g = res["groups"]
    assert g["inside"]["frames"] == 1 and g["outside"]["frames"] == 3
    assert g["inside"]["psnr"] > 60 and g["outside"]["psnr"] < 10


RELATIVE_POSE_CHECK = """
import sys, json, math, torch
from types import SimpleNamespace
sys.path.insert(0, "bench")
from bench_avatar import relative_pose
from portraitrig.edits import rotate_head
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
m = load_default_model()
p = RigParams.neutral(m, 1)
fit = lambda q: SimpleNamespace(params=q)
a = [fit(rotate_head(p, 22.0, 0.0)), fit(rotate_head(p, 0.0, -10.0)), None, fit(p)]
b = [fit(rotate_head(p, 25.0, 0.0)), fit(rotate_head(p, 0.0, -10.0)), fit(p), None]
print(json.dumps(relative_pose(a, b)))
"""


def test_relative_pose_compares_two_refits_view_by_view():
    """bench_avatar.relative_pose: the angle between two re-fits of each view, None where a fit failed."""
    proc = subprocess.run([sys.executable, "-c", RELATIVE_POSE_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(got[0] - 3.0) < 0.05 and got[1] < 0.05 and got[2] is None and got[3] is None


REPLAY_ORACLE_CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, "bench")
from common import mask_edge_band, replay_oracle
g = torch.Generator().manual_seed(0)
train = torch.randint(0, 256, (6, 16, 16, 3), generator=g, dtype=torch.uint8)
held = train[[2, 4]].clone()
noise = torch.randint(-8, 9, held[1].shape, generator=g)
held[1] = (held[1].int() + noise).clamp(0, 255).to(torch.uint8)     # frame 4 with noise: PSNR ~ 31 dB
masks = np.zeros((2, 16, 16), np.float32); masks[:, 4:12, 4:12] = 1
one = replay_oracle(train, held[:1], masks[:1])
two = replay_oracle(train, held[1:], masks[1:] * 255)
m = np.zeros((20, 20), bool); m[5:15, 5:15] = True
band = mask_edge_band(m, 2)
print(json.dumps({"exact": one["psnr"], "exact_masked": one["psnr_masked"], "noisy": two["psnr"],
                  "noisy_masked": two["psnr_masked"], "n": one["training_frames"],
                  "band": int(band.sum()), "corner_in": bool(band[5, 5]), "centre_in": bool(band[10, 10]),
                  "far_in": bool(band[0, 0])}))
"""


def test_replay_oracle_and_mask_edge_band():
    """common.replay_oracle finds a held-out frame's exact copy among the training frames (PSNR at
    the clamp) and scores a noisy copy at the noise's PSNR, with a mask in [0, 1] or 0..255;
    common.mask_edge_band marks the pixels within px of a mask's edge on both sides, not its
    inside or far outside."""
    proc = subprocess.run([sys.executable, "-c", REPLAY_ORACLE_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["exact"] > 100 and got["exact_masked"] > 100 and got["n"] == 6
    # uniform noise in -8..8 (variance 24): 10 log10(255^2 / 24) = 34.3 dB before clamping at 0 / 255
    assert 31 < got["noisy"] < 36 and 31 < got["noisy_masked"] < 37
    # a 10x10 square, band 2 px each side: 14x14 - 6x6 pixels
    assert got["band"] == 14 * 14 - 6 * 6 and got["corner_in"] and not got["centre_in"] and not got["far_in"]


RIG_NEAREST_CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, "bench")
from common import replay_rig_nearest
from portraitrig.edits import rotate_head
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
fm = load_default_model()
p = RigParams.neutral(fm, 1)
train_p = RigParams.cat([rotate_head(p, float(a), 0.0) for a in (-20, -10, 0, 10, 20)])
held_p = RigParams.cat([rotate_head(p, 11.0, 0.0), rotate_head(p, -19.0, 0.0)])   # nearest: 10 and -20 deg
rng = np.random.default_rng(0)
train = rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8)
held = train[[3, 0]].copy()
held[1, :8] = 255 - held[1, :8]                        # half of the second frame changed
inside = np.zeros((16, 16), bool); inside[8:] = True   # ... outside the video frame
got = replay_rig_nearest(train, held, train_p, held_p, fm, inside)
swapped = replay_rig_nearest(train, held[::-1].copy(), train_p, held_p, fm)
print(json.dumps({**got, "swapped": swapped["psnr"]}))
"""


def test_replay_rig_nearest_replays_the_training_frame_of_the_nearest_rig():
    """common.replay_rig_nearest: each held-out frame replayed by the training frame whose head
    pose is nearest (no answer in hand): an exact copy scores at the clamp, and in the frame's
    part ``inside`` a frame changed only outside it does too; the wrong pairing scores low."""
    proc = subprocess.run([sys.executable, "-c", RIG_NEAREST_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["frames"] == 2 and got["training_frames"] == 5
    assert got["psnr_in_frame"] == 120 and got["psnr"] < 70 and got["swapped"] < 15   # (120 + ~8) / 2
    assert 0 < got["ssim"] < 1


SSIM_REGION_CHECK = """
import sys, json, numpy as np
sys.path.insert(0, "bench")
from common import ssim_by_region
rng = np.random.default_rng(0)
real = rng.integers(30, 226, (2, 96, 96, 3)).astype(np.uint8)          # fine texture everywhere
person = np.zeros((2, 96, 96)); person[:, 16:80, 16:80] = 1
face = np.zeros((2, 96, 96), bool); face[:, 36:60, 36:60] = True
gen = real.copy()                                                       # the hair blurred: the person
k = np.ones(5) / 5                                                      # outside the face mesh
blur = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 2, real.astype(float))
rest = (person > 0.5) & ~face
gen[rest] = blur[rest].round().astype(np.uint8)
same = ssim_by_region(real, real, person, face)
got = ssim_by_region(gen, real, person, face)
left = ssim_by_region(gen, real, person, face, inside=np.arange(96)[None, :].repeat(96, 0) < 30)   # no face there
print(json.dumps({"same": same, "got": got, "left": left}))
"""


def test_ssim_by_region_finds_where_the_render_is_blurred():
    """common.ssim_by_region: identical frames lose nothing and are as sharp as the real ones; a
    render blurred on the person outside the face mesh loses its SSIM there (the outline band and
    the rest of the person), nothing inside the face mesh, and reads as blurrier; ``inside`` counts
    only its pixels."""
    proc = subprocess.run([sys.executable, "-c", SSIM_REGION_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    same, blur, left = got["same"], got["got"], got["left"]
    assert same["ssim"] > 0.999 and same["sharpness_person_outside_face"] == 1.0
    assert all(same[k]["share_deficit"] == 0.0 for k in ("face_mesh", "outline_band", "person_rest", "background"))
    assert blur["ssim"] < 0.9 and blur["sharpness_person_outside_face"] < 0.5
    assert blur["face_mesh"]["ssim"] > 0.9 and blur["person_rest"]["ssim"] < 0.6 and blur["background"]["ssim"] > 0.99
    assert blur["outline_band"]["share_deficit"] + blur["person_rest"]["share_deficit"] > 0.9
    assert abs(sum(blur[k]["share_pixels"] for k in ("face_mesh", "outline_band", "person_rest", "background")) - 1) < 0.01
    assert left["face_mesh"]["share_pixels"] == 0 and left["face_mesh"]["ssim"] is None


BLACK_BG_CHECK = """
import sys, json, numpy as np
sys.path.insert(0, "bench")
from bench_avatar import black_background_metrics
from portraitrig.eval.image import psnr
rng = np.random.default_rng(0)
ref = rng.integers(40, 216, (32, 32, 3)).astype(np.uint8)
mask = np.zeros((32, 32)); mask[8:24, 4:28] = 1                       # the person: 3/8 of the image
exact = black_background_metrics((ref * mask[..., None]).astype(np.uint8), ref, mask)
noisy = (ref.astype(int) + rng.integers(-8, 9, ref.shape)).clip(0, 255).astype(np.uint8)
gen = (noisy * mask[..., None]).astype(np.uint8)                       # the error only on the person
got = black_background_metrics(gen, ref, mask)
spill = gen.copy(); spill[:8] = 128                                    # a render that leaks past the mask
print(json.dumps({"exact": exact["psnr_black_bg"], "exact_ssim": exact["ssim_black_bg"],
                  "share": got["person_share"], "black": got["psnr_black_bg"],
                  "masked": psnr(noisy, ref, mask), "spill": black_background_metrics(spill, ref, mask)["psnr_black_bg"]}))
"""


def test_black_background_metrics():
    """bench_avatar.black_background_metrics (the anchors' protocol): an exact render scores at the
    clamp; with the error only on the person, the figure is the PSNR masked to the person plus
    10 log10(1 / the person's share); a render leaking colour past the mask scores lower."""
    proc = subprocess.run([sys.executable, "-c", BLACK_BG_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["exact"] == float("inf") and got["exact_ssim"] > 0.999
    assert abs(got["share"] - 0.375) < 1e-9
    assert abs(got["black"] - (got["masked"] + 10 * np.log10(1 / 0.375))) < 0.05
    assert got["spill"] < got["black"] - 3


CLIP_ORACLE_MAKE = """
import sys, dataclasses, torch
from portraitrig.neural.frames import synthetic_frames
fr = synthetic_frames(5, 32)                      # 4 training frames, the 5th held out
g = torch.Generator().manual_seed(0)
images = fr.images.clone()
masks = torch.zeros(5, 32, 32, dtype=torch.uint8); masks[:, 8:, 8:24] = 255   # reaching into the padding
valid = torch.ones(5, 32, 32, dtype=torch.bool); valid[:, 28:] = False     # the bottom rows: mirrored padding
images[4] = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8)   # new everywhere...
images[4][:28] = torch.where(masks[4][:28, :, None] > 0, images[2][:28], images[4][:28])   # ...but the person in the frame
images[4][28:, 8:24] = 255 - images[2][28:, 8:24]                       # the person in the padding differs
dataclasses.replace(fr, images=images, masks=masks, valid=valid).save(sys.argv[1])
"""


def test_clip_oracle_scores_the_best_replay_on_the_person_in_the_frame(tmp_path):
    """bench_avatar.py --oracle (no model): a held-out frame whose person, in the video frame, is a
    training frame's copy scores at the clamp masked to the person, though the rest of the crop and
    the person in the mirrored padding are new; the whole crop scores low; the person's and the
    frame's shares are reported and oracle.json is written."""
    frames = tmp_path / "f.safetensors"
    check_ok(subprocess.run([sys.executable, "-c", CLIP_ORACLE_MAKE, str(frames)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}))
    proc = run_script("bench_avatar.py", "--frames", str(frames), "--oracle", "--out", str(tmp_path / "o"))
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == json.loads((tmp_path / "o" / "oracle.json").read_text())
    assert got["frames"] == 1 and got["training_frames"] == 4
    assert got["psnr_masked"] > 100 and got["psnr"] < 20
    assert abs(got["in_frame_share"] - 28 / 32) < 1e-3 and abs(got["person_share"] - 20 * 16 / 1024) < 1e-3


BREAKDOWN_CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, "bench")
from bench_avatar import heldout_breakdown
from portraitrig.face.model import load_default_model
from portraitrig.neural.frames import synthetic_frames
fr = synthetic_frames(6, 32)
fr.masks[:] = 255                                               # the whole crop is the person
fm = load_default_model()
held, idx = fr.subset([4, 5]), [0, 1]
exact = [held.images[i].numpy() for i in idx]
moved = [np.roll(x, 2, axis=1) for x in exact]                  # every render 2 px to the right
got = {"exact": heldout_breakdown(exact, held, idx, fm), "moved": heldout_breakdown(moved, held, idx, fm),
       "quick": heldout_breakdown(moved, held, idx, fm, similarity=False)}
print(json.dumps(got))
"""


def test_heldout_breakdown_finds_a_misplacement_and_can_skip_the_search():
    """bench_avatar.heldout_breakdown: exact renders score at the clamp everywhere; renders moved
    2 px score lower, and the similarity search finds the move (a 2-px shift, scale 1, the figure
    back up); without the search the same figures come back, less the search's keys."""
    proc = subprocess.run([sys.executable, "-c", BREAKDOWN_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["exact"]["psnr_masked"] >= 99 and got["exact"]["psnr_face_mesh"] >= 99
    moved, quick = got["moved"], got["quick"]
    assert moved["psnr_masked"] < 40
    assert moved["psnr_masked_best_similarity"] > moved["psnr_masked"] + 3
    assert moved["best_similarity_mean_shift_px"] == 2.0 and moved["best_similarity_mean_scale"] == 1.0
    assert "psnr_masked_best_similarity" not in quick and "best_similarity_mean_scale" not in quick
    assert quick == {k: v for k, v in moved.items() if k in quick} and len(quick) == len(moved) - 3


CONDITION_RANGE_CHECK = """
import sys, json, numpy as np, torch
sys.path.insert(0, "bench")
from common import by_condition_range
from portraitrig.face.model import load_default_model
from portraitrig.neural.frames import synthetic_frames
fr = synthetic_frames(6, 32)
train, test = fr.params[[0, 1, 2, 3]], fr.params[[1, 2]]
test = test.replace(expression=test.expression.clone())
j = int(train.expression.std(0).argmax())                  # a coefficient the training frames vary
test.expression[1, j] = train.expression[:, j].max() + 3 * train.expression[:, j].std()   # frame 2: beyond
real = fr.images[[1, 2]].numpy()
gen = real.copy()
gen[1] = np.clip(gen[1].astype(int) + 16, 0, 255).astype(np.uint8)    # only the frame beyond is off
print(json.dumps(by_condition_range(gen, real, test, train, load_default_model())))
"""


def test_by_condition_range_splits_frames_inside_and_beyond_the_training_range():
    """common.by_condition_range: a frame whose condition lies inside the training frames' range
    and one beyond it (3 training SDs past the largest value of one coefficient) are scored apart
    inside the face mesh, each with its own error."""
    proc = subprocess.run([sys.executable, "-c", CONDITION_RANGE_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["frames_inside"] == 1 and got["frames_beyond"] == 1
    assert abs(got["beyond_mean_excess_sd"] - 3.0) < 1e-3
    assert got["psnr_face_mesh_inside"] > 100 and 23 < got["psnr_face_mesh_beyond"] < 24.5   # 16 levels: 24.0 dB


def test_profile_video_step_measures_each_variant_on_cpu(tmp_path):
    """The training-step profile runs each variant's steps of the real Trainer and reports them."""
    import shutil

    from portraitrig.methods import video
    from portraitrig.methods.video.data import sidecar_path

    cache = video.tiny_data(tmp_path, n=8)
    shutil.move(cache, tmp_path / "target_32.safetensors")
    shutil.move(sidecar_path(cache), sidecar_path(tmp_path / "target_32.safetensors"))
    out = tmp_path / "p.json"
    check_ok(run_script("profile_video_step.py", "--dir", str(tmp_path), "--size", "32", "--preset", "tiny",
                        "--device", "cpu", "--steps", "2", "--variants", "plain=-;moved=move_augment=1.0,train.batch_size=3",
                        "--out", str(out)))
    res = json.loads(out.read_text())
    check_machine(res["machine"])
    assert set(res["variants"]) == {"plain", "moved"}
    moved = res["variants"]["moved"]
    assert moved["batch"] == 3 and moved["settings"] == {"move_augment": "1.0", "train.batch_size": "3"}
    assert all(v["steps_per_s"] > 0 and v["first_step_s"] >= 0 for v in res["variants"].values())


RELIT_MESH_FLOOR_CHECK = """
import sys, json, numpy as np, torch
from types import SimpleNamespace
sys.path.insert(0, "bench")
from bench_video import relit_mesh_floor
from portraitrig.face.model import load_default_model
from portraitrig.face.params import RigParams
from portraitrig.fit.photometric import fit_appearance
from portraitrig.render.buffers import render_buffers
from portraitrig.render.portrait import portrait_shading
m = load_default_model()
g = torch.Generator().manual_seed(0)
p = RigParams.neutral(m, 2)
p = p.replace(albedo=torch.rand(1, m.n_vertices, 3, generator=g).expand(2, -1, -1) * 0.3 + 0.4)
own = torch.zeros(2, 9, 3); own[:, 0] = 1.0; own[:, 2] = 0.1
b = render_buffers(p, m, size=96, names=("albedo", "normal", "mask"))
frames = torch.where(b["mask"] > 0.5, b["albedo"] * portrait_shading(b["normal"], own),
                     torch.full_like(b["albedo"], 0.5))
frames = (frames.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
want = own.clone() * 0.7; want[:, 1] = torch.tensor([0.3, -0.3])[:, None]    # side lights, none clipped
seen = []
def fit_all(images):   # a judge that knows the geometry: the light alone, solved photometrically
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    seen.append(x)
    q = fit_appearance(x, p.replace(light=own), m)
    return [SimpleNamespace(params=q[i:i + 1]) for i in range(len(images))]
res = relit_mesh_floor(p, frames, want, m, fit_all, 96)
d = (seen[0] - seen[1]).abs().amax(1)
print(json.dumps({**res, "changed": float((d > 0.02).float().mean()),
                  "outside_same": float((seen[0] - torch.from_numpy(frames).permute(0, 3, 1, 2) / 255)
                                        [:, :, 0:4, 0:4].abs().max())}))
"""


def test_relit_mesh_floor_redraws_the_mesh_under_the_requested_light():
    """bench_video.relit_mesh_floor: the frames' face mesh redrawn Lambertian under the requested
    lights (and under its own solved light), the rest of the frame kept; a judge that re-fits the
    light on those images finds the requested lights back (a small error), and the own-light
    images differ from the requested-light ones only on the mesh."""
    proc = subprocess.run([sys.executable, "-c", RELIT_MESH_FLOOR_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    check_ok(proc)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["requested"] < 0.05 and res["own"] < 0.05, res
    assert res["changed"] > 0.05 and res["outside_same"] < 1e-6, res
