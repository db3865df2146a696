"""portraitrig.methods.diffusionrig: the DiffusionRig renderer.

config (presets), model (UNet + appearance encoder), data (the training cache), sampling
(schedules, DDIM sampling / inversion), engine (whole-loop CUDA graphs), train (stage 1 / 2),
renderer (editing photos), cli (``portraitrig prepare | train | edit``).
"""
