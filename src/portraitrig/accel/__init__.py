"""portraitrig.accel: every GPU-specific speed-up in one place, opt-in or scoped.

inductor (torch.compile options, the channels-last concatenation pass, ``compile_module``),
norms (GroupNorm from per-channel statistics under compile), backends (TF32 / cuDNN autotuning
as a scoped context), cudagraph (whole-function CUDA graphs). The plain PyTorch path is the
reference; tests compare each fast path with it. See docs/diffusion_performance.md.
"""
