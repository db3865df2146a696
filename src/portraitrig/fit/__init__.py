"""portraitrig.fit"""
