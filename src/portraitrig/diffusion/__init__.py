"""portraitrig.diffusion"""
