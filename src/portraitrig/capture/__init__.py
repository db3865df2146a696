"""portraitrig.capture"""
