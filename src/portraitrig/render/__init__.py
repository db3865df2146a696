"""portraitrig.render"""
