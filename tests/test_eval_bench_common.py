"""bench/common.py: the shared benchmark helpers (owned by the eval helper)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
common = pytest.importorskip("common")


def test_table_render_and_records():
    t = common.Table("case", "ms", title="T")
    t.add("a", 1.23456)
    t.add("long name", float("nan"))
    lines = t.render().splitlines()
    assert lines[0] == "T" and lines[1].startswith("case") and set(lines[2]) <= {"-", " "}
    assert "1.235" in lines[3] and lines[4].rstrip().endswith("nan")
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    assert t.records() == [{"case": "a", "ms": 1.23456}, {"case": "long name", "ms": t.rows[1][1]}]
    with pytest.raises(ValueError):
        t.add("only one")


def test_timeit_and_machine_info(tmp_path):
    calls = []
    r = common.timeit(lambda: calls.append(1), repeat=3, warmup=2, number=4)
    assert len(calls) == 2 + 3 * 4 and r["min_s"] <= r["median_s"] and r["cpu_median_s"] >= 0
    info = common.machine_info()
    assert info["cpu_cores"] >= 1 and info["cpu"] and info["timestamp_utc"].endswith("+00:00")
    assert "cores" in common.describe_machine(info)
    p = common.write_json(tmp_path / "x" / "b.json", {"machine": info, "rows": [{"v": 1.5}]})
    assert json.loads(p.read_text())["rows"][0]["v"] == 1.5


def test_profile_train_kernel_categories_and_variants():
    import torch

    pt = pytest.importorskip("profile_train")
    assert pt.category("sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "conv"
    assert pt.category("triton_poi_fused__to_copy_convolution_46") == "triton pointwise"
    assert pt.category("triton_red_fused_native_group_norm_47") == "triton reduction"
    assert pt.category("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>") == "copy/layout"
    assert pt.category("nvjet_sm90_tst_128x256_64x4_1x2_h_bz_coopA_bias_TNN") == "matmul"
    assert pt.category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    cpu = torch.device("cpu")
    b, tc, ind = pt.parse_variant("fast-b32-nchw-cdt", cpu)
    assert b == 32 and not tc.channels_last and not tc.compile and ind == {"coordinate_descent_tuning": True}
    b, tc, _ = pt.parse_variant("eager16-b16", cpu)
    assert b == 16 and not tc.fused_adam and tc.precision == "fp32"
    for bad in ("slow-b4", "fast", "fast-32x", "fast-b4-turbo"):
        with pytest.raises(ValueError):
            pt.parse_variant(bad, cpu)


def test_profile_train_runs_on_cpu(tmp_path):
    pt = pytest.importorskip("profile_train")
    out = tmp_path / "p.json"
    assert pt.main(["--device", "cpu", "--config", "tiny", "--variants", "fast-b2", "--steps", "1",
                    "--out", str(out)]) == 0
    rec = json.loads(out.read_text())["fast-b2"]
    assert rec["images_per_s"] > 0 and rec["finite_loss"] and rec["batch"] == 2


def test_profile_edit_variants_and_cpu_run(tmp_path):
    pe = pytest.importorskip("profile_edit")
    assert pe.parse_variant("b16") == (16, set())
    assert pe.parse_variant("b32-cdt-natgn") == (32, {"cdt", "natgn"})
    for bad in ("16", "b0", "bx", "b4-turbo"):
        with pytest.raises(ValueError):
            pe.parse_variant(bad)
    out = tmp_path / "e.json"
    assert pe.main(["--device", "cpu", "--config", "tiny", "--variants", "b2,b2-natgn", "--steps", "2",
                    "--repeat", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for v in ("b2", "b2-natgn"):
        assert res[v]["edits_per_s"] > 0 and res[v]["ms_per_forward"] > 0 and res[v]["batch"] == 2
    assert res["unet_gflop_per_image"] > 0 and len(res["conv_levels"]) == len(preset_levels())
    assert res["groupnorm_silu"]["by_channels"]["ms"] > 0


def preset_levels():
    from portraitrig.diffusion.config import preset

    return preset("tiny").unet.channel_mult
