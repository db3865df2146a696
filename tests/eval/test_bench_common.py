"""bench/common.py: the shared benchmark helpers (owned by the eval helper)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
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
    from portraitrig.methods.diffusionrig.config import preset

    return preset("tiny").unet.channel_mult


def test_profile_train_natgn_flag_is_restored(tmp_path):
    pt = pytest.importorskip("profile_train")
    from portraitrig.methods.diffusionrig.model import ChannelStatsGroupNorm

    out = tmp_path / "p.json"
    assert pt.main(["--device", "cpu", "--config", "tiny", "--variants", "fast-b2-natgn", "--steps", "1",
                    "--out", str(out)]) == 0
    assert json.loads(out.read_text())["fast-b2-natgn"]["finite_loss"]
    assert ChannelStatsGroupNorm.by_channels is True  # the variant's switch does not leak


def test_layout_audit_finds_nchw_activations_graph_by_graph(tmp_path, capsys):
    la = pytest.importorskip("layout_audit")
    log = tmp_path / "code.log"
    log.write_text(
        "V1121 x] [__output_code] # AOT ID: ['0_inference']\n"
        "    buf1 = empty_strided_cuda((16, 256, 64, 64), (1048576, 1, 16384, 256), torch.bfloat16)\n"
        "    buf2 = empty_strided_cuda((16, 384, 64, 64), (1572864, 4096, 64, 1), torch.bfloat16)\n"
        "    buf3 = empty_strided_cuda((16, 128, 1, 1), (128, 1, 1, 1), torch.float32)\n"
        "V1121 x] [__output_code] # AOT ID: ['1_inference']\n"
        "    buf4 = empty_strided_cpu((2, 8, 4, 4), (128, 1, 32, 8), torch.float32)\n")
    out = tmp_path / "a.json"
    assert la.main([str(log), "--json", str(out)]) == 0
    graphs = json.loads(out.read_text())
    assert [g["allocations_4d"] for g in graphs] == [3, 1]
    assert graphs[0]["nchw"] == [{"buffer": "buf2", "shape": [16, 384, 64, 64], "dtype": "bfloat16"}]
    assert graphs[1]["nchw"] == []
    assert "graph 0: 3 4-D allocations, 1 NCHW" in capsys.readouterr().out
    assert la.main([str(tmp_path / "missing.log")]) == 2
