"""gpusleuth.engine"""
