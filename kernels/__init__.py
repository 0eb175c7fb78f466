"""gpusleuth.kernels"""
