"""portraitrig.face"""
