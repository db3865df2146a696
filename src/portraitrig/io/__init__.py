"""portraitrig.io"""
