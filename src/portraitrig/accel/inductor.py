"""Inductor (torch.compile) options for the project's convolutional networks.

Nothing here changes global state: options are passed to ``torch.compile`` per call.
:func:`compile_module` is the one way the project compiles a network (training and inference
alike): it swaps GroupNorm for its compile-friendly form (:mod:`portraitrig.accel.norms`, same
parameters, eager calls unchanged) and compiles with :func:`inductor_options`.
"""
from __future__ import annotations

import torch
from torch import nn

# torch.compile modes as Inductor options (torch.compile takes a mode or options, not both)
MODE_OPTIONS = {"default": {}, "reduce-overhead": {"triton.cudagraphs": True},
                "max-autotune-no-cudagraphs": {"max_autotune": True},
                "max-autotune": {"max_autotune": True, "triton.cudagraphs": True}}


def inductor_options(channels_last: bool = True) -> dict:
    """torch.compile (Inductor) options for the denoiser, training and editing alike.

    1x1 convs (attention projections, skips) as matmuls. Layout optimization: Inductor keeps its
    own buffers channels-last only under it, and skips it for graphs with a conv of in_channels
    >= 2 * out_channels (every UNet decoder conv on a skip concatenation). Without it the fused
    GroupNorm/SiLU kernels write NCHW and cuDNN copies each activation back to NHWC: 130 copies,
    a quarter of a training step on an H100; forced, training went from 120.5 to 149 img/s
    (bench/profile_train.py). Channels-last concatenations stay channels-last
    (:func:`channels_last_cat_pass`)."""
    opts = {"conv_1x1_as_mm": True, "force_layout_optimization": channels_last}
    if channels_last:
        opts["post_grad_custom_post_pass"] = channels_last_cat_pass()
    return opts


def channels_last_cat_pass():
    """An Inductor post-grad pass: every 4-D channels-last concatenation is realized with its
    traced (channels-last) strides wherever Inductor materializes it.

    Inductor 2.11 lowers the UNet decoder's skip concatenations as "pointwise cats" and, as each
    has several users (GroupNorm statistics, the normalisation, the 1x1 shortcut), realizes them
    later with a default NCHW layout: the normalisation then read them transposed and the shortcut
    matmul copied them back (bench/layout_audit.py lists such buffers). With the pass, a batch-16
    edit forward on an H100 went from 28.7 to 25.4 ms, and a training step (with
    :class:`ChannelStatsGroupNorm`) from 149 to 170 img/s (bench/profile_edit.py,
    bench/profile_train.py). Lowering the concatenations as ConcatKernels instead
    (``max_pointwise_cat_inputs=1``) left them NCHW (measured: 28.6 ms)."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class ChannelsLastCat(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            for n in graph.find_nodes(op="call_function", target=torch.ops.aten.cat.default):
                v = n.meta.get("val")
                if (isinstance(v, torch.Tensor) and v.dim() == 4 and not v.is_contiguous()
                        and v.is_contiguous(memory_format=torch.channels_last)):
                    n.meta["inductor_realize_to_strides"] = True

        def uuid(self) -> str:  # Inductor's cache key for the pass: bump it when the pass changes
            return "portraitrig-channels-last-cat-1"

    return ChannelsLastCat()


def compile_options(channels_last: bool = True, mode: str | None = None) -> dict:
    """:func:`inductor_options` plus a compile ``mode``'s options."""
    if (mode or "default") not in MODE_OPTIONS:
        raise ValueError(f"unknown compile mode {mode!r}; choose from {', '.join(MODE_OPTIONS)}")
    return {**inductor_options(channels_last), **MODE_OPTIONS[mode or "default"]}


def compile_module(fn, channels_last: bool = True, mode: str | None = None, modules: tuple = (), **kw):
    """``torch.compile(fn)`` with the project's options. ``modules``: networks inside ``fn``
    whose GroupNorms take the per-channel-statistics form under compile."""
    from portraitrig.accel.norms import use_channel_stats_group_norm

    for m in (fn, *modules):
        if isinstance(m, nn.Module):
            use_channel_stats_group_norm(m)
    return torch.compile(fn, options=compile_options(channels_last, mode), **kw)


__all__ = ["MODE_OPTIONS", "inductor_options", "channels_last_cat_pass", "compile_options", "compile_module"]
