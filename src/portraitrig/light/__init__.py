"""portraitrig.light"""
