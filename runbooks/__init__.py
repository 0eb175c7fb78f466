"""gpusleuth.runbooks"""
