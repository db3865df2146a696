"""Inductor options: the channels-last concatenation pass and compile options."""
import pytest
import torch

from portraitrig.accel.inductor import MODE_OPTIONS, channels_last_cat_pass, compile_options, inductor_options


def test_compile_options_merge_modes():
    assert compile_options(True)["force_layout_optimization"] is True
    assert "post_grad_custom_post_pass" not in compile_options(False)
    assert compile_options(True, "max-autotune")["max_autotune"] is True
    assert set(MODE_OPTIONS) >= {"default", "reduce-overhead"}
    with pytest.raises(ValueError, match="compile mode"):
        compile_options(True, "turbo")


def test_channels_last_cat_pass_marks_only_channels_last_4d_concatenations():
    from torch._subclasses.fake_tensor import FakeTensorMode

    g = torch.fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")
    cats = [g.call_function(torch.ops.aten.cat.default, ([a, b], 1)) for _ in range(3)]
    g.output(tuple(cats))
    with FakeTensorMode():
        cats[0].meta["val"] = torch.empty(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        cats[1].meta["val"] = torch.empty(2, 8, 4, 4)  # NCHW: left alone
        cats[2].meta["val"] = torch.empty(2, 8)  # 2-D: left alone
    channels_last_cat_pass()(g)
    assert [c.meta.get("inductor_realize_to_strides", False) for c in cats] == [True, False, False]
    assert channels_last_cat_pass().uuid() == channels_last_cat_pass().uuid()  # cache key
    assert "post_grad_custom_post_pass" in inductor_options(True)
    assert "post_grad_custom_post_pass" not in inductor_options(False)
